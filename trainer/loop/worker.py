"""A rollout worker (a Ray actor): holds the policy at the version it was last sent, a grading sandbox and
the stream, and lends them to the run's task family, which rolls out, grades and publishes the groups it
is given (trainer/families/). The worker knows nothing of what a task is.

The run config arrives as the typed RunConfig (pickled by Ray), not as text to parse again. A sandbox that
dies is replaced and the work retried (`in_sandbox`); what the family does when it keeps failing is
recorded on the events (RewardEvent.failure), so every rollout is accounted for.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

import ray
import torch

from envfarm.errors import SandboxError
from envfarm.sandbox.protocol import Sandbox
from envfarm.stream.events import RewardEvent
from envfarm.stream.ray_stream import publish_blocking
from envfarm.trainer.loop.config import RunConfig
from envfarm.trainer.loop.family import CallStats, GroupWork, open_family
from envfarm.trainer.loop.sandboxes import make_sandbox
from envfarm.trainer.rollout.policy import Policy
from envfarm.trainer.rollout.sampling import SamplingParams

T = TypeVar("T")


def build_policy(cfg: RunConfig) -> Policy:
    from envfarm.trainer.model import PolicyModel
    from envfarm.trainer.model.config import micro, tiny

    if cfg.policy.checkpoint:
        return Policy.from_checkpoint(cfg.policy.checkpoint)
    torch.manual_seed(cfg.train.seed)
    return Policy(PolicyModel(tiny() if cfg.policy.preset == "tiny" else micro()).eval())


class RolloutWorker:
    """Implements RolloutHost (trainer/loop/family.py) for the family it runs."""

    def __init__(self, cfg: RunConfig, index: int, run_id: str, stream: Any) -> None:
        self.cfg = cfg
        torch.set_num_threads(cfg.train.torch_threads)
        self.index, self.run_id, self.stream = index, run_id, stream
        self.policy = build_policy(cfg)
        self.version = -1
        self.family = open_family(cfg)
        self.sandbox: Sandbox | None = None
        p = cfg.policy
        self.sampling = SamplingParams(max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p)
        self.draft = None if p.draft == "none" else p.draft

    def pid(self) -> int:
        return os.getpid()

    # -- what the family borrows ----------------------------------------------------------------
    def _sandbox(self) -> Sandbox:
        """The grading sandbox, created on first use (and again after it died) by the configured backend."""
        if self.sandbox is None:
            self.sandbox = make_sandbox(self.cfg, self.index, self.run_id)
        return self.sandbox

    def _drop_sandbox(self) -> None:
        if self.sandbox is not None:
            try:
                self.sandbox.close()
            except Exception:  # noqa: BLE001 - it is already dead; gc removes leftovers by run label
                pass
            self.sandbox = None

    def in_sandbox(self, fn: Callable[[Sandbox], T]) -> tuple[T | None, str]:
        reason = ""
        for _ in range(self.cfg.rollout.grade_retries + 1):
            try:
                return fn(self._sandbox()), ""
            except SandboxError as exc:
                reason = exc.line()
                self._drop_sandbox()
        return None, reason

    def publish(self, event: RewardEvent) -> str:
        return publish_blocking(self.stream, event)

    # -- what the trainer calls -----------------------------------------------------------------
    def _sync(self, weights: list[Any], version: int) -> None:
        """Load the published weights only when the version moved (the ref is nested so Ray fetches lazily)."""
        if version != self.version:
            self.policy.model.load_state_dict(ray.get(weights[0]))
            self.policy.model.eval()
            cache = getattr(self.policy.backend, "prefix_cache", None)
            if cache is not None:  # cached KV and routing belong to the weights that computed them
                cache.clear()
            self.version = version

    def rollout(self, work: list[GroupWork], weights: list[Any], version: int) -> CallStats:
        """weights: [ObjectRef of a state dict] (nested so Ray does not fetch it unless the version changed)."""
        self._sync(weights, version)
        return self.family.rollout(self, work, version)

    def evaluate(self, weights: list[Any], version: int, samples: int) -> dict[str, Any] | None:
        self._sync(weights, version)
        return self.family.evaluate(self, samples)

    def close(self) -> None:
        self._drop_sandbox()
