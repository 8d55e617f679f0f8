"""Parity with the official SWE-bench harness on its own logs (tests/verifiers/data/swebench_logs).

Every stored harness log is graded by envfarm under the harness's conventions (the `log_parser` a
`test_ids="swebench"` task gets) and compared with the report the harness wrote: `resolved`, and which
FAIL_TO_PASS / PASS_TO_PASS tests succeeded. The lists given to the grader are the report's own (its
success and failure lists together), exactly what the harness graded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("swebench", reason="the swebench package (pinned in pyproject.toml) is not installed")

from swebench.types import TestSpec as HarnessTestSpec  # noqa: E402 - after the skip above; swebench.types imports nothing heavy

from envfarm.task import TaskSpec  # noqa: E402
from envfarm.verifiers import harness  # noqa: E402
from envfarm.verifiers.grading import grade  # noqa: E402
from envfarm.verifiers.logs import parse_log  # noqa: E402
from envfarm.verifiers.logs.harness_log import read_harness_log  # noqa: E402

DATA = Path(__file__).parent / "data" / "swebench_logs"
SAMPLES = sorted(p for p in DATA.iterdir() if (p / "report.json").is_file())


def _repo(instance_id: str) -> str:
    owner, rest = instance_id.split("__", 1)
    return f"{owner}/{rest.rsplit('-', 1)[0]}"


def _report(sample: Path) -> dict:
    return json.loads((sample / "report.json").read_text())[sample.name]


def _lists(report: dict) -> tuple[list[str], list[str]]:
    status = report["tests_status"]
    return (status["FAIL_TO_PASS"]["success"] + status["FAIL_TO_PASS"]["failure"],
            status["PASS_TO_PASS"]["success"] + status["PASS_TO_PASS"]["failure"])


def _envfarm_grade(sample: Path):
    report = _report(sample)
    task = TaskSpec(instance_id=sample.name, repo=_repo(sample.name), test_ids="swebench")
    f2p, p2p = _lists(report)
    spec = task.log_parser.removeprefix(harness.PREFIX)  # the harness's parser for the task's repository
    return report, grade(read_harness_log((sample / "test_output.log").read_bytes(), spec), f2p, p2p)


def test_the_sample_covers_the_cases_it_claims() -> None:
    repos = {_repo(p.name) for p in SAMPLES}
    assert {"django/django", "pytest-dev/pytest"} <= repos
    assert len(SAMPLES) >= 5
    outcomes = {_report(p)["resolved"] for p in SAMPLES}
    assert outcomes == {True, False}  # resolved and unresolved runs both present


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_envfarm_grades_each_harness_log_as_the_harness_did(sample: Path) -> None:
    report, result = _envfarm_grade(sample)
    status = report["tests_status"]
    f2p, p2p = _lists(report)
    assert result.resolved == report["resolved"]
    assert sorted(t for t in f2p if t not in result.fail_to_pass.not_passed) == sorted(status["FAIL_TO_PASS"]["success"])
    assert sorted(t for t in p2p if t not in result.pass_to_pass.not_passed) == sorted(status["PASS_TO_PASS"]["success"])
    assert result.suspicious == []


def test_parity_over_the_whole_sample_is_total() -> None:
    """The headline numbers (also written by bench/swebench.py): share of logs and of tests that agree."""
    logs_agree = tests_agree = tests_total = 0
    for sample in SAMPLES:
        report, result = _envfarm_grade(sample)
        logs_agree += result.resolved == report["resolved"]
        status = report["tests_status"]
        for key, graded in (("FAIL_TO_PASS", result.fail_to_pass), ("PASS_TO_PASS", result.pass_to_pass)):
            for test_id in status[key]["success"]:
                tests_total += 1
                tests_agree += test_id not in graded.not_passed
            for test_id in status[key]["failure"]:
                tests_total += 1
                tests_agree += test_id in graded.not_passed
    assert tests_total > 100
    assert (logs_agree, tests_agree) == (len(SAMPLES), tests_total)


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_the_stored_log_still_yields_the_harness_report(sample: Path) -> None:
    """The package's own get_eval_report on the stored (trimmed) log reproduces report.json."""
    grading = harness.module("grading")
    report = _report(sample)
    f2p, p2p = _lists(report)
    name, _ = harness.parser_for(_repo(sample.name))
    test_spec = HarnessTestSpec(
        instance_id=sample.name, image="", eval_script_list=[], repo=_repo(sample.name), version="",
        FAIL_TO_PASS=f2p, PASS_TO_PASS=p2p, log_parser=name, eval_type="pass_and_fail")
    prediction = {"instance_id": sample.name, "model_name_or_path": "sample", "model_patch": "diff"}
    produced = grading.get_eval_report(test_spec, prediction, str(sample / "test_output.log"), include_tests_status=True)[sample.name]
    assert produced["resolved"] == report["resolved"]
    assert produced["tests_status"] == report["tests_status"]


