"""What every dataset importer shares: the row contract, field checks, and value coercion.

An importer maps one dataset row (a dict read from JSONL or Parquet) to a `TaskSpec` that keeps the
source's own ids, test lists and install recipe as given. Every row is checked against the format's
known fields first: an unknown field or a missing required one is an error naming the row and the
field, so a dataset whose schema moved on is noticed instead of half-read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from envfarm.errors import EnvfarmError
from envfarm.task import TaskSpec


class ImportRowError(EnvfarmError):
    """One row cannot be imported; `where` names the file and row (`data.jsonl:3`)."""


@dataclass(frozen=True)
class Importer:
    """One dataset family's row format."""

    name: str
    required: frozenset[str]
    optional: frozenset[str]
    to_task: Callable[[dict[str, Any], str], TaskSpec]
    # Fields whose presence tells this format apart from the others (`--format auto`).
    signature: frozenset[str] = field(default_factory=frozenset)

    def convert(self, row: dict[str, Any], where: str) -> TaskSpec:
        check_fields(row, where, self)
        try:
            return self.to_task(row, where)
        except ImportRowError:
            raise
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise ImportRowError(f"{where}: the row does not make a valid task ({' '.join(str(exc).split())[:300]})",
                                 f"fix the row or import it with the right --format (this was read as {self.name})") from exc


def check_fields(row: dict[str, Any], where: str, importer: Importer) -> None:
    unknown = sorted(set(row) - importer.required - importer.optional)
    if unknown:
        raise ImportRowError(
            f"{where}: field {unknown[0]!r} is not part of the {importer.name} format"
            + (f" (nor are {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else ""),
            f"drop the field from the row, or import with the --format it belongs to; {importer.name} fields are: "
            f"{', '.join(sorted(importer.required | importer.optional))}",
        )
    missing = sorted(f for f in importer.required if f not in row or row[f] is None)
    if missing:
        raise ImportRowError(
            f"{where}: required field {missing[0]!r} is missing" + (f" (and {', '.join(map(repr, missing[1:]))})" if missing[1:] else ""),
            f"every {importer.name} row needs: {', '.join(sorted(importer.required))}",
        )


def test_list(value: Any, name: str, where: str) -> list[str]:
    """A test list as given: SWE-bench stores it JSON-encoded in a string, later datasets as a list."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise ImportRowError(f"{where}: field {name!r} is a string but not a JSON list ({exc})", "store the list as JSON, e.g. [\"test_a\"]") from exc
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ImportRowError(f"{where}: field {name!r} must be a list of test ids, got {type(value).__name__}", "give a list of strings")
    return list(value)


def text(value: Any) -> str:
    return "" if value is None else str(value)


def timestamp(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if hasattr(value, "to_pydatetime"):  # pandas / pyarrow timestamps
        return timestamp(value.to_pydatetime(), where)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ImportRowError(f"{where}: field 'created_at' is not a date ({value!r})", "use ISO 8601, e.g. 2021-05-04T10:05:33Z") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def plain(value: Any) -> Any:
    """Parquet structs and lists (numpy arrays, pyarrow scalars) as plain JSON-able Python values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def dataset_image(task: TaskSpec) -> str:
    """The pre-built image the row named (kept in `extra.environment` once envfarm gave the task another)."""
    record = task.extra.get("environment")
    return str(record.get("dataset_image", "")) if isinstance(record, dict) else task.image


def with_environment(task: TaskSpec, image: str, source: str) -> TaskSpec:
    """The task as it runs: `image` is the environment envfarm made or pulled, the row's own image name
    and where the environment came from kept in `extra.environment`."""
    record = {"source": source, "image": image, "dataset_image": dataset_image(task)}
    return task.model_copy(update={"image": image, "extra": {**task.extra, "environment": record}})


def as_imported(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored spec as its dataset row gave it (the environment envfarm added taken out), to compare imports."""
    extra = dict(spec.get("extra") or {})
    record = extra.pop("environment", None)
    if not isinstance(record, dict):
        return spec
    return {**spec, "image": record.get("dataset_image", ""), "extra": extra}
