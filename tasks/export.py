"""Export validated tasks to SWE-bench-format JSONL (the harness's field names), atomically."""

from __future__ import annotations

import json
from pathlib import Path

from envfarm.store import Store
from envfarm.tasks.store import load_tasks


def export_jsonl(store: Store, out: str | Path, repo: str | None = None) -> int:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tasks = load_tasks(store, repo)
    with tmp.open("w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(task.to_swebench(), ensure_ascii=False) + "\n")
    tmp.replace(out)  # readers never see half a file
    return len(tasks)
