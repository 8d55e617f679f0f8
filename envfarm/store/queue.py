"""A work queue in the store: many processes claim rows, no two ever get the same one.

PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED`, so claimers never wait on each other. SQLite: the claim runs
in a `BEGIN IMMEDIATE` transaction, which holds the database's single writer lock from the first read, so
the select-then-update cannot interleave with another claimer's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from envfarm.store.db import Store
from envfarm.store.models import QueueItemRow, utcnow


def enqueue(store: Store, queue: str, items: Iterable[tuple[str, dict[str, Any]]], priority: int = 0) -> int:
    """Add (key, payload) items; a key already in the queue is left as it is. Returns how many were new."""
    rows = [{"queue": queue, "key": key, "payload": payload, "priority": priority} for key, payload in items]
    if not rows:
        return 0
    insert = pg_insert if store.dialect == "postgresql" else sqlite_insert
    added = 0
    with store.session() as session:
        for start in range(0, len(rows), 500):
            stmt = (
                insert(QueueItemRow)
                .values(rows[start : start + 500])
                .on_conflict_do_nothing(index_elements=["queue", "key"])
                .returning(QueueItemRow.id)
            )
            added += len(session.execute(stmt).all())
    return added


def claim(store: Store, queue: str, worker: str, limit: int = 1, lease_seconds: float = 600) -> list[QueueItemRow]:
    """Claim up to `limit` pending items (or items whose claimer's lease ran out)."""
    now = utcnow()
    claimable = and_(
        QueueItemRow.queue == queue,
        or_(
            QueueItemRow.status == "pending",
            and_(QueueItemRow.status == "claimed", QueueItemRow.lease_until < now),
        ),
    )
    query = select(QueueItemRow).where(claimable).order_by(QueueItemRow.priority.desc(), QueueItemRow.id).limit(limit)
    if store.dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    with store.session(immediate=True) as session:
        items = list(session.scalars(query))
        lease = now + timedelta(seconds=lease_seconds)
        for item in items:
            item.status = "claimed"
            item.claimed_by = worker
            item.lease_until = lease
            item.attempts += 1
        session.flush()
        return items


def complete(store: Store, item_id: int, worker: str, result: dict[str, Any] | None = None) -> bool:
    """Mark done; False if the item was re-claimed by someone else meanwhile (our lease had expired)."""
    return _finish(store, item_id, worker, "done", result=result or {})


def fail(store: Store, item_id: int, worker: str, error: str, retry: bool = False) -> bool:
    return _finish(store, item_id, worker, "pending" if retry else "failed", error=error)


def _finish(store: Store, item_id: int, worker: str, status: str, **values: Any) -> bool:
    with store.session() as session:
        result = session.execute(
            update(QueueItemRow)
            .where(QueueItemRow.id == item_id, QueueItemRow.claimed_by == worker, QueueItemRow.status == "claimed")
            .values(status=status, lease_until=None, **values)
        )
        return (result.rowcount or 0) == 1


def counts(store: Store, queue: str) -> dict[str, int]:
    with store.session() as session:
        rows = session.execute(
            select(QueueItemRow.status, func.count()).where(QueueItemRow.queue == queue).group_by(QueueItemRow.status)
        )
        return {status: n for status, n in rows}
