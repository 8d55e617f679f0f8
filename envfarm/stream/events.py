"""The record a rollout worker publishes once a verifier has graded one rollout."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from envfarm.errors import EnvfarmError

FAILURE_CLASSES = ("", "infrastructure", "task")


@dataclass
class RewardEvent:
    """One graded rollout. `group_id`/`group_size` tie the samples of one prompt together (GRPO needs
    the whole group); `payload` is what the trainer needs to learn from it (tokens, log-probs, routing),
    kept JSON-serialisable so the ledger can hold it and a restarted trainer loses nothing.

    Two facts the trainer acts on are typed fields rather than keys in `details`, so a publisher and the
    trainer cannot disagree on a spelling: `failure` (why the rollout could not be graded; such a
    rollout is accounted for but never trained on) and `turns` (a multi-turn episode: one payload per
    assistant turn, all trained with the episode's reward; empty for a single completion in `payload`)."""

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
    details: dict[str, Any] = field(default_factory=dict)  # verifier details and timings, for people
    failure: str = ""  # non-empty: the rollout could not be graded (sandbox died, ...), and why
    failure_class: str = ""  # with a failure: "infrastructure" (retry elsewhere, not the task's fault) or "task"
    turns: list[dict[str, Any]] = field(default_factory=list)  # per-turn payloads of a multi-turn episode
    verified_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.rollout_id or len(self.rollout_id) > 64:
            raise EnvfarmError(f"rollout_id {self.rollout_id!r} must be 1-64 characters",
                               "use a random id per rollout, e.g. uuid4().hex")
        if self.group_size < 1:
            raise EnvfarmError(f"group_size={self.group_size} for rollout {self.rollout_id}", "use group_size >= 1")
        if self.policy_version < 0:
            raise EnvfarmError(f"policy_version={self.policy_version} is negative", "publish the version the rollout was sampled with")
        if self.failure_class not in FAILURE_CLASSES:
            raise EnvfarmError(f"failure_class={self.failure_class!r} for rollout {self.rollout_id}",
                               f"use one of {', '.join(repr(c) for c in FAILURE_CLASSES)}")
        if not self.group_id:
            self.group_id = self.rollout_id

    @property
    def failed(self) -> bool:
        return bool(self.failure)

    @property
    def payloads(self) -> list[dict[str, Any]]:
        """What the trainer learns from: every turn of an episode, or the one completion."""
        return self.turns or [self.payload]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RewardEvent":
        raw = dict(raw)
        # Ledger rows written before these fields were typed kept them as dict keys; read those the same way.
        details, payload = dict(raw.get("details") or {}), dict(raw.get("payload") or {})
        if "failure" not in raw and details.get("failure"):
            raw["failure"] = str(details.pop("failure"))
            raw["details"] = details
        if "turns" not in raw and "turns" in payload:
            raw["turns"] = list(payload.pop("turns"))
            raw["payload"] = payload
        return cls(**raw)
