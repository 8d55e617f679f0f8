"""Where the scaffold's drivers get tasks: `--tasks` values of `envfarm rollout`, `envfarm serve openenv` and the
integrations' loaders. Each value is a JSONL file of TaskSpec rows or comma-separated instance ids looked up in
the store; only SWE tasks that name their instance image can run (they need a sandbox image and a verifier)."""

from __future__ import annotations

import json
from pathlib import Path

from envfarm.errors import EnvfarmError
from envfarm.task import TaskSpec


def load_tasks(specs: list[str], db_url: str | None = None) -> list[TaskSpec]:
    """Each value is a JSONL file of TaskSpec rows, or comma-separated instance ids looked up in the store."""
    tasks: dict[str, TaskSpec] = {}
    wanted: list[str] = []
    for value in specs:
        path = Path(value)
        if path.suffix in (".jsonl", ".json") or path.is_file():
            for task in _read_jsonl(path):
                tasks.setdefault(task.instance_id, task)
        else:
            wanted += [v.strip() for v in value.split(",") if v.strip()]
    if wanted:
        tasks.update({t.instance_id: t for t in _from_store(wanted, db_url) if t.instance_id not in tasks})
    if not tasks:
        raise EnvfarmError("--tasks names no task", "pass a JSONL file of TaskSpec rows or instance ids from the store")
    unsupported = [t.instance_id for t in tasks.values() if t.kind != "swe" or not t.image]
    if unsupported:
        raise EnvfarmError(f"{len(unsupported)} task(s) are not SWE tasks with an image: {', '.join(unsupported[:5])}",
                           "agents run on kind=swe tasks that name their instance image (mine and validate them first)")
    return list(tasks.values())


def _read_jsonl(path: Path) -> list[TaskSpec]:
    if not path.is_file():
        raise EnvfarmError(f"task file {path} does not exist", "pass an existing JSONL file of TaskSpec rows")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(TaskSpec.model_validate(json.loads(line)))
        except (ValueError, TypeError) as exc:
            first = " ".join(str(exc).split())[:200]
            raise EnvfarmError(f"{path}:{number} is not a TaskSpec row ({first})",
                               "write one TaskSpec JSON object per line (e.g. TaskSpec.model_dump_json())") from None
    return out


def _from_store(ids: list[str], db_url: str | None) -> list[TaskSpec]:
    from sqlalchemy import select

    from envfarm.store.db import open_store
    from envfarm.store.models import TaskRow

    with open_store(db_url).session(readonly=True) as session:
        rows = {r.instance_id: r for r in session.scalars(select(TaskRow).where(TaskRow.instance_id.in_(ids)))}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise EnvfarmError(f"{len(missing)} instance id(s) are not in the store: {', '.join(missing[:5])}",
                           "check the ids (envfarm mine ...), the store (--db / ENVFARM_DB_URL), or pass a JSONL file")
    return [TaskSpec.model_validate(rows[i].spec) for i in dict.fromkeys(ids)]
