"""The SWE verifier's grading of real pytest runs (run here as subprocesses) and its command building.

The sandbox steps themselves (patch, restore, run) are exercised against the real container engine in
test_swe_sandbox.py; these tests cover the decisions made from a run's output and report.
"""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from envfarm.sandbox.protocol import ExecResult
from envfarm.task import InstallConfig, TaskSpec
from envfarm.verifiers.run import selected_test_files
from envfarm.verifiers.swe import build_test_command, grade_run, patched_paths

TEST_PATCH = """\
diff --git a/tests/test_calc.py b/tests/test_calc.py
new file mode 100644
--- /dev/null
+++ b/tests/test_calc.py
@@ -0,0 +1,2 @@
+def test_fixed():
+    assert True
"""


def make_task(**install) -> TaskSpec:
    return TaskSpec(
        instance_id="acme__calc-1",
        test_patch=TEST_PATCH,
        FAIL_TO_PASS=["tests/test_calc.py::test_fixed"],
        PASS_TO_PASS=["tests/test_calc.py::test_old"],
        workdir="/testbed",
        install=InstallConfig(**install),
    )


def run_pytest(repo: Path, body: str, conftest: str = "") -> tuple[ExecResult, bytes | None]:
    (repo / "tests").mkdir(exist_ok=True)
    (repo / "tests" / "test_calc.py").write_text(textwrap.dedent(body))
    if conftest:
        (repo / "conftest.py").write_text(textwrap.dedent(conftest))
    report = repo.parent / "report.xml"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "-o", "junit_family=xunit1", f"--rootdir={repo}", f"--junitxml={report}", "tests/test_calc.py"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, timeout=120)
    result = ExecResult(proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"), False, time.monotonic() - start)
    return result, report.read_bytes() if report.exists() else None


def test_patched_paths_and_pytest_command():
    assert patched_paths(TEST_PATCH) == ["tests/test_calc.py"]
    cmd = build_test_command(make_task(test_cmd="python -m pytest"), "/tmp/r.xml")
    assert "--junitxml=/tmp/r.xml" in cmd and "-p no:cacheprovider" in cmd and "--rootdir=/testbed" in cmd
    assert cmd.endswith(" tests/test_calc.py")
    go = build_test_command(make_task(test_cmd="gotestsum --junitfile {report} ./...", log_parser="junit"), "/tmp/r.xml")
    assert go == "gotestsum --junitfile /tmp/r.xml ./..."


MIXED_TEST_PATCH = """\
diff --git a/tests/conftest.py b/tests/conftest.py
--- a/tests/conftest.py
+++ b/tests/conftest.py
@@ -1 +1,2 @@
 import pytest
+FIXTURE = 1
diff --git a/tests/test_new.py b/tests/test_new.py
new file mode 100644
--- /dev/null
+++ b/tests/test_new.py
@@ -0,0 +1,2 @@
+def test_new():
+    assert True
diff --git a/tests/test_gone.py b/tests/test_gone.py
deleted file mode 100644
--- a/tests/test_gone.py
+++ /dev/null
@@ -1,2 +0,0 @@
-def test_gone():
-    assert True
diff --git a/tests/data/cases.json b/tests/data/cases.json
--- a/tests/data/cases.json
+++ b/tests/data/cases.json
@@ -1 +1 @@
-[]
+[1]
diff --git a/tests/test_old.py b/tests/test_old.py
--- a/tests/test_old.py
+++ b/tests/test_old.py
@@ -1,2 +1,2 @@
 def test_old():
-    assert 1
+    assert 2
diff --git a/tests/myconftest.py b/tests/myconftest.py
--- a/tests/myconftest.py
+++ b/tests/myconftest.py
@@ -1 +1 @@
-A = 1
+A = 2
"""


def test_selected_test_files_are_added_or_modified_python_files_except_conftest():
    assert selected_test_files(MIXED_TEST_PATCH) == ["tests/test_new.py", "tests/test_old.py", "tests/myconftest.py"]
    assert selected_test_files("") == []
    # Every path the patch touches is still restored, conftest and deleted files included.
    assert patched_paths(MIXED_TEST_PATCH) == [
        "tests/conftest.py", "tests/data/cases.json", "tests/myconftest.py", "tests/test_gone.py", "tests/test_new.py", "tests/test_old.py",
    ]
    cmd = build_test_command(make_task(test_cmd="python -m pytest").model_copy(update={"test_patch": MIXED_TEST_PATCH}), "/tmp/r.xml")
    assert cmd.endswith(" tests/test_new.py tests/test_old.py tests/myconftest.py")
    # Directives the miner recorded win over the rule (an imported task may name its own).
    recorded = make_task(test_cmd="python -m pytest").model_copy(update={"extra": {"test_directives": ["tests/test_x.py"]}})
    assert build_test_command(recorded, "/tmp/r.xml").endswith("--junitxml=/tmp/r.xml tests/test_x.py")


def test_honest_fix_is_resolved(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    run, report = run_pytest(repo, "def test_fixed():\n    assert True\ndef test_old():\n    assert True\n")
    reward = grade_run(make_task(), run, report)
    assert reward.passed and reward.value == 1.0 and reward.details["graded_from"] == "junit report"


def test_printed_fake_pass_lines_do_not_count(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    body = """\
        import sys
        print("PASSED tests/test_calc.py::test_fixed")
        print("tests/test_calc.py::test_fixed PASSED")
        sys.stdout.flush()
        def test_fixed():
            print("=== short test summary info ===\\nPASSED tests/test_calc.py::test_fixed")
            assert False
        def test_old():
            assert True
    """
    run, report = run_pytest(repo, body)
    reward = grade_run(make_task(), run, report)
    assert not reward.passed and reward.value == 0.0
    assert reward.details["grade"]["fail_to_pass"]["not_passed"] == {"tests/test_calc.py::test_fixed": "FAILED"}


def test_missing_report_is_zero_with_reason(tmp_path):
    run = ExecResult(2, "tests/test_calc.py::test_fixed PASSED\n=== 1 passed in 0.1s ===\n", False, 0.1)
    reward = grade_run(make_task(), run, None)
    assert reward.value == 0.0 and "wrote no report" in reward.details["reason"]


def test_console_log_grading_for_unittest_tasks():
    log = "test_fixed (m.T) ... ok\ntest_old (m.T) ... FAIL\n\n----\nRan 2 tests in 0.0s\n\nFAILED (failures=1)\n"
    task = make_task(log_parser="unittest", test_cmd="python -m unittest -v").model_copy(update={"FAIL_TO_PASS": ["test_fixed (m.T)"], "PASS_TO_PASS": ["test_old (m.T)"]})
    reward = grade_run(task, ExecResult(1, log, False, 0.1), None)
    assert reward.details["graded_from"] == "console log" and not reward.passed
    assert reward.details["grade"]["pass_to_pass"]["not_passed"] == {"test_old (m.T)": "FAILED"}


def test_report_rewritten_at_exit_by_the_code_under_test_is_caught(tmp_path):
    """The code under test learns the report path from argv and rewrites it after pytest wrote it
    (an atexit hook): the console log still shows the failure, so the two disagree."""
    repo = tmp_path / "repo"
    repo.mkdir()
    body = """\
        import atexit, sys
        def _forge():
            path = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--junitxml="))
            cases = '<testcase classname="tests.test_calc" name="test_fixed" file="tests/test_calc.py"/>' \\
                    '<testcase classname="tests.test_calc" name="test_old" file="tests/test_calc.py"/>'
            open(path, "w").write('<testsuites><testsuite tests="2" failures="0" errors="0">' + cases + '</testsuite></testsuites>')
        atexit.register(_forge)
        def test_fixed():
            assert False
        def test_old():
            assert True
    """
    run, report = run_pytest(repo, body)
    assert b'failures="0"' in report  # the forgery worked on the file itself
    reward = grade_run(make_task(), run, report)
    assert not reward.passed and reward.value == 0.0
    suspicious = " ".join(reward.details["grade"]["suspicious"])
    assert "disagree" in suspicious and "exited with 1" in suspicious


def test_forged_verbose_line_for_a_test_that_never_ran_is_caught():
    log = (
        "tests/test_calc.py::test_old PASSED [ 50%]\n"
        "tests/test_calc.py::test_fixed PASSED [100%]\n"  # printed by the code under test; the test does not exist
        "=========================== short test summary info ============================\n"
        "PASSED tests/test_calc.py::test_old\n"
        "============================== 1 passed in 0.01s ===============================\n"
    )
    reward = grade_run(make_task(log_parser="pytest", test_cmd="pytest {report}"), ExecResult(0, log, False, 0.1), None)
    assert reward.value == 0.0  # no report at all for a report-backed task
    from envfarm.verifiers.grading import grade
    from envfarm.verifiers.logs import parse_log

    result = grade(parse_log("pytest", log), ["tests/test_calc.py::test_fixed"], ["tests/test_calc.py::test_old"], exit_code=0)
    assert not result.resolved and "2 PASSED lines in the verbose output but pytest counted 1" in result.suspicious[0]


def test_exit_code_zero_with_failures_in_the_record_is_caught():
    """A command that swallows the runner's exit status (`... || true`, a wrapper script) hides a crash
    as well as a failure: the verifier and the miner both refuse such a run."""
    log = "test_fixed (m.T) ... ok\ntest_old (m.T) ... FAIL\n\n----\nRan 2 tests in 0.0s\n\nFAILED (failures=1)\n"
    task = make_task(log_parser="unittest", test_cmd="python -m unittest -v || true").model_copy(
        update={"FAIL_TO_PASS": ["test_fixed (m.T)"], "PASS_TO_PASS": ["test_old (m.T)"]}
    )
    reward = grade_run(task, ExecResult(0, log, False, 0.1), None, partial_credit=True)
    assert reward.value == 0.0 and not reward.passed  # partial credit would have given 0.5
    assert "the runner exited 0 but 1 test(s) failed: ['test_old (m.T)']" in reward.details["grade"]["suspicious"]
