"""Exported tasks graded by the swebench package itself agree with envfarm's grading of the same run.

An envfarm task (exact ids, from envfarm's own parser) is exported; the package's `get_logs_eval` and
`get_eval_tests_report` then grade the real harness log with the exported lists and the exported
`log_parser`, and must resolve exactly when envfarm's native grading of that log does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("swebench", reason="the swebench package (pinned in pyproject.toml) is not installed")

from swebench.types import TestSpec as HarnessTestSpec  # noqa: E402 - after the skip above

from envfarm.task import InstallConfig, TaskSpec  # noqa: E402
from envfarm.tasks.export import export_row  # noqa: E402
from envfarm.verifiers import harness  # noqa: E402
from envfarm.verifiers.grading import grade  # noqa: E402
from envfarm.verifiers.logs import parse_log  # noqa: E402

DATA = Path(__file__).parent / "data" / "swebench_logs"


def _harness_resolves(row: dict, log: Path) -> tuple[bool, dict]:
    grading = harness.module("grading")
    f2p, p2p = json.loads(row["FAIL_TO_PASS"]), json.loads(row["PASS_TO_PASS"])
    spec = HarnessTestSpec(instance_id=row["instance_id"], image="", eval_script_list=[], repo=row["repo"], version="",
                           FAIL_TO_PASS=f2p, PASS_TO_PASS=p2p, log_parser=row["log_parser"], eval_type="pass_and_fail")
    status_map, found = grading.get_logs_eval(spec, str(log))
    report = grading.get_eval_tests_report(status_map, {"FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p})
    return found and grading.get_resolution_status(report) == "RESOLVED_FULL", report


def _native_task(instance: str, repo: str, parser: str, f2p: list[str], p2p: list[str]) -> TaskSpec:
    return TaskSpec(instance_id=instance, repo=repo, FAIL_TO_PASS=f2p, PASS_TO_PASS=p2p, install=InstallConfig(log_parser=parser))


@pytest.mark.parametrize("with_failing", [False, True], ids=["resolved", "unresolved"])
def test_pytest_ids_with_spaces_export_to_what_the_harness_reads(with_failing: bool) -> None:
    log = DATA / "pytest-dev__pytest-5221" / "test_output.log"
    native = parse_log("pytest", log.read_bytes())
    passing = sorted(t for t, s in native.results.items() if s.value == "PASSED")
    f2p = ["testing/python/fixtures.py::TestShowFixtures::test_show_fixtures"]
    if with_failing:
        f2p.append("testing/python/fixtures.py::TestShowFixtures::test_show_fixtures_verbose")
    p2p = [t for t in passing if t not in f2p]
    task = _native_task("pytest-dev__pytest-5221", "pytest-dev/pytest", "pytest", f2p, p2p)
    envfarm = grade(native, task.FAIL_TO_PASS, task.PASS_TO_PASS)
    row = export_row(task)
    exported = json.loads(row["PASS_TO_PASS"])
    assert any(t.endswith("test_setup[session--fspath") for t in exported)  # cut at the first space, as the harness cuts
    assert row["log_parser"] == "parse_log_pytest" and row["test_ids"] == "swebench"
    resolved, report = _harness_resolves(row, log)
    assert envfarm.resolved is (not with_failing)
    assert resolved is envfarm.resolved
    assert len(report["PASS_TO_PASS"]["success"]) == len(exported)


def test_django_ids_export_unchanged_and_grade_the_same() -> None:
    log = DATA / "django__django-11283" / "test_output.log"
    native = parse_log("django", log.read_bytes())
    f2p = ["test_migrate_with_existing_target_permission (auth_tests.test_migrations.ProxyModelWithSameAppLabelTests)"]
    p2p = sorted(t for t, s in native.results.items() if s.value == "PASSED")
    task = _native_task("django__django-11283", "django/django", "django", f2p, p2p)
    row = export_row(task)
    assert json.loads(row["PASS_TO_PASS"]) == p2p and row["log_parser"] == "parse_log_django"
    resolved, report = _harness_resolves(row, log)
    assert resolved is grade(native, f2p, p2p).resolved is False
    assert report["FAIL_TO_PASS"]["failure"] == f2p and len(report["PASS_TO_PASS"]["success"]) == len(p2p)


def test_a_repository_unknown_to_the_harness_exports_with_the_parser_for_its_runner() -> None:
    task = _native_task("acme__widgets-1", "acme/widgets", "pytest", ["tests/test_w.py::test_a[x y]"], ["tests/test_w.py::test_b"])
    row = export_row(task)
    assert row["log_parser"] == "parse_log_pytest"
    assert json.loads(row["FAIL_TO_PASS"]) == ["tests/test_w.py::test_a[x"]


def test_imported_tasks_keep_their_ids_and_parser() -> None:
    task = TaskSpec(instance_id="psf__requests-1", repo="psf/requests", test_ids="swebench", FAIL_TO_PASS=["t.py::test_p[/x.py]"])
    row = export_row(task)
    assert json.loads(row["FAIL_TO_PASS"]) == ["t.py::test_p[/x.py]"] and row["log_parser"] == "parse_log_pytest_options"
