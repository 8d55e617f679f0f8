"""Mined SWE tasks for the RL loop, read from the store (`tasks` table, TaskSpec JSON), so the trainer
never imports the miner."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from envfarm.errors import EnvfarmError
from envfarm.store.db import Store
from envfarm.store.models import TaskRow
from envfarm.task import TaskSpec


@dataclass(frozen=True)
class SweItem:
    id: str
    source: str  # the repository: the scheduler's quota unit
    spec: TaskSpec
    domain: str = "swe"


def load_swe_tasks(store: Store, ids: list[str] | None = None) -> list[SweItem]:
    with store.session() as session:
        query = select(TaskRow).where(TaskRow.kind == "swe")
        query = query.where(TaskRow.instance_id.in_(ids)) if ids else query.where(TaskRow.status == "validated")
        rows = session.scalars(query.order_by(TaskRow.instance_id)).all()
        items = [SweItem(r.instance_id, r.repo or "swe", TaskSpec.model_validate(r.spec)) for r in rows]
    missing = sorted(set(ids or []) - {i.id for i in items})
    if missing:
        raise EnvfarmError(f"SWE task(s) {missing[:5]} are not in the store", "mine them first (make mine) or fix tasks.ids")
    if not items:
        raise EnvfarmError("no validated SWE tasks in the store", "run make mine, or use tasks.family=func for the demo")
    no_image = [i.id for i in items if not i.spec.image]
    if no_image:
        raise EnvfarmError(f"SWE task(s) {no_image[:5]} have no instance image", "re-run the miner's environment setup for them")
    return items
