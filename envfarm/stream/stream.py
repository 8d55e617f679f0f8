"""The reward stream's queue: bounded, deduplicating, group-aware, staleness-bounded, ledger-backed.

One instance is the single writer of its run's ledger. On one machine it lives in a Ray actor
(`envfarm.stream.ray_stream`); the same class runs in-process for tests and tools.

Delivery contract:
- `publish(event)` -> "accepted" | "duplicate" | raises `StreamFull`. Duplicates (same rollout id, e.g. a
  retried verification) are dropped in memory and by the ledger's unique key, so nothing counts twice.
- `StreamFull` is the back-pressure signal: when `capacity` events wait unconsumed, a worker must wait
  before starting a *new* group (members of a group already admitted are always taken, otherwise a
  half-admitted group could never complete and the trainer would starve).
- `consume(max_groups, current_version)` hands out only complete groups; groups sampled by a policy more
  than `max_staleness` versions older than `current_version` are dropped (committed as "stale", so they
  are accounted for, not lost) or down-weighted, per `stale_policy`.
- `commit(ids)` marks rewards consumed in the ledger; uncommitted consumed rewards come back through
  `recover()` (a new stream after a crash) or `requeue_uncommitted()` (the trainer restarted, the stream did not).
- At-least-once delivery, exactly-once commit: a reward consumed but never committed is handed out again
  after recovery; a reward committed is never handed out again, by this stream or any other on the same
  ledger. The ledger, not this process's memory, says what is committed: a stream that recovered a batch
  another incarnation had handed out (a Ray actor killed between consume and commit) may hold it in its
  queue when the trainer's commit lands, so `consume` asks the ledger before handing anything out.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from envfarm.errors import EnvfarmError
from envfarm.stream.events import RewardEvent
from envfarm.stream.ledger import RewardLedger


class StreamFull(EnvfarmError):
    """Back-pressure: the trainer is behind; retry the publish after a short wait."""


@dataclass
class ConsumedBatch:
    groups: list[list[RewardEvent]]
    weights: dict[str, float] = field(default_factory=dict)  # group_id -> weight (1.0 unless down-weighted)
    dropped_stale: int = 0  # events dropped (and committed) as too stale
    max_staleness_seen: int = 0

    @property
    def events(self) -> list[RewardEvent]:
        return [e for g in self.groups for e in g]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class RewardStream:
    def __init__(self, ledger: RewardLedger | None, capacity: int = 256, max_staleness: int = 2,
                 stale_policy: str = "drop", stale_decay: float = 0.5) -> None:
        if capacity < 1:
            raise EnvfarmError(f"stream capacity={capacity}", "use stream.capacity >= 1 (events waiting for the trainer)")
        if max_staleness < 0:
            raise EnvfarmError(f"max_staleness={max_staleness}", "use max_staleness >= 0 (0 = strictly on-policy)")
        if stale_policy not in ("drop", "downweight"):
            raise EnvfarmError(f"stale_policy={stale_policy!r}", "use 'drop' or 'downweight'")
        self.ledger = ledger
        self.capacity = capacity
        self.max_staleness = max_staleness
        self.stale_policy = stale_policy
        self.stale_decay = stale_decay
        self._lock = threading.Lock()
        self._groups: OrderedDict[str, list[RewardEvent]] = OrderedDict()  # admitted, unconsumed
        self._seen: set[str] = set()
        self._inflight: dict[str, RewardEvent] = {}  # consumed, not committed
        self._latencies: list[float] = []
        self.counters = {"accepted": 0, "duplicates": 0, "full": 0, "consumed": 0, "dropped_stale": 0, "committed": 0,
                         "skipped_committed": 0}  # held in the queue but found committed at hand-out: not handed out

    # -- producer side -------------------------------------------------------------------------
    def publish(self, event: RewardEvent) -> str:
        with self._lock:
            if event.rollout_id in self._seen:
                self.counters["duplicates"] += 1
                return "duplicate"
            if event.group_id not in self._groups and self._waiting() >= self.capacity:
                self.counters["full"] += 1
                raise StreamFull(f"reward stream full ({self._waiting()} events waiting, capacity {self.capacity})",
                                 "wait for the trainer to consume, or raise stream.capacity")
            if self.ledger is not None and not self.ledger.record(event):
                self._seen.add(event.rollout_id)
                self.counters["duplicates"] += 1
                return "duplicate"
            self._admit(event)
            self.counters["accepted"] += 1
            return "accepted"

    def _admit(self, event: RewardEvent) -> None:
        self._seen.add(event.rollout_id)
        self._groups.setdefault(event.group_id, []).append(event)

    def _waiting(self) -> int:
        return sum(len(g) for g in self._groups.values())

    # -- consumer side -------------------------------------------------------------------------
    def consume(self, max_groups: int, current_version: int) -> ConsumedBatch:
        """Up to `max_groups` complete groups, oldest first; stale ones dropped or down-weighted. Members the
        ledger already holds committed are never handed out again (see the delivery contract above)."""
        now = time.time()
        batch = ConsumedBatch(groups=[])
        stale_ids: list[str] = []
        with self._lock:
            ready = [gid for gid, g in self._groups.items() if len({e.rollout_id for e in g}) >= g[0].group_size]
            while ready and len(batch.groups) < max_groups:
                # Ask the ledger only about as many groups as can still be handed out; a group found wholly
                # committed (or stale) frees its slot for the next one.
                chunk, ready = ready[:max_groups - len(batch.groups)], ready[max_groups - len(batch.groups):]
                done = self._committed([e.rollout_id for gid in chunk for e in self._groups[gid]])
                for gid in chunk:
                    held = self._groups.pop(gid)
                    group = [e for e in held if e.rollout_id not in done]
                    self.counters["skipped_committed"] += len(held) - len(group)
                    if not group:
                        continue
                    age = current_version - min(e.policy_version for e in group)
                    if age > self.max_staleness and self.stale_policy == "drop":
                        stale_ids += [e.rollout_id for e in group]
                        continue
                    batch.weights[gid] = self.stale_decay ** max(0, age - self.max_staleness)
                    batch.max_staleness_seen = max(batch.max_staleness_seen, age)
                    batch.groups.append(group)
                    for e in group:
                        self._inflight[e.rollout_id] = e
                        self._latencies.append(now - e.verified_at)
            self._latencies = self._latencies[-5000:]
            self.counters["consumed"] += len(batch.events)
            batch.dropped_stale = len(stale_ids)
            self.counters["dropped_stale"] += len(stale_ids)
        if stale_ids and self.ledger is not None:
            self.ledger.commit(stale_ids, {"dropped": "stale", "trainer_version": current_version})
        return batch

    def _committed(self, rollout_ids: list[str]) -> set[str]:
        """Which of these the ledger holds committed, by whichever process committed them."""
        return self.ledger.committed(rollout_ids) if self.ledger is not None else set()

    def commit(self, rollout_ids: list[str], outcome: dict | None = None) -> int:
        """The trainer has durably used these rewards (its checkpoint is written): mark them consumed."""
        changed = self.ledger.commit(rollout_ids, outcome) if self.ledger is not None else len(rollout_ids)
        with self._lock:
            for rid in rollout_ids:
                self._inflight.pop(rid, None)
            self.counters["committed"] += changed
        return changed

    def requeue_uncommitted(self) -> int:
        """The trainer restarted but this stream lived on: hand out again what it never committed."""
        with self._lock:
            events = list(self._inflight.values())
            self._inflight.clear()
            for e in events:
                self._groups.setdefault(e.group_id, []).append(e)
            return len(events)

    def recover(self) -> int:
        """A new stream for an existing run: reload every reward the ledger holds uncommitted."""
        if self.ledger is None:
            return 0
        n = 0
        with self._lock:
            for event in self.ledger.pending():
                if event.rollout_id not in self._seen:
                    self._admit(event)
                    n += 1
        return n

    def stats(self) -> dict:
        with self._lock:
            return {**self.counters, "waiting": self._waiting(), "inflight": len(self._inflight),
                    "open_groups": len(self._groups),
                    "latency_p50_s": _percentile(self._latencies, 0.5), "latency_p95_s": _percentile(self._latencies, 0.95)}
