"""Integrity of the reward stream and the store under failure, on SQLite and PostgreSQL.

Two probes, both on the real code paths:
- stream kill: a real Ray `StreamActor` is killed with `ray.kill` between a consume and its commit, and
  Ray restarts it from the ledger. Counted: rewards never handed out (lost), hand-outs beyond the first
  (twice), and hand-outs of a reward already committed (the ledger's promise: must be 0). Two consumers:
  one that commits every batch, and one that commits every 3 batches like the trainer between checkpoints
  (what it consumed but had not committed comes back after the restart: at-least-once delivery). Each
  consume also goes through the RL loop's own filter (`trainer.loop.dispatcher.fresh_groups`): what reaches
  the trainer twice, or never, must be 0 in both.
- concurrent writers: 4 processes running the store's read-then-write transactions (run_scope, a
  read-modify-write, ledger record and commit), errors counted by kind and every write checked to have
  landed. On SQLite also with the writer lock taken lazily (plain BEGIN), the way sessions began before.

A section of `make bench-integrity` (bench/results/integrity.json, with the machine's load at the start and
the end); `python -m bench.integrity --only stream` runs it alone. PostgreSQL comes from ENVFARM_BENCH_PG_URL
or ENVFARM_TEST_PG_URL (a private schema, dropped afterwards); without one its rows say what is missing.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


from bench.common import PG_URL, postgres_schema


# -- stores ----------------------------------------------------------------------------------------
@contextmanager
def _store_url(kind: str, folder: Path) -> Iterator[str | None]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex[:8]}.db'}"
    elif not PG_URL:
        yield None
    else:
        with postgres_schema() as url:
            yield url


def _missing_pg() -> dict[str, str]:
    return {"skipped": "PostgreSQL missing: set ENVFARM_BENCH_PG_URL or ENVFARM_TEST_PG_URL (make setup starts one)"}


# -- stream kill -----------------------------------------------------------------------------------
def _kill_and_wait(ray: Any, actor: Any) -> None:
    """Kill the actor and return once its restarted incarnation answers (so the next call reaches it)."""
    pid = ray.get(actor.stats.remote())["pid"]
    ray.kill(actor, no_restart=False)
    deadline = time.time() + 300
    while ray.get(actor.stats.remote())["pid"] == pid and time.time() < deadline:
        time.sleep(0.1)


def stream_kill(ray: Any, url: str, rewards: int = 120, group_size: int = 2, batch_groups: int = 4, kills: int = 5,
                commit_every: int = 1) -> dict[str, Any]:
    """Publish `rewards`, then consume in batches, killing the actor after a consume and before its commit."""
    from envfarm.store.db import open_store
    from envfarm.stream import RewardEvent, RewardLedger
    from envfarm.stream.ray_stream import StreamActor, publish_blocking
    from envfarm.trainer.loop.dispatcher import fresh_groups

    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    actor = StreamActor.remote(url, run_id, capacity=rewards + 1, max_staleness=10)
    started = time.perf_counter()
    handed: list[str] = []
    reached_trainer: list[str] = []  # what the RL loop's dispatcher passes on (it leaves out what it already had)
    seen: set[str] = set()
    committed: set[str] = set()
    uncommitted: list[str] = []
    after_commit, killed, batches = 0, 0, 0
    try:
        for i in range(rewards):
            publish_blocking(actor, RewardEvent(rollout_id=f"r{i}", task_id="t", policy_version=0, reward=float(i % 2),
                                                group_id=f"g{i // group_size}", group_size=group_size))
        while True:
            batch = ray.get(actor.consume.remote(batch_groups, 0))
            ids = [e.rollout_id for e in batch.events]
            fresh, _again = fresh_groups(batch.groups, seen)
            seen.update(e.rollout_id for g in fresh for e in g)
            reached_trainer += [e.rollout_id for g in fresh for e in g]
            if not ids and not uncommitted:
                break
            after_commit += sum(1 for rid in ids if rid in committed)
            handed += ids
            uncommitted += ids
            batches += 1
            if ids and killed < kills and batches % 2 == 1:  # between this consume and its commit
                _kill_and_wait(ray, actor)
                killed += 1
            if batches % commit_every == 0 or not ids:
                ray.get(actor.commit.remote(uncommitted, {"batch": batches}))
                committed.update(uncommitted)
                uncommitted = []
        stats = ray.get(actor.stats.remote())
    finally:
        ray.kill(actor, no_restart=True)
    distinct = set(handed)
    return {
        "rewards": rewards, "group_size": group_size, "groups_per_batch": batch_groups, "commit_every_batches": commit_every,
        "kills": killed, "handed_out": len(handed), "lost": rewards - len(distinct),
        "handed_out_twice": len(handed) - len(distinct), "handed_out_after_commit": after_commit,
        "reached_trainer_twice": len(reached_trainer) - len(set(reached_trainer)),
        "lost_by_trainer": rewards - len(set(reached_trainer)),
        "skipped_committed_by_restarted_actor": stats["skipped_committed"],
        "ledger": RewardLedger(open_store(url), run_id).counts(), "seconds": round(time.perf_counter() - started, 1),
    }


# -- concurrent writers ----------------------------------------------------------------------------
def _writer(url: str, worker: str, iterations: int, lazy_lock: bool, start: Any, out: Any) -> None:
    """One writer process (spawned): the store's read-then-write transactions, every error counted by kind."""
    from envfarm.runs import run_scope
    from envfarm.store.db import Store, redact
    from envfarm.store.models import RunRow
    from envfarm.stream import RewardEvent, RewardLedger

    store = Store(url)
    if lazy_lock:  # every session begins as a reader and upgrades on its first write, as before BEGIN IMMEDIATE
        store.session = lambda readonly=False: Store.session(store, readonly=True)  # type: ignore[method-assign]
    ledger = RewardLedger(store, "writers")
    errors: Counter[str] = Counter()

    def run_once() -> None:
        with run_scope(store, "writer"):  # merge (SELECT, INSERT), then finish_run (get, UPDATE)
            pass

    def bump() -> None:
        with store.session() as session:
            row = session.get(RunRow, f"counter-{worker}")
            row.summary = {"n": row.summary["n"] + 1}

    start.wait(300)
    began = time.perf_counter()
    for i in range(iterations):
        rid = f"{worker}-{i}"
        for step in (run_once, bump,
                     lambda: ledger.record(RewardEvent(rollout_id=rid, task_id="t", policy_version=0, reward=1.0)),
                     lambda: ledger.commit([rid], {"worker": worker})):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the probe counts every failure by kind
                errors[f"{type(exc).__name__}: {str(exc).replace(redact(url), '<store>').splitlines()[0][:160]}"] += 1
    out.put((worker, dict(errors), time.perf_counter() - began))


