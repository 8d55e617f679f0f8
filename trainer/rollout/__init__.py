"""Rollouts: the in-process engine (KV cache, sampling, MTP speculative decoding) and a remote backend."""

from envfarm.trainer.rollout.engine import RolloutEngine
from envfarm.trainer.rollout.policy import TINY_CHECKPOINT, Policy
from envfarm.trainer.rollout.remote import RemoteRolloutEngine
from envfarm.trainer.rollout.result import Completion, RolloutBatch
from envfarm.trainer.rollout.sampling import SamplingParams

__all__ = ["Policy", "TINY_CHECKPOINT", "RemoteRolloutEngine", "RolloutEngine", "RolloutBatch", "Completion", "SamplingParams"]
