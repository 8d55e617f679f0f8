"""The reward record every verifier returns, so the RL loop treats test-log and web rewards alike."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reward:
    """`value` is what the policy is trained on; `passed` is the binary verdict (resolved / all checks).

    `details` explains the verdict (per-test statuses, checks, problems found in the log) so a person
    can audit a reward without re-running it; `evidence` maps a name to a file (video, report, log).
    """

    value: float
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"reward value {self.value} is outside [0, 1]")

    @classmethod
    def zero(cls, reason: str, **details: Any) -> "Reward":
        return cls(0.0, False, {"reason": reason, **details})

    @classmethod
    def tampered(cls, signals: list[str], **details: Any) -> "Reward":
        """0 for a patch aimed at the grader rather than the bug; `signals` say what gave it away.

        The reason always starts with "tampering" so the RL loop and a person can count these apart
        from honest failures (details["tampering"] lists every signal).
        """
        return cls(0.0, False, {**details, "reason": "tampering: " + "; ".join(signals[:3]), "tampering": list(signals)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, sort_keys=True)
