"""R2E-Gym rows (R2E-Gym/R2E-Gym-Subset, -Lite, -V1): commits turned into tasks, with a pre-built image.

A row names its repository (`repo_name`), commit (`commit_hash`) and image (`docker_image`), and the
expected outcome of every test it runs (`expected_output_json`: test name -> status). It has no
instance id, FAIL_TO_PASS or PASS_TO_PASS: the id is built from the repository and commit, and a task
is resolved when every test ends as expected, so the tests expected to pass become PASS_TO_PASS and
the expectation map is kept as given in `extra`. R2E-Gym's own test runner output is not one envfarm
reads yet, so such tasks cannot be graded here (their log parser says so).
"""

from __future__ import annotations

import json
from typing import Any

from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.importers.base import ImportRowError, Importer, plain, text

REQUIRED = frozenset({"repo_name", "commit_hash", "docker_image", "problem_statement", "expected_output_json"})
OPTIONAL = frozenset({"parsed_commit_content", "execution_result_content", "modified_files", "modified_entity_summaries",
                      "relevant_files", "num_non_test_files", "num_non_test_func_methods", "num_non_test_lines", "prompt"})


def to_task(row: dict[str, Any], where: str) -> TaskSpec:
    expected = row["expected_output_json"]
    try:
        expected = json.loads(expected) if isinstance(expected, str) else plain(expected)
    except json.JSONDecodeError as exc:
        raise ImportRowError(f"{where}: field 'expected_output_json' is not JSON ({exc})", "give it as a JSON object of test -> status") from exc
    if not isinstance(expected, dict):
        raise ImportRowError(f"{where}: field 'expected_output_json' must map test names to statuses", "give it as a JSON object")
    repo_name, commit = text(row["repo_name"]), text(row["commit_hash"])
    return TaskSpec(
        instance_id=f"{repo_name.replace('/', '__')}-{commit[:12]}",
        repo=repo_name,
        base_commit=commit,
        problem_statement=text(row["problem_statement"]),
        PASS_TO_PASS=sorted(k for k, v in expected.items() if str(v).upper() == "PASSED"),
        image=text(row["docker_image"]),
        install=InstallConfig(log_parser="r2e-gym"),
        source={"dataset": "r2e-gym"},
        extra={"expected_output": expected, **{k: plain(row[k]) for k in ("modified_files", "relevant_files") if row.get(k) is not None}},
    )


IMPORTER = Importer("r2e-gym", REQUIRED, OPTIONAL, to_task, signature=frozenset({"expected_output_json", "docker_image"}))
