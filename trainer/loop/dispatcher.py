"""The rollout side of the loop, as the trainer sees it: `next_groups(n)` returns n complete graded groups
from the reward stream while keeping every rollout worker busy.

The dispatcher owns the Ray workers and their in-flight calls: a worker that returns gets its next call at
once (parked partial groups first, they are the oldest, then new groups from the data scheduler); a worker
that died is replaced and its call repeated with the same group ids, so whatever it had already published
is dropped by the stream as a duplicate and the groups still complete. Unfinished groups parked by partial
rollouts wait here between calls, bounded by the stream's staleness limit.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from rich.console import Console

from envfarm.errors import EnvfarmError
from envfarm.stream.events import RewardEvent
from envfarm.trainer.loop.config import RunConfig
from envfarm.trainer.loop.family import CallStats, GroupWork
from envfarm.trainer.loop.worker import RolloutWorker
from envfarm.trainer.scheduler import DataScheduler, PartialRollouts


MAX_CONSECUTIVE_FAILED_CALLS = 3  # per worker, in a row, before the run gives up


@dataclass
class Collected:
    """What one training step gets from the rollouts."""

    groups: list[list[RewardEvent]]
    weights: dict[str, float]  # group_id -> loss weight (stale groups may be down-weighted)
    staleness_max: int
    dropped_stale: int
    wait_s: float

    redelivered: int = 0  # rewards the stream handed out again (consumed here, not yet committed) and left out

    @property
    def events(self) -> list[RewardEvent]:
        return [e for g in self.groups for e in g]


def fresh_groups(groups: list[list[RewardEvent]], seen: set[str]) -> tuple[list[list[RewardEvent]], int]:
    """The groups with every rollout already handed to this trainer left out, and how many were.

    The stream delivers at least once: a stream actor that restarts recovers from the ledger what was consumed
    but not yet committed (the trainer commits every `train.checkpoint_every` steps), so the same rewards can
    come again. Trained once already and counted once already, they must not reach the update or the step's
    reward_mean and counts a second time; they are still committed with the step that first consumed them."""
    kept: list[list[RewardEvent]] = []
    dropped = 0
    for group in groups:
        new = [e for e in group if e.rollout_id not in seen]
        dropped += len(group) - len(new)
        if new:
            kept.append(new)
    return kept, dropped


@dataclass
class RolloutTotals:
    gen_tokens: int = 0
    gen_s: float = 0.0
    grade_s: float = 0.0
    wait_s: float = 0.0
    failed_rollouts: int = 0
    worker_restarts: int = 0
    failed_calls: int = 0  # worker calls that raised (a family bug, not one task): their groups are dropped
    resumed_groups: int = 0
    acceptance: list[float] = field(default_factory=list)
    calls: list[dict[str, float]] = field(default_factory=list)

    def add(self, s: CallStats) -> None:
        self.gen_tokens += s.tokens
        self.gen_s += s.gen_s
        self.grade_s += s.grade_s
        self.failed_rollouts += s.failed
        self.resumed_groups += s.resumed
        self.acceptance.append(s.acceptance)
        self.calls.append({"tokens": s.tokens, "gen_s": s.gen_s, "grade_s": s.grade_s, "rollouts": s.rollouts})

    @property
    def tokens_per_s(self) -> float:
        return self.gen_tokens / max(1e-9, self.gen_s)


class RolloutDispatcher:
    def __init__(self, cfg: RunConfig, run_id: str, stream: Any, scheduler: DataScheduler[Any], out_dir: Path,
                 console: Console) -> None:
        self.cfg, self.run_id, self.stream, self.scheduler = cfg, run_id, stream, scheduler
        self.out_dir, self.console = out_dir, console
        self.workers: list[Any] = []
        self.inflight: dict[Any, tuple[int, list[GroupWork]]] = {}  # call ref -> (worker index, its groups)
        self.partials: PartialRollouts[GroupWork] | None = (
            PartialRollouts(cfg.stream.max_staleness) if cfg.rollout.partial.enabled else None)
        self.totals = RolloutTotals()
        self.weights: Any = None
        self.version = 0
        self.handed_out: set[str] = set()  # every rollout id next_groups returned: none reaches the trainer twice
        self.consecutive_failures = 0

    # -- workers --------------------------------------------------------------------------------
    def start(self, state: dict[str, Any], version: int) -> None:
        """Start the workers (idle until the first next_groups) with these weights published."""
        self.publish_weights(state, version)
        self.workers = [self._new_worker(i) for i in range(self.cfg.rollout.num_workers)]
        self._write_worker_pids()

    def _new_worker(self, index: int) -> Any:
        return ray.remote(RolloutWorker).options(num_cpus=self.cfg.rollout.worker_cpus, max_restarts=0).remote(
            self.cfg, index, self.run_id, self.stream)

    def _write_worker_pids(self) -> None:
        """Operators (and the fault tests) find the rollout worker processes here."""
        pids = ray.get([w.pid.remote() for w in self.workers])
        (self.out_dir / "workers.json").write_text(json.dumps({"pids": pids, "driver": os.getpid()}))

    def publish_weights(self, state: dict[str, Any], version: int) -> None:
        """Calls from now on use these weights; a worker loads them when its next call names the new version."""
        self.weights, self.version = ray.put(state), version

    def close(self) -> None:
        for w in self.workers:
            try:
                ray.get(w.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead worker's container is removed by run label afterwards
                pass

    # -- work -----------------------------------------------------------------------------------
    def _new_work(self, n: int) -> list[GroupWork]:
        return [GroupWork(uuid.uuid4().hex[:16], t.id, self.version) for t in self.scheduler.batch(n)]

    def _next_call(self) -> list[GroupWork]:
        """Continued groups first (they are the oldest), then new ones up to groups_per_call."""
        resumed = [p.state for p in self.partials.resumable(self.version)] if self.partials is not None else []
        return resumed + self._new_work(max(0, self.cfg.rollout.groups_per_call - len(resumed))) if resumed \
            else self._new_work(self.cfg.rollout.groups_per_call)

    def _dispatch(self, i: int, work: list[GroupWork] | None = None) -> None:
        work = self._next_call() if work is None else work
        self.inflight[self.workers[i].rollout.remote(work, [self.weights], self.version)] = (i, work)

    def _harvest(self, timeout: float) -> None:
        """Account for a finished call and give its worker the next one; replace a worker that died."""
        if not self.inflight:  # nothing running (ray.wait refuses an empty list): rewards come from elsewhere
            time.sleep(timeout)
            return
        done, _ = ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        for ref in done:
            i, work = self.inflight.pop(ref)
            try:
                stats: CallStats = ray.get(ref)
            except ray.exceptions.RayActorError:  # the worker died: a new one redoes the same groups
                self.totals.worker_restarts += 1
                self.console.print(f"[yellow]rollout worker {i} died; restarting it and retrying its {len(work)} group(s)[/]")
                self.workers[i] = self._new_worker(i)
                self._write_worker_pids()
                self._dispatch(i, work)
                continue
            except ray.exceptions.RayTaskError as exc:  # the call raised: drop its groups, keep the run going
                self._call_failed(i, work, exc)
                self._dispatch(i)
                continue
            self.consecutive_failures = 0
            self.totals.add(stats)
            for parked in stats.parked:
                self.partials.park(parked.group_id, parked, parked.started_version)  # type: ignore[union-attr]
            self._dispatch(i)

    def _call_failed(self, index: int, work: list[GroupWork], exc: Exception) -> None:
        """Per-rollout failures are the family's to record (a failed rollout with its class); a whole call that
        raises is a bug in the family or the worker. Its groups never reach the stream and the scheduler picks
        tasks again; only when every worker's calls keep failing does the run stop, naming the error."""
        self.totals.failed_calls += 1
        self.consecutive_failures += 1
        cause = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1][:300]
        self.console.print(f"[yellow]rollout worker {index}'s call failed ({cause}); dropped its {len(work)} group(s)[/]")
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILED_CALLS * len(self.workers):
            raise EnvfarmError(f"the last {self.consecutive_failures} rollout calls all failed; the last with: {cause}",
                               "see the worker's error above; fix the task family or the tasks it was given")

    def next_groups(self, n: int) -> Collected:
        """Wait for n complete groups in the stream, keeping the workers busy meanwhile."""
        busy = {i for i, _ in self.inflight.values()}
        for i in range(len(self.workers)):
            if i not in busy:
                self._dispatch(i)
        t0 = time.perf_counter()
        groups: list[list[RewardEvent]] = []
        weights: dict[str, float] = {}
        staleness, dropped, redelivered = 0, 0, 0
        while len(groups) < n:
            batch = ray.get(self.stream.consume.remote(n - len(groups), self.version))
            fresh, again = fresh_groups(batch.groups, self.handed_out)
            self.handed_out.update(e.rollout_id for g in fresh for e in g)
            groups += fresh
            weights.update(batch.weights)
            staleness, dropped, redelivered = max(staleness, batch.max_staleness_seen), dropped + batch.dropped_stale, redelivered + again
            if len(groups) < n:
                self._harvest(0.2)
        wait_s = time.perf_counter() - t0
        self.totals.wait_s += wait_s
        return Collected(groups, weights, staleness, dropped, wait_s, redelivered)

    def drain(self, timeout: float = 120) -> None:
        """Let the calls in flight finish (so the end evaluation has the machine); their rewards stay in the
        ledger for a resumed run."""
        for ref in list(self.inflight):
            try:
                ray.get(ref, timeout=timeout)
            except Exception:  # noqa: BLE001 - a worker dying here changes nothing that was trained
                pass
        self.inflight.clear()

    def evaluate(self, samples: int) -> dict[str, Any] | None:
        """The family's evaluation on worker 0 under the current weights (None if the family has none)."""
        return ray.get(self.workers[0].evaluate.remote([self.weights], self.version, samples))  # type: ignore[no-any-return]
