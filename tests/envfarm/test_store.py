"""The store on SQLite and on a real PostgreSQL: migrations, transactions, runs."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.synchronize
import sqlite3
from collections import Counter

import pytest
from sqlalchemy import func, select

from envfarm.errors import StoreError
from envfarm.runs import run_scope
from envfarm.store.db import Store
from envfarm.store.models import RewardRow, RunRow, TaskRow
from envfarm.stream import RewardEvent, RewardLedger
from envfarm.task import TaskSpec


def test_migrations_create_every_table_and_are_idempotent(store: Store) -> None:
    import sqlalchemy as sa

    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"tasks", "images", "runs", "sandbox_events", "rewards", "queue_items", "alembic_version"} <= tables
    store.migrate()  # a second upgrade is a no-op, not an error
    Store(store.url).dispose()


def test_task_round_trip_keeps_the_full_spec(store: Store) -> None:
    spec = TaskSpec(instance_id="octo__demo-12", repo="octo/demo", FAIL_TO_PASS=["tests/test_a.py::test_x[a b]"])
    with store.session() as session:
        session.add(TaskRow(instance_id=spec.instance_id, repo=spec.repo, spec=spec.model_dump(mode="json")))
    with store.session() as session:
        row = session.get(TaskRow, "octo__demo-12")
        assert TaskSpec.model_validate(row.spec) == spec


def test_a_failed_transaction_leaves_nothing_half_written(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.session() as session:
            session.add(TaskRow(instance_id="a__b-1", spec={}))
            session.flush()
            raise RuntimeError("crash mid-write")
    with store.session() as session:
        assert session.get(TaskRow, "a__b-1") is None


def test_run_scope_records_success_and_failure(store: Store) -> None:
    with run_scope(store, "unit", {"x": 1}) as run:
        run.summary = {"done": True}
    with pytest.raises(ValueError):
        with run_scope(store, "unit") as failing:
            raise ValueError("bad input")
    with store.session() as session:
        ok = session.get(RunRow, run.id)
        bad = session.get(RunRow, failing.id)
        assert (ok.status, ok.summary) == ("finished", {"done": True})
        assert bad.status == "failed" and "bad input" in bad.summary["error"]
        assert session.scalars(select(RunRow.id)).all()


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing", "cannot connect to the store"),
        ("notadb://x", "is not a usable database URL"),
        ("sqlite:////proc/forbidden/dir/envfarm.db", "cannot connect to the store"),
    ],
)
def test_a_database_url_that_does_not_connect_gets_one_clear_line(url: str, expected: str) -> None:
    with pytest.raises(StoreError) as info:
        Store(url)
    line = info.value.line()
    assert expected in line and "fix:" in line and "\n" not in line
    assert "secret" not in line  # passwords never printed


def _write(url: str, worker: str, iterations: int, start: "mp.synchronize.Barrier", out: "mp.Queue[tuple[str, dict[str, int]]]") -> None:
    """One writer process: the store's real read-then-write transactions, counting every error by kind."""
    store = Store(url)  # already migrated by the parent
    ledger = RewardLedger(store, "writers")
    errors: Counter[str] = Counter()
    start.wait(120)  # all writers begin together, so their transactions really interleave
    for i in range(iterations):
        steps = [
            lambda: _run_once(store),  # run_scope: merge (SELECT then INSERT), then finish_run (get, then UPDATE)
            lambda: _bump(store, f"counter-{worker}"),  # session.get, then UPDATE of what was read
            lambda: ledger.record(RewardEvent(rollout_id=f"{worker}-{i}", task_id="t", policy_version=0, reward=1.0)),
            lambda: ledger.commit([f"{worker}-{i}"], {"worker": worker}),  # UPDATE, SELECT, UPDATE
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - every failure is counted, by kind, and asserted on
                errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"] += 1
    out.put((worker, dict(errors)))


def _run_once(store: Store) -> None:
    with run_scope(store, "writer"):
        pass


def _bump(store: Store, run_id: str) -> None:
    with store.session() as session:
        row = session.get(RunRow, run_id)
        row.summary = {"n": row.summary["n"] + 1}


def test_concurrent_writer_processes_see_no_lock_errors_and_lose_no_write(store: Store) -> None:
    workers, iterations = 4, 60  # 4 processes x 300 transactions, most of them read-then-write
    with store.session() as session:
        session.add_all([RunRow(id=f"counter-w{i}", kind="counter", summary={"n": 0}) for i in range(workers)])
    ctx = mp.get_context("spawn")
    out: "mp.Queue[tuple[str, dict[str, int]]]" = ctx.Queue()
    start = ctx.Barrier(workers)
    procs = [ctx.Process(target=_write, args=(store.url, f"w{i}", iterations, start, out)) for i in range(workers)]
    for proc in procs:
        proc.start()
    results = dict(out.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join(60)
    assert results == {f"w{i}": {} for i in range(workers)}  # not one "database is locked", on either store
    with store.session(readonly=True) as session:
        counters = {r.id: r.summary["n"] for r in session.scalars(select(RunRow).where(RunRow.kind == "counter"))}
        runs = session.scalar(select(func.count()).select_from(RunRow).where(RunRow.kind == "writer", RunRow.status == "finished"))
        rewards = session.execute(select(func.count(), func.count(RewardRow.consumed_at)).where(RewardRow.run_id == "writers")).one()
    assert counters == {f"counter-w{i}": iterations for i in range(workers)}  # no update lost
    assert runs == workers * iterations and tuple(rewards) == (workers * iterations, workers * iterations)


def test_sqlite_locked_past_the_lock_timeout_is_one_store_error_line_with_a_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "envfarm.db"
    store = Store(f"sqlite:///{path}", lock_timeout_s=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock and does not let go
    try:
        with pytest.raises(StoreError) as info:
            with store.session() as session:
                session.add(TaskRow(instance_id="a__b-2", spec={}))
        line = info.value.line()
        assert "locked" in line and "fix:" in line and "\n" not in line
        with store.session(readonly=True) as session:  # readers are not held up by the writer
            assert session.get(TaskRow, "a__b-2") is None
        with pytest.raises(StoreError, match="readonly=True") as info:  # a reader that writes is told what to change
            with store.session(readonly=True) as session:
                session.get(TaskRow, "a__b-2")
                session.add(TaskRow(instance_id="a__b-2", spec={}))
        assert "fix:" in info.value.line()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.dispose()
