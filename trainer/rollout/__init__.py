"""Rollouts: the in-process engine (KV cache, sampling, MTP speculative decoding) and a remote backend."""

from trainer.rollout.engine import RolloutEngine
from trainer.rollout.result import Completion, RolloutBatch
from trainer.rollout.sampling import SamplingParams

__all__ = ["RolloutEngine", "RolloutBatch", "Completion", "SamplingParams"]
