"""SWE-smith rows (SWE-bench/SWE-smith): synthetic bugs in a pinned snapshot of a repository.

`patch` here is the change that *introduces* the bug (the fix is its reverse), `repo` names SWE-smith's
mirror (`swesmith/<owner>__<name>.<commit8>`) and `image_name` the pre-built environment; each instance
lives on a branch named after its instance_id in that mirror. Kept as given: the bug patch goes to
`extra["bug_patch"]` (TaskSpec.patch is a fix, and none is published), the mirror and image unchanged.
Ids follow the harness's pytest conventions (SWE-smith grades with SWE-bench's parsers).
"""

from __future__ import annotations

import re
from typing import Any

from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.importers.base import ImportRowError, Importer, test_list, text, timestamp

REQUIRED = frozenset({"instance_id", "repo", "patch", "FAIL_TO_PASS", "PASS_TO_PASS", "image_name"})
OPTIONAL = frozenset({"created_at", "base_commit", "problem_statement"})
_MIRROR = re.compile(r"^(?:swesmith/)?(?P<owner>[\w.-]+)__(?P<name>[\w.-]+?)\.(?P<commit>[0-9a-f]{7,40})$")


def to_task(row: dict[str, Any], where: str) -> TaskSpec:
    mirror = text(row["repo"])
    match = _MIRROR.match(mirror)
    if match is None:
        raise ImportRowError(f"{where}: field 'repo' ({mirror!r}) is not a SWE-smith mirror name (swesmith/owner__name.commit)",
                             "import SWE-bench-style rows with --format swebench")
    return TaskSpec(
        instance_id=text(row["instance_id"]),
        repo=f"{match['owner']}/{match['name']}",
        base_commit=text(row.get("base_commit")) or match["commit"],
        problem_statement=text(row.get("problem_statement")),
        created_at=timestamp(row.get("created_at"), where),
        FAIL_TO_PASS=test_list(row["FAIL_TO_PASS"], "FAIL_TO_PASS", where),
        PASS_TO_PASS=test_list(row["PASS_TO_PASS"], "PASS_TO_PASS", where),
        image=text(row["image_name"]),
        install=InstallConfig(log_parser="swebench:parse_log_pytest"),
        test_ids="swebench",
        source={"dataset": "swe-smith", "mirror": mirror, "branch": text(row["instance_id"])},
        extra={"bug_patch": text(row["patch"])},
    )


IMPORTER = Importer("swe-smith", REQUIRED, OPTIONAL, to_task, signature=frozenset({"image_name"}))
