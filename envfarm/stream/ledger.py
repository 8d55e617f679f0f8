"""The durable side of the stream: one `rewards` row per rollout (unique `rollout_id`).

Writing the row is the dedup point across processes and restarts: a retried verification inserts
nothing. `consumed_at` is set only when the trainer *commits* the step that used the reward (after
its checkpoint), so a trainer killed in between gets the same rewards back on restart, and a reward
committed once is never handed out again.
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from envfarm.store.db import Store
from envfarm.store.models import RewardRow, utcnow
from envfarm.stream.events import RewardEvent


class RewardLedger:
    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    def record(self, event: RewardEvent) -> bool:
        """Insert the event; False if this rollout id is already in the ledger (a duplicate)."""
        body = event.to_dict()
        row = RewardRow(rollout_id=event.rollout_id, task_id=event.task_id, run_id=self.run_id,
                        policy_version=event.policy_version, value=float(event.reward), passed=bool(event.passed),
                        details={"event": {k: v for k, v in body.items() if k not in ("rollout_id", "task_id", "policy_version")}})
        try:
            with self.store.session() as session:
                session.add(row)
        except IntegrityError:
            return False
        return True

    def exists(self, rollout_id: str) -> bool:
        with self.store.session(readonly=True) as session:
            return session.scalar(select(RewardRow.id).where(RewardRow.rollout_id == rollout_id)) is not None

    def commit(self, rollout_ids: Iterable[str], outcome: dict[str, Any] | None = None) -> int:
        """Mark rewards consumed (idempotent: already-consumed rows are left alone). Returns rows changed."""
        ids = list(rollout_ids)
        if not ids:
            return 0
        with self.store.session() as session:
            result = session.execute(update(RewardRow).where(RewardRow.rollout_id.in_(ids), RewardRow.consumed_at.is_(None))
                                     .values(consumed_at=utcnow()))
            if outcome:
                for row in session.scalars(select(RewardRow).where(RewardRow.rollout_id.in_(ids))):
                    row.details = {**(row.details or {}), "outcome": outcome}
            return int(result.rowcount or 0)

    def committed(self, rollout_ids: Iterable[str]) -> set[str]:
        """Which of these rewards are committed, by any process: the stream hands none of them out again."""
        ids = list(dict.fromkeys(rollout_ids))
        found: set[str] = set()
        with self.store.session(readonly=True) as session:
            for start in range(0, len(ids), 500):  # bounded IN lists, whatever the batch size
                found.update(session.scalars(select(RewardRow.rollout_id).where(
                    RewardRow.rollout_id.in_(ids[start:start + 500]), RewardRow.consumed_at.is_not(None))))
        return found

    def pending(self) -> list[RewardEvent]:
        """Every reward of this run not yet committed by the trainer, oldest first."""
        with self.store.session(readonly=True) as session:
            rows = session.scalars(select(RewardRow).where(RewardRow.run_id == self.run_id, RewardRow.consumed_at.is_(None))
                                   .order_by(RewardRow.id)).all()
            return [self._event(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.store.session(readonly=True) as session:
            rows = session.execute(select(RewardRow.consumed_at.is_(None)).where(RewardRow.run_id == self.run_id)).all()
        pending = sum(1 for (p,) in rows if p)
        return {"total": len(rows), "pending": pending, "committed": len(rows) - pending}

    @staticmethod
    def _event(row: RewardRow) -> RewardEvent:
        body = dict((row.details or {}).get("event", {}))
        body.update(rollout_id=row.rollout_id, task_id=row.task_id, policy_version=row.policy_version,
                    reward=row.value, passed=row.passed)
        return RewardEvent.from_dict(body)
