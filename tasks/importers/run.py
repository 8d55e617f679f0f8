"""Import a dataset into the store: every row converted first, then all written in one transaction.

Idempotent by instance id: a row whose task is already stored unchanged is left alone, a changed one
replaces the stored spec. A bad row stops the import before anything is written, naming the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from envfarm.store import Store, TaskRow
from envfarm.task import TaskSpec
from envfarm.tasks.importers.base import ImportRowError, as_imported
from envfarm.tasks.importers.reader import read_rows

IMPORTED = "imported"  # TaskRow.status for tasks taken from a dataset (the miner's own are "validated")


@dataclass
class ImportResult:
    format: str
    rows: int = 0
    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def read_tasks(path: str | Path, fmt: str = "auto") -> tuple[str, list[TaskSpec]]:
    """Every row of `path` as a TaskSpec (the format name used, the tasks); raises on the first bad row."""
    from envfarm.tasks.importers import detect, get_importer

    importer = None if fmt == "auto" else get_importer(fmt)
    tasks: list[TaskSpec] = []
    seen: dict[str, str] = {}
    for where, row in read_rows(path):
        importer = importer or detect(row, where)
        task = importer.convert(row, where)
        if task.instance_id in seen:
            raise ImportRowError(f"{where}: instance_id {task.instance_id!r} was already read at {seen[task.instance_id]}",
                                 "drop the duplicate row; instance ids must be unique within an import")
        seen[task.instance_id] = where
        tasks.append(task)
    if importer is None:
        raise ImportRowError(f"{path}: no rows to import", "point at a dataset file that has rows")
    return importer.name, tasks


def import_path(store: Store, path: str | Path, fmt: str = "auto") -> ImportResult:
    name, tasks = read_tasks(path, fmt)
    result = ImportResult(format=name, rows=len(tasks))
    with store.session() as session:
        for task in tasks:
            spec = task.model_dump(mode="json")
            row = session.get(TaskRow, task.instance_id)
            if row is not None and row.status != IMPORTED:
                raise ImportRowError(  # raised inside the transaction: nothing of this import is written
                    f"instance_id {task.instance_id!r} is already in the store as a {row.status} task, not an imported one",
                    "remove that task first, or import the dataset into another store (ENVFARM_DB_URL)",
                )
            if row is not None and as_imported(row.spec) == spec:  # an environment built since does not make it differ
                result.unchanged.append(task.instance_id)
                continue
            (result.updated if row is not None else result.inserted).append(task.instance_id)
            session.merge(TaskRow(instance_id=task.instance_id, repo=task.repo, version=task.version, kind=task.kind,
                                  language=task.language, image=task.image, status=IMPORTED, spec=spec))
    return result