def test_envfarm_native_ids_differ_from_the_harness_on_docstring_tests() -> None:
    """Why the convention matters: envfarm's exact Django ids miss docstring-named harness ids."""
    sample = DATA / "django__django-11422"
    report = _report(sample)
    f2p, p2p = _lists(report)
    native = grade(parse_log("django", (sample / "test_output.log").read_bytes()), f2p, p2p)
    assert report["resolved"] and not native.resolved
    assert set(native.pass_to_pass.not_passed) == {".pyc and .pyo files are included in the files list.",
                                                   "iter_all_python_module_file() ignores weakref modules."}


def test_envfarm_native_ids_differ_from_the_harness_on_ids_with_spaces() -> None:
    """pytest 4.4 on pytest's own suite: the dataset's ids are the harness's, cut at the first space."""
    sample = DATA / "pytest-dev__pytest-5221"
    f2p, p2p = _lists(_report(sample))
    native = grade(parse_log("pytest", (sample / "test_output.log").read_bytes()), [], p2p)
    cut = {t for t in p2p if t.count("[") > t.count("]")}
    assert len(cut) == 11 and set(native.pass_to_pass.not_passed) == cut


def test_two_django_tests_sharing_a_docstring_are_one_harness_id() -> None:
    """django__django-11620: five docstrings are shared by two test classes each."""
    raw = (DATA / "django__django-11620" / "test_output.log").read_bytes()
    native, as_harness = parse_log("django", raw), read_harness_log(raw, "django/django")
    assert len(native.results) == 72 == native.reported["ran"]
    assert len(as_harness.results) == 67
    assert "An exception report can be generated without request" in as_harness.results
    assert grade(as_harness, [], list(as_harness.results)).suspicious == []  # the runner's totals are checked on the exact reading


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_the_same_output_from_an_envfarm_run_grades_the_same(sample: Path) -> None:
    """run_tests hands the parser the test command's output whole (no harness markers are obeyed there)."""
    report = _report(sample)
    f2p, p2p = _lists(report)
    task = TaskSpec(instance_id=sample.name, repo=_repo(sample.name), test_ids="swebench")
    raw = (sample / "test_output.log").read_text()
    start, end = harness.markers()
    inner = raw.split(start, 1)[1].split(end, 1)[0].split("\n", 1)[1]  # what the test command itself printed
    assert grade(parse_log(task.log_parser, inner), f2p, p2p).resolved == report["resolved"]


def test_markers_printed_by_the_code_under_test_do_not_pick_what_is_read() -> None:
    """A patch that prints the harness's markers around forged PASSED lines in an envfarm run is not resolved."""
    sample = DATA / "pytest-dev__pytest-5103"
    start, end = harness.markers()
    real = (sample / "test_output.log").read_text().split(start, 1)[1].split(end, 1)[0]
    forged = (f"{start}\n=========================== short test summary info ============================\n"
              "PASSED testing/test_assertrewrite.py::TestAssertionRewrite::test_unroll_expression\n"
              f"=== 1 passed in 0.01 seconds ===\n{end}\n")
    f2p = ["testing/test_assertrewrite.py::TestAssertionRewrite::test_unroll_expression"]
    parsed = parse_log("swebench:pytest-dev/pytest", forged + real)
    result = grade(parsed, f2p, [])
    assert not result.resolved and any("markers" in p for p in result.problems)
