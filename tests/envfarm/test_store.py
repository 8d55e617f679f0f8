"""The store on SQLite and on a real PostgreSQL: migrations, transactions, the work queue, runs."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.synchronize
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from envfarm.errors import StoreError
from envfarm.runs import run_scope
from envfarm.store.db import Store
from envfarm.store.models import QueueItemRow, RunRow, TaskRow, utcnow
from envfarm.store.queue import claim, complete, counts, enqueue, fail
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


def test_enqueue_is_idempotent_by_key(store: Store) -> None:
    assert enqueue(store, "mine", [("r/1", {"n": 1}), ("r/2", {"n": 2})]) == 2
    assert enqueue(store, "mine", [("r/1", {"n": 99}), ("r/3", {})]) == 1
    assert counts(store, "mine") == {"pending": 3}


def test_claim_complete_fail_and_lease_expiry(store: Store) -> None:
    enqueue(store, "q", [(f"k{i}", {"i": i}) for i in range(3)])
    first = claim(store, "q", "w1", limit=2)
    assert [item.key for item in first] == ["k0", "k1"]
    assert complete(store, first[0].id, "w1", {"ok": True})
    assert not complete(store, first[1].id, "someone-else")  # only the claimer can finish it
    assert fail(store, first[1].id, "w1", "boom", retry=True)
    again = claim(store, "q", "w2", limit=5)
    assert sorted(item.key for item in again) == ["k1", "k2"]
    # w2 dies: once its lease runs out the items are claimable again, and w2 can no longer complete them.
    with store.session() as session:
        session.execute(update(QueueItemRow).where(QueueItemRow.claimed_by == "w2").values(lease_until=utcnow() - timedelta(seconds=1)))
    third = claim(store, "q", "w3", limit=5)
    assert sorted(item.key for item in third) == ["k1", "k2"]
    assert not complete(store, third[0].id, "w2")
    assert all(complete(store, item.id, "w3") for item in third)
    assert counts(store, "q") == {"done": 3}


def _claim_all(url: str, worker: str, out: "mp.Queue[list[str]]", start: "mp.synchronize.Barrier") -> None:
    s = Store(url)
    got: list[str] = []
    start.wait(60)  # both claimers begin together, so their transactions really interleave
    while True:
        items = claim(s, "race", worker, limit=2)
        if not items:
            break
        got.extend(item.key for item in items)
    out.put(got)


def test_two_processes_claiming_concurrently_never_get_the_same_row(store: Store) -> None:
    keys = [f"item-{i:04d}" for i in range(300)]
    enqueue(store, "race", [(k, {}) for k in keys])
    ctx = mp.get_context("spawn")
    out: "mp.Queue[list[str]]" = ctx.Queue()
    start = ctx.Barrier(2)
    workers = [ctx.Process(target=_claim_all, args=(store.url, f"w{i}", out, start)) for i in range(2)]
    for w in workers:
        w.start()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(60)
    a, b = results
    assert not set(a) & set(b), "a row was claimed twice"
    assert sorted(a + b) == keys


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
