"""Rollouts: the in-process engine (KV cache, sampling, MTP speculative decoding, prefix cache across turns,
continuous batching) and a remote backend."""

from envfarm.trainer.rollout.batcher import ContinuousBatcher
from envfarm.trainer.rollout.engine import RolloutEngine
from envfarm.trainer.rollout.prefix_cache import PrefixCache
from envfarm.trainer.rollout.policy import TINY_CHECKPOINT, Policy
from envfarm.trainer.rollout.remote import RemoteRolloutEngine
from envfarm.trainer.rollout.result import Completion, RolloutBatch
from envfarm.trainer.rollout.sampling import SamplingParams

__all__ = ["ContinuousBatcher", "PrefixCache", "Policy", "TINY_CHECKPOINT", "RemoteRolloutEngine", "RolloutEngine", "RolloutBatch", "Completion", "SamplingParams"]
