"""Dataset importers by format name, one module per format (`envfarm tasks import`).

    from envfarm.tasks.importers import import_path
    result = import_path(store, "SWE-bench_Lite.parquet", fmt="auto")

`--format auto` picks the format from the first row's fields (each importer's `signature`).
"""

from __future__ import annotations

from typing import Any

from envfarm.errors import EnvfarmError
from envfarm.tasks.importers import multi_swe_bench, r2e_gym, swe_gym, swe_rebench, swe_smith, swebench
from envfarm.tasks.importers.base import Importer, ImportRowError

IMPORTERS: dict[str, Importer] = {
    "swebench": swebench.IMPORTER,
    "swe-rebench": swe_rebench.IMPORTER,
    "swe-smith": swe_smith.IMPORTER,
    "r2e-gym": r2e_gym.IMPORTER,
    "multi-swe-bench": multi_swe_bench.IMPORTER,
    "swe-gym": swe_gym.IMPORTER,
}
FORMATS = ("auto", *IMPORTERS)
# Most specific first: SWE-rebench rows are SWE-bench rows plus a recipe; SWE-Gym rows match SWE-bench's
# fields without environment_setup_commit, so they are told apart by that and by list-valued lists.
_DETECT_ORDER = ("swe-rebench", "multi-swe-bench", "r2e-gym", "swe-smith", "swebench")


def get_importer(name: str) -> Importer:
    try:
        return IMPORTERS[name]
    except KeyError:
        raise EnvfarmError(f"unknown dataset format {name!r}", f"use one of: {', '.join(FORMATS)}") from None


def detect(row: dict[str, Any], where: str) -> Importer:
    """The format a row is in, from the fields it has."""
    fields = set(row)
    for name in _DETECT_ORDER:
        if IMPORTERS[name].signature <= fields:
            return IMPORTERS[name]
    lists = row.get("FAIL_TO_PASS")
    if swe_gym.REQUIRED <= fields and (isinstance(lists, (list, tuple)) or hasattr(lists, "tolist")):
        return IMPORTERS["swe-gym"]
    raise ImportRowError(
        f"{where}: cannot tell which dataset format this row is in (fields: {', '.join(sorted(fields)[:12])})",
        f"pass --format, one of: {', '.join(IMPORTERS)}",
    )


from envfarm.tasks.importers.run import ImportResult, import_path, read_tasks  # noqa: E402 - run imports the registry above

__all__ = ["FORMATS", "IMPORTERS", "ImportResult", "ImportRowError", "Importer", "detect", "get_importer", "import_path", "read_tasks"]
