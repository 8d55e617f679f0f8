"""The data scheduler (MiMo-V2-Flash's): per-source quotas and priorities, dynamic sampling from recent
pass rates, and partial rollouts with a staleness limit.

- Quotas: each source gets `quota` share of the groups handed out (deficit round-robin, so the mix is
  exact over time, not just in expectation); among sources with equal deficit, higher `priority` first.
- Dynamic sampling: a task whose last `window` results are all passes or all failures gives GRPO no
  signal (zero advantage), so it is skipped; every `revisit_every` picks one skipped task is tried
  again, because the policy moves and yesterday's 0% may be today's 10%.
- Partial rollouts: an unfinished long episode is parked with the policy version that started it and
  resumed later only if it is at most `max_staleness` versions old; older ones are discarded (counted).
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Generic, Hashable, TypeVar

from pydantic import BaseModel, Field

from envfarm.errors import EnvfarmError

T = TypeVar("T")


class SourceQuota(BaseModel):
    quota: float = Field(1.0, gt=0, description="share of groups from this source (normalised over sources)")
    priority: int = 0


class SchedulerConfig(BaseModel):
    sources: dict[str, SourceQuota] = Field(default_factory=dict)  # empty: every source, equal quota
    window: int = Field(8, ge=1, description="recent results per task used for its pass rate")
    min_history: int = Field(4, ge=1, description="results needed before a task may be skipped")
    revisit_every: int = Field(8, ge=1, description="every N picks, retry one skipped task")
    seed: int = 0


@dataclass
class _Task(Generic[T]):
    key: Hashable
    item: T
    source: str
    history: deque = field(default_factory=deque)


class DataScheduler(Generic[T]):
    def __init__(self, items: list[tuple[Hashable, str, T]], cfg: SchedulerConfig = SchedulerConfig()) -> None:
        """items: (key, source, task)."""
        if not items:
            raise EnvfarmError("the scheduler got no tasks", "check tasks: in the config (names, source filter)")
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.tasks: dict[Hashable, _Task[T]] = {k: _Task(k, it, s, deque(maxlen=cfg.window)) for k, s, it in items}
        present = sorted({t.source for t in self.tasks.values()})
        unknown = sorted(set(cfg.sources) - set(present))
        if unknown:
            raise EnvfarmError(f"scheduler.sources names {unknown}, but the tasks come from {present}",
                               "remove those sources or add tasks from them")
        quotas = cfg.sources or {s: SourceQuota() for s in present}
        self.sources = {s: quotas.get(s, SourceQuota()) for s in present if s in quotas}
        total = sum(q.quota for q in self.sources.values())
        self.share = {s: q.quota / total for s, q in self.sources.items()}
        self.served: dict[str, int] = defaultdict(int)
        self.picks = 0
        self.cursor: dict[str, int] = defaultdict(int)

    def pass_rate(self, key: Hashable) -> float | None:
        h = self.tasks[key].history
        return sum(h) / len(h) if h else None

    def informative(self, key: Hashable) -> bool:
        h = self.tasks[key].history
        return len(h) < self.cfg.min_history or 0 < sum(h) < len(h)

    def _next_source(self) -> str:
        total = sum(self.served.values()) + 1
        return max(self.sources, key=lambda s: (self.share[s] * total - self.served[s], self.sources[s].priority, -sorted(self.sources).index(s)))

    def next(self) -> T:
        """One task, honouring quotas; skips uninformative tasks except for periodic revisits."""
        self.picks += 1
        revisit = self.picks % self.cfg.revisit_every == 0
        for _ in range(len(self.sources)):
            source = self._next_source()
            keys = [k for k, t in self.tasks.items() if t.source == source]
            good = [k for k in keys if self.informative(k)]
            pool = good if good and not revisit else [k for k in keys if not self.informative(k)] or keys
            self.served[source] += 1
            if pool:
                key = pool[self.cursor[source] % len(pool)]
                self.cursor[source] += 1
                return self.tasks[key].item
        raise EnvfarmError("no source has tasks", "check scheduler.sources")

    def batch(self, n: int) -> list[T]:
        return [self.next() for _ in range(n)]

    def record(self, key: Hashable, passed: list[bool]) -> None:
        if key in self.tasks:
            self.tasks[key].history.extend(bool(p) for p in passed)

    def state(self) -> dict[str, Any]:
        return {"history": {str(k): list(t.history) for k, t in self.tasks.items()}, "served": dict(self.served),
                "picks": self.picks, "cursor": dict(self.cursor)}

    def load_state(self, state: dict[str, Any]) -> None:
        for k, t in self.tasks.items():
            t.history.extend(state.get("history", {}).get(str(k), []))
        self.served.update(state.get("served", {}))
        self.cursor.update(state.get("cursor", {}))
        self.picks = state.get("picks", 0)


@dataclass
class PartialRollout(Generic[T]):
    key: Hashable
    state: T  # whatever the agent loop needs to resume (messages, tokens so far)
    started_version: int


class PartialRollouts(Generic[T]):
    """Parked unfinished episodes; resumed only while at most `max_staleness` policy versions old."""

    def __init__(self, max_staleness: int) -> None:
        if max_staleness < 0:
            raise EnvfarmError(f"partial rollout max_staleness={max_staleness}", "use a value >= 0")
        self.max_staleness = max_staleness
        self.parked: list[PartialRollout[T]] = []
        self.discarded = 0

    def park(self, key: Hashable, state: T, started_version: int) -> None:
        self.parked.append(PartialRollout(key, state, started_version))

    def resumable(self, current_version: int) -> list[PartialRollout[T]]:
        keep = [p for p in self.parked if current_version - p.started_version <= self.max_staleness]
        self.discarded += len(self.parked) - len(keep)
        self.parked = []
        return keep
