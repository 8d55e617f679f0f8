"""The record a rollout worker publishes once a verifier has graded one rollout."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from envfarm.errors import EnvfarmError


@dataclass
class RewardEvent:
    """One graded rollout. `group_id`/`group_size` tie the samples of one prompt together (GRPO needs
    the whole group); `payload` is what the trainer needs to learn from it (tokens, log-probs, routing),
    kept JSON-serialisable so the ledger can hold it and a restarted trainer loses nothing."""

    rollout_id: str
    task_id: str
    policy_version: int
    reward: float
    passed: bool = False
    group_id: str = ""
    group_size: int = 1
    run_id: str = ""
    domain: str = "default"
    payload: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # verifier details, failure reason, timings
    verified_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.rollout_id or len(self.rollout_id) > 64:
            raise EnvfarmError(f"rollout_id {self.rollout_id!r} must be 1-64 characters",
                               "use a random id per rollout, e.g. uuid4().hex")
        if self.group_size < 1:
            raise EnvfarmError(f"group_size={self.group_size} for rollout {self.rollout_id}", "use group_size >= 1")
        if self.policy_version < 0:
            raise EnvfarmError(f"policy_version={self.policy_version} is negative", "publish the version the rollout was sampled with")
        if not self.group_id:
            self.group_id = self.rollout_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RewardEvent":
        return cls(**raw)
