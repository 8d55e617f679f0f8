"""Environment success accounting and image quarantine, kept per fleet and written to its status.

The success rate is ready / (ready + failed) over the fleet's life, overall and per image, with the
failures broken down by class; the reference reports about 70% of environments deploying, so this is
the number an operator watches. Counters are restored from the fleet's status when a controller
starts, so a restart does not reset them (pods that became ready in the last status period before a
crash may be counted once more or not at all: accounting is exact only between restarts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from envfarm.fleet.failures import Failure


@dataclass
class FleetAccounting:
    ready_total: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    ready_by_image: Counter[str] = field(default_factory=Counter)
    failed_by_image: Counter[str] = field(default_factory=Counter)
    consecutive_permanent: Counter[str] = field(default_factory=Counter)
    quarantined: dict[str, str] = field(default_factory=dict)  # image key -> reason
    counted_ready: set[str] = field(default_factory=set)  # pod uids already counted as ready

    @property
    def failed_total(self) -> int:
        return sum(self.failures.values())

    def success_rate(self) -> float | None:
        total = self.ready_total + self.failed_total
        return self.ready_total / total if total else None

    def record_ready(self, uid: str, image: str) -> bool:
        if uid in self.counted_ready:
            return False
        self.counted_ready.add(uid)
        self.ready_total += 1
        self.ready_by_image[image] += 1
        self.consecutive_permanent[image] = 0
        return True

    def record_failure(self, image: str, failure: Failure, quarantine_after: int) -> bool:
        """Count one failed pod; return True when this failure quarantines its image."""
        self.failures[failure.cls.value] += 1
        self.failed_by_image[image] += 1
        if not failure.permanent:
            return False
        self.consecutive_permanent[image] += 1
        if image not in self.quarantined and self.consecutive_permanent[image] >= quarantine_after:
            self.quarantined[image] = f"{failure.cls.value} x{self.consecutive_permanent[image]}: {failure.message}"[:300]
            return True
        return False

    def forget_pod(self, uid: str) -> None:
        self.counted_ready.discard(uid)

    def status_fields(self) -> dict[str, Any]:
        rate = self.success_rate()
        by_image = {}
        for image in set(self.ready_by_image) | set(self.failed_by_image):
            total = self.ready_by_image[image] + self.failed_by_image[image]
            by_image[image] = f"{self.ready_by_image[image] / total:.3f}"
        return {
            "readyTotal": self.ready_total,
            "failedTotal": self.failed_total,
            "successRate": "n/a" if rate is None else f"{rate:.3f}",
            "failuresByClass": dict(self.failures),
            "successRateByImage": by_image,
            "quarantined": [{"name": k, "reason": v} for k, v in sorted(self.quarantined.items())],
            "quarantinedCount": len(self.quarantined),
        }

    @classmethod
    def from_status(cls, status: dict[str, Any] | None) -> "FleetAccounting":
        status = status or {}
        acc = cls(ready_total=int(status.get("readyTotal", 0)))
        acc.failures.update({k: int(v) for k, v in (status.get("failuresByClass") or {}).items()})
        acc.quarantined = {q["name"]: q.get("reason", "") for q in status.get("quarantined") or [] if "name" in q}
        return acc
