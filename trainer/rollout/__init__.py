"""Rollouts: the in-process engine (KV cache, sampling, MTP speculative decoding) and a remote backend."""

from trainer.rollout.engine import RolloutEngine
from trainer.rollout.policy import TINY_CHECKPOINT, Policy
from trainer.rollout.remote import RemoteRolloutEngine
from trainer.rollout.result import Completion, RolloutBatch
from trainer.rollout.sampling import SamplingParams

__all__ = ["Policy", "TINY_CHECKPOINT", "RemoteRolloutEngine", "RolloutEngine", "RolloutBatch", "Completion", "SamplingParams"]
