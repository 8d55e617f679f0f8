"""The store on SQLite and on a real PostgreSQL: migrations, transactions, runs."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from envfarm.errors import StoreError
from envfarm.runs import run_scope
from envfarm.store.db import Store
from envfarm.store.models import RunRow, TaskRow
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