def concurrent_writers(url: str, processes: int = 4, iterations: int = 75, lazy_lock: bool = False) -> dict[str, Any]:
    from sqlalchemy import func, select

    from envfarm.store.db import Store
    from envfarm.store.models import RewardRow, RunRow

    store = Store(url)  # migrated here, before the writers start
    with store.session() as session:
        session.add_all([RunRow(id=f"counter-w{i}", kind="counter", summary={"n": 0}) for i in range(processes)])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(processes)
    procs = [ctx.Process(target=_writer, args=(url, f"w{i}", iterations, lazy_lock, start, out)) for i in range(processes)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=1800) for _ in procs]
    for proc in procs:
        proc.join(60)
    errors: Counter[str] = Counter()
    for _, errs, _ in results:
        errors.update(errs)
    with store.session(readonly=True) as session:
        counters = sum(r.summary["n"] for r in session.scalars(select(RunRow).where(RunRow.kind == "counter")))
        runs = session.scalar(select(func.count()).select_from(RunRow).where(RunRow.kind == "writer", RunRow.status == "finished"))
        recorded, committed = session.execute(select(func.count(), func.count(RewardRow.consumed_at)).where(RewardRow.run_id == "writers")).one()
    store.dispose()
    transactions = processes * iterations * 5
    slowest = max(seconds for _, _, seconds in results)
    return {
        "processes": processes, "transactions": transactions, "errors": sum(errors.values()), "errors_by_kind": dict(errors.most_common()),
        "landed": {"runs_finished": runs, "counter_increments": counters, "rewards_recorded": recorded, "rewards_committed": committed},
        "expected_each": processes * iterations, "seconds": round(slowest, 1), "transactions_per_s": round(transactions / slowest, 1),
    }


# -- the benchmark ---------------------------------------------------------------------------------
def run(rewards: int = 120, kills: int = 5, processes: int = 4, iterations: int = 75) -> dict[str, Any]:
    """Both probes on both stores; the dict that goes into the results file."""
    import ray

    result: dict[str, Any] = {"stream_kill": {}, "concurrent_writers": {}}
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with tempfile.TemporaryDirectory(prefix="envfarm-integrity-") as tmp:
        try:
            for kind in ("sqlite", "postgres"):
                rows: dict[str, Any] = {}
                for mode, every in (("commit_each_batch", 1), ("commit_every_3_batches", 3)):
                    with _store_url(kind, Path(tmp)) as url:
                        rows[mode] = stream_kill(ray, url, rewards=rewards, kills=kills, commit_every=every) if url else _missing_pg()
                    print(json.dumps({"stream_kill": kind, mode: rows[mode]}), flush=True)
                result["stream_kill"][kind] = rows
        finally:
            if started_ray:
                ray.shutdown()
        for kind, lazy in (("sqlite", False), ("sqlite_lazy_lock_as_before", True), ("postgres", False)):
            with _store_url("postgres" if kind == "postgres" else "sqlite", Path(tmp)) as url:
                row = concurrent_writers(url, processes, iterations, lazy_lock=lazy) if url else _missing_pg()
            result["concurrent_writers"][kind] = row
            print(json.dumps({"concurrent_writers": kind, **row}), flush=True)
    return result


if __name__ == "__main__":
    from bench.integrity import main

    sys.argv[1:] = ["--only", "stream"]
    main()
