"""Rows from dataset files: JSON Lines, a JSON array, or Parquet (pyarrow), one file or a folder of them.

Each row comes with where it was read (`path:line` for JSONL, `path:row N` otherwise), so every error
can name the row it is about.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from envfarm.errors import EnvfarmError
from envfarm.tasks.importers.base import ImportRowError

SUFFIXES = (".jsonl", ".json", ".parquet")


def dataset_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise EnvfarmError(f"{path} holds no .jsonl, .json or .parquet files", "point at a dataset file or a folder of them")
        return files
    if not path.is_file():
        raise EnvfarmError(f"{path} does not exist", "pass a dataset file (.jsonl, .json, .parquet) or a folder of them")
    if path.suffix not in SUFFIXES:
        raise EnvfarmError(f"{path} is not a .jsonl, .json or .parquet file", "convert it, or name it by what it holds")
    return [path]


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportRowError(f"{where}: not a JSON object ({exc})", "each line of a .jsonl file must be one JSON object") from exc
            if not isinstance(row, dict):
                raise ImportRowError(f"{where}: a JSON {type(row).__name__}, not an object", "each line must be one JSON object")
            yield where, row


def _json(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ImportRowError(f"{path}: not JSON ({exc})", "give a JSON array of rows, one object, or use .jsonl") from exc
    rows = data if isinstance(data, list) else [data]
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ImportRowError(f"{path}:row {number}: a JSON {type(row).__name__}, not an object", "rows must be JSON objects")
        yield f"{path}:row {number}", row


def _parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq  # pinned in pyproject.toml; imported here so JSONL imports do not pay for it

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
        for row in batch.to_pylist():
            number += 1
            yield f"{path}:row {number}", row


def read_rows(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for file in dataset_files(Path(path)):
        reader = {".jsonl": _jsonl, ".json": _json, ".parquet": _parquet}[file.suffix]
        yield from reader(file)
