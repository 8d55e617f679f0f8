"""The miner's records carry every field: Candidate -> WorkItem -> TaskSpec, and failures by typed unit.

`hints_text` was once lost between the candidate and the stored task because each hop copied fields by
hand. These tests fail when a field is added to a source record and not carried (or not explicitly
declared as not carried, with the reason).
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime, timezone
from typing import Any

import pytest

from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.candidates import Candidate
from envfarm.tasks.patchsplit import SplitDiff
from envfarm.tasks.pipeline import unit_failed
from envfarm.tasks.sources.records import Issue, PullRequest
from envfarm.tasks.store import funnel, record_candidate
from envfarm.tasks.work import BuildUnit, BuiltEnv, EnvGroup, ScanUnit, ValidateUnit, WorkItem, task_spec

# What each Candidate field becomes in the WorkItem. A new Candidate field must be added here (or to
# NOT_CARRIED_FROM_CANDIDATE) by whoever adds it, deciding whether the miner needs it downstream.
CARRIED_FROM_CANDIDATE = {
    "repo": ["repo", "instance_id"],
    "pull": ["pr_number", "created_at", "source", "instance_id"],
    "issues": ["problem_statement", "source"],
    "base_commit": ["base_commit"],
    "head_commit": ["head_commit"],
    "split": ["patch", "test_patch", "test_files"],
    "link": ["link"],
    "hints_text": ["hints_text"],
}
NOT_CARRIED_FROM_CANDIDATE: dict[str, str] = {}

# WorkItem fields that do not become TaskSpec fields, and why.
NOT_IN_TASK = {
    "head_commit": "the fix travels as `patch`; the merge commit is not needed to rebuild or grade the task",
    "test_files": "used to build the instance image and choose the test directives (which the task keeps)",
}


def candidate() -> Candidate:
    pull = PullRequest(number=41, title="Fix parsing", body="Closes #7", created_at=datetime(2024, 5, 2, 10, 30, tzinfo=timezone.utc),
                       merged_at=datetime(2024, 5, 3, tzinfo=timezone.utc), merge_commit_sha="m" * 40, base_sha="b" * 40,
                       head_sha="h" * 40, url="https://github.com/acme/calc/pull/41")
    issues = [Issue(7, "Parser drops signs", "parse('-1') returns 1", None, url="https://github.com/acme/calc/issues/7"),
              Issue(9, "Also exponents", "parse('1e-3') fails", None, url="https://github.com/acme/calc/issues/9")]
    split = SplitDiff(patch="--- a/calc.py\n+++ b/calc.py\n", test_patch="--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n",
                      code_files=["calc.py"], test_files=["tests/test_calc.py"], lines_changed=4)
    return Candidate("acme/calc", pull, issues, "base" + "0" * 36, "head" + "0" * 36, split, "keyword", "try parse(str(-1))")


def test_every_candidate_field_is_carried_or_declared() -> None:
    names = {f.name for f in dataclasses.fields(Candidate)}
    assert names == set(CARRIED_FROM_CANDIDATE) | set(NOT_CARRIED_FROM_CANDIDATE), (
        "a Candidate field was added or removed: carry it in WorkItem.from_candidate and list it here")
    work_fields = {f.name for f in dataclasses.fields(WorkItem)}
    assert {target for targets in CARRIED_FROM_CANDIDATE.values() for target in targets} == work_fields


def test_from_candidate_fills_every_work_item_field() -> None:
    item = WorkItem.from_candidate(candidate())
    assert item == WorkItem(
        instance_id="acme__calc-41", repo="acme/calc", pr_number=41, base_commit="base" + "0" * 36, head_commit="head" + "0" * 36,
        patch="--- a/calc.py\n+++ b/calc.py\n", test_patch="--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n",
        test_files=["tests/test_calc.py"],
        problem_statement="Parser drops signs\nparse('-1') returns 1\n\nAlso exponents\nparse('1e-3') fails",
        created_at="2024-05-02T10:30:00Z",
        source={"pull_request": "https://github.com/acme/calc/pull/41", "issue_7": "https://github.com/acme/calc/issues/7",
                "issue_9": "https://github.com/acme/calc/issues/9"},
        link="keyword", hints_text="try parse(str(-1))",
    )
    defaults = {f.name: f.default for f in dataclasses.fields(WorkItem) if f.default is not dataclasses.MISSING}
    assert all(getattr(item, name) != value for name, value in defaults.items()), "a field was left at its default"


def _sentinel(name: str, annotation: Any, n: int) -> Any:
    """A value for `name` that appears nowhere else, of the field's type."""
    origin = typing.get_origin(annotation)
    if annotation is str:
        return f"<{name}>"
    if annotation is int:
        return 1000 + n
    if origin is list:
        return [f"<{name}>"]
    if origin is dict:
        return {f"key_{name}": f"<{name}>"}
    raise AssertionError(f"teach _sentinel the type of WorkItem.{name}: {annotation!r}")


