"""SWE-Gym rows (SWE-Gym/SWE-Gym, SWE-Gym-Lite): SWE-bench's columns, test lists as real lists,
no environment_setup_commit. Graded under the harness's conventions, as SWE-Gym's own harness fork does."""

from __future__ import annotations

from typing import Any

from envfarm.task import TaskSpec
from envfarm.tasks.importers.base import Importer
from envfarm.tasks.importers.swebench import swebench_fields

REQUIRED = frozenset({"instance_id", "repo", "base_commit", "patch", "test_patch", "problem_statement", "FAIL_TO_PASS", "PASS_TO_PASS"})
OPTIONAL = frozenset({"hints_text", "created_at", "version", "environment_setup_commit"})


def to_task(row: dict[str, Any], where: str) -> TaskSpec:
    return TaskSpec(**swebench_fields(row, where), source={"dataset": "swe-gym"})


IMPORTER = Importer("swe-gym", REQUIRED, OPTIONAL, to_task)
