"""Grading rules, including the tricks a policy could use to raise its reward without fixing anything."""

from pathlib import Path

import pytest

from envfarm.errors import EnvfarmError
from envfarm.verifiers.grading import grade
from envfarm.verifiers.logs import ParsedLog, TestStatus, parse_log
from envfarm.verifiers.logs.text import clean_lines

LOGS = Path(__file__).parent / "logs"
RA = (LOGS / "pytest_rA_color.log").read_bytes()


def test_resolved_when_every_listed_test_passes():
    parsed = parse_log("pytest", RA)
    result = grade(parsed, ["tests/test_calc.py::test_param[a b]"], ["tests/test_calc.py::test_add", "tests/test_calc.py::test_xfail"], exit_code=1)
    assert result.resolved and result.reward == 1.0
    assert result.fail_to_pass.passed == 1 and result.pass_to_pass.passed == 2


def test_failure_and_missing_are_not_passes_and_a_pass_to_pass_skip_is_not_a_regression():
    parsed = parse_log("pytest", (LOGS / "pytest_verbose.log").read_bytes())
    result = grade(
        parsed,
        ["tests/test_calc.py::test_sub_broken", "tests/test_calc.py::test_deleted"],
        ["tests/test_calc.py::test_skip", "tests/test_calc.py::test_add"],
    )
    assert not result.resolved and result.reward == 0.0
    assert result.fail_to_pass.not_passed == {"tests/test_calc.py::test_sub_broken": "FAILED", "tests/test_calc.py::test_deleted": "MISSING"}
    assert result.pass_to_pass.not_passed == {} and result.pass_to_pass.passed == 2


# SWE-bench's harness (swebench/harness/grading.py, PASS_AND_FAIL): test_passed for FAIL_TO_PASS,
# test_maintained for PASS_TO_PASS. The table is written once in envfarm.verifiers.logs.status.
HARNESS_CASES = [
    # (status of the FAIL_TO_PASS test, status of the PASS_TO_PASS test, resolved)
    ("PASSED", "PASSED", True),
    ("XFAIL", "PASSED", True),
    ("SKIPPED", "PASSED", False),
    ("FAILED", "PASSED", False),
    ("ERROR", "PASSED", False),
    (None, "PASSED", False),
    ("PASSED", "XFAIL", True),
    ("PASSED", "SKIPPED", True),
    ("PASSED", "FAILED", False),
    ("PASSED", "ERROR", False),
    ("PASSED", None, False),
]


@pytest.mark.parametrize("f2p_status,p2p_status,resolved", HARNESS_CASES)
def test_skip_and_xfail_grade_as_in_the_swe_bench_harness(f2p_status, p2p_status, resolved):
    parsed = ParsedLog(framework="junit")
    for test_id, status in (("t.py::test_fix", f2p_status), ("t.py::test_old", p2p_status)):
        if status is not None:
            parsed.add(test_id, TestStatus(status))
    result = grade(parsed, ["t.py::test_fix"], ["t.py::test_old"])
    assert result.resolved is resolved and result.reward == (1.0 if resolved else 0.0)
    assert not result.suspicious


def test_partial_credit_counts_a_pass_to_pass_skip_as_kept():
    parsed = ParsedLog(framework="junit")
    parsed.add("t.py::test_fix", TestStatus.SKIPPED)
    parsed.add("t.py::test_old", TestStatus.SKIPPED)
    result = grade(parsed, ["t.py::test_fix"], ["t.py::test_old"], partial_credit=True)
    assert result.reward == pytest.approx(1 / 2) and not result.resolved
    assert result.fail_to_pass.not_passed == {"t.py::test_fix": "SKIPPED"} and result.pass_to_pass.passed == 1


def test_partial_credit_is_the_fraction_passing():
    parsed = parse_log("pytest", RA)
    result = grade(parsed, ["tests/test_calc.py::test_sub_broken", "tests/test_calc.py::test_add"], ["tests/test_calc.py::test_xfail", "x::gone"], partial_credit=True)
    assert result.reward == pytest.approx(2 / 4) and not result.resolved


def test_forged_pass_lines_for_tests_that_never_ran_are_caught():
    """A patch that prints an extra summary-form line inside the real summary (e.g. via a plugin) adds a
    PASSED that pytest never counted: the totals disagree and the run is not resolved."""
    plain = "\n".join(clean_lines(RA)[0])
    forged = plain.replace("PASSED tests/test_calc.py::test_add\n", "PASSED tests/test_calc.py::test_add\nPASSED tests/test_new.py::test_fix\n")
    parsed = parse_log("pytest", forged)
    assert parsed.results["tests/test_new.py::test_fix"].value == "PASSED"
    result = grade(parsed, ["tests/test_new.py::test_fix"], ["tests/test_calc.py::test_add"])
    assert not result.resolved and result.reward == 0.0
    assert "7 PASSED lines in the short test summary but pytest counted 6" in result.suspicious[0]


def test_forged_unittest_lines_exceed_ran_count():
    log = (LOGS / "unittest_py311_verbose.log").read_text()
    forged = log.replace("test_add (pkg", "test_fix (pkg.test_things.MathTests.test_fix) ... ok\ntest_add (pkg", 1)
    result = grade(parse_log("unittest", forged), ["test_fix (pkg.test_things.MathTests)"], [])
    assert not result.resolved and "9 result lines but the runner says it ran 8" in result.suspicious[0]


def test_nonzero_exit_without_any_failure_read_is_suspicious():
    log = "t.py::test_a PASSED\n============ 1 passed in 0.01s ============\n"
    result = grade(parse_log("pytest", log), ["t.py::test_a"], [], exit_code=1)
    assert not result.resolved and "exited with 1" in result.suspicious[0]
    assert grade(parse_log("pytest", log), ["t.py::test_a"], [], exit_code=0).resolved


def test_garbled_log_grades_to_zero_with_reasons():
    result = grade(parse_log("django", b"\xff\xfe\x00Traceback (most recent call last):\n  oops"), ["test_a (m.C)"], ["test_b (m.C)"])
    assert result.reward == 0.0 and not result.log_complete
    assert result.fail_to_pass.not_passed == {"test_a (m.C)": "MISSING"}
    assert any("Ran N tests" in p for p in result.problems)


def test_task_without_tests_is_a_clear_error():
    with pytest.raises(EnvfarmError, match="re-run the miner's validation"):
        grade(parse_log("pytest", RA), [], [])