def _contains(value: Any, needle: Any) -> bool:
    if value == needle:
        return True
    if isinstance(value, dict):
        return any(_contains(v, needle) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains(v, needle) for v in value)
    return False


def test_every_work_item_field_reaches_the_task() -> None:
    hints = typing.get_type_hints(WorkItem)
    values = {f.name: _sentinel(f.name, hints[f.name], i) for i, f in enumerate(dataclasses.fields(WorkItem))}
    values["instance_id"] = "acme__calc-41"  # the id has a format
    values["created_at"] = "2024-05-02T10:30:00Z"  # and the date
    item = WorkItem(**values)
    group = EnvGroup("acme/calc", "<version>", "<env_commit>", None, "/mirrors/acme/calc.git", [item])
    env = BuiltEnv("envfarm/env:abc", InstallConfig(python="3.11", install=["<install>"]))
    task = task_spec(item, group, env, "envfarm/instance:def", "python", ["tests/test_calc.py"])
    dumped = task.model_dump()
    for name, value in values.items():
        if name in NOT_IN_TASK:
            continue
        found = value == "2024-05-02T10:30:00Z" and task.created_at == datetime(2024, 5, 2, 10, 30, tzinfo=timezone.utc)
        assert found or _contains(dumped, value), f"WorkItem.{name} does not reach the TaskSpec (carry it in task_spec or list it in NOT_IN_TASK)"
    assert (task.version, task.environment_setup_commit, task.image, task.install) == ("<version>", "<env_commit>", "envfarm/instance:def", env.install)
    assert task.extra["test_directives"] == ["tests/test_calc.py"]
    assert set(NOT_IN_TASK) <= set(values), "NOT_IN_TASK names a field WorkItem no longer has"
    assert isinstance(task, TaskSpec)


def test_built_env_from_a_stored_row_drops_the_env_commit_from_the_recipe() -> None:
    stored = {**InstallConfig(python="3.10", install=["uv pip install ."]).model_dump(), "environment_setup_commit": "c" * 40}
    env = BuiltEnv.from_stored("envfarm/env:abc", stored)
    assert env.image == "envfarm/env:abc" and env.install == InstallConfig(python="3.10", install=["uv pip install ."])
    assert "environment_setup_commit" not in env.install.model_dump()


@pytest.mark.parametrize("unit_kind", ["scan", "build", "validate"])
def test_unit_failed_records_against_its_unit(store, unit_kind: str) -> None:  # type: ignore[no-untyped-def]
    item = WorkItem.from_candidate(candidate())
    group = EnvGroup("acme/calc", "1.0+abc", item.base_commit, None, "/nowhere", [item])
    record_candidate(store, item.instance_id, item.repo, item.pr_number, "candidate", "pending", env_key=group.key)
    unit = {"scan": ScanUnit("acme/calc", ""), "build": BuildUnit(group), "validate": ValidateUnit(item, group)}[unit_kind]
    unit_failed(store, unit, RuntimeError("simulated bug"))
    summary = funnel(store, ["acme/calc"])
    if unit_kind == "scan":
        assert summary["repos"] == {"failed:internal_error": 1}
    else:
        assert summary["reasons"] == {"infra_error:internal_error": 1}
