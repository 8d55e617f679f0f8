"""SweVerifier and the `run_tests` under it end to end in a real container: patches applied with the
sandbox's own `apply_patch`, tests run by pytest inside the container, results read from its JUnit
report and cross-checked with the console log and the exit code.

The base image has no pytest and the sandbox has no network, so the host venv's pure-Python pytest
packages are copied in (same Python minor version as bookworm's python3).
"""

from __future__ import annotations

import importlib.metadata
import io
import tarfile
from pathlib import Path

import pytest

from envfarm.errors import PatchError
from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.validate import RunOutcome, compare
from envfarm.verifiers.logs.status import TestStatus
from envfarm.verifiers.run import NO_REPORT, TestPatchError, run_tests
from envfarm.verifiers.swe import SweVerifier

pytestmark = pytest.mark.engine

PYLIB = "/tmp/pylib"
WORKDIR = "/tmp/testbed"
BASE_FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
    "tests/__init__.py": "",
    "tests/test_calc.py": "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n",
}
TEST_PATCH = """\
diff --git a/tests/test_calc.py b/tests/test_calc.py
--- a/tests/test_calc.py
+++ b/tests/test_calc.py
@@ -1,5 +1,9 @@
-from calc import mul
+from calc import add, mul
 
 
 def test_mul():
     assert mul(2, 3) == 6
+
+
+def test_add():
+    assert add(2, 3) == 5
"""
GOLD_PATCH = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,5 +1,5 @@
 def add(a, b):
-    return a - b
+    return a + b
 
 
 def mul(a, b):
"""


def _pytest_tarball() -> bytes:
    import _pytest
    import iniconfig
    import packaging
    import pluggy
    import pygments
    import pytest as pytest_pkg

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for module in (_pytest, pytest_pkg, pluggy, iniconfig, packaging, pygments):
            root = Path(module.__file__).parent
            tar.add(root, arcname=root.name, filter=lambda info: None if "__pycache__" in info.name else info)
        tar.add(Path(pytest_pkg.__file__).parent.parent / "py.py", arcname="py.py")
        for dist in ("pytest", "pluggy", "iniconfig", "packaging", "pygments"):  # versions are read from metadata
            info = Path(str(importlib.metadata.distribution(dist)._path))  # noqa: SLF001 - the dist-info folder
            tar.add(info, arcname=info.name)
    return buffer.getvalue()


@pytest.fixture
def repo_sandbox(docker_sandbox):
    sb = docker_sandbox
    sb.write_file("/tmp/pylib.tar", _pytest_tarball())
    assert sb.exec(f"mkdir -p {PYLIB} && tar -C {PYLIB} -xf /tmp/pylib.tar", timeout=60).ok
    for path, text in BASE_FILES.items():
        sb.write_file(f"{WORKDIR}/{path}", text)
    made = sb.exec(
        "git init -q && git add -A && git -c user.email=t@e -c user.name=t commit -qm base && git rev-parse HEAD",
        workdir=WORKDIR,
        timeout=60,
    )
    assert made.ok, made.output
    return sb, made.output.strip().splitlines()[-1]


def _task(base: str) -> TaskSpec:
    return TaskSpec(
        instance_id="acme__calc-7",
        base_commit=base,
        patch=GOLD_PATCH,
        test_patch=TEST_PATCH,
        FAIL_TO_PASS=["tests/test_calc.py::test_add"],
        PASS_TO_PASS=["tests/test_calc.py::test_mul"],
        workdir=WORKDIR,
        install=InstallConfig(test_cmd=f"PYTHONPATH={PYLIB} python3 -m pytest"),
    )


def test_gold_patch_is_resolved(repo_sandbox):
    sb, base = repo_sandbox
    reward = SweVerifier(timeout=120).verify(_task(base), sb, GOLD_PATCH)
    assert reward.passed and reward.value == 1.0, reward.details
    assert reward.details["graded_from"] == "junit report"


def test_patch_that_does_not_apply_scores_zero_with_the_hunk(repo_sandbox):
    sb, base = repo_sandbox
    bad = GOLD_PATCH.replace("-    return a - b", "-    return a * b")
    reward = SweVerifier(timeout=120).verify(_task(base), sb, bad)
    assert reward.value == 0.0 and "does not apply" in reward.details["reason"]
    assert "@@" in reward.details["hunk"]


def test_editing_or_deleting_the_tests_does_not_help(repo_sandbox):
    sb, base = repo_sandbox
    # Without fixing calc.py: add the F2P test in a form that passes, and delete nothing else.
    cheat = TEST_PATCH.replace("+    assert add(2, 3) == 5", "+    assert True")
    reward = SweVerifier(timeout=120).verify(_task(base), sb, cheat)
    assert not reward.passed and reward.value == 0.0
    assert reward.details["grade"]["fail_to_pass"]["not_passed"] == {"tests/test_calc.py::test_add": "FAILED"}
    assert "tests/test_calc.py" in reward.details["restored"]


def test_tampered_runner_config_and_conftest_are_reverted(repo_sandbox):
    sb, base = repo_sandbox
    # A conftest that turns every failure into a pass, and a pytest.ini that deselects the new test.
    sb.write_file(
        f"{WORKDIR}/conftest.py",
        "import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n    report = outcome.get_result()\n    report.outcome = 'passed'\n",
    )
    sb.write_file(f"{WORKDIR}/pytest.ini", "[pytest]\naddopts = -k 'not test_add'\n")
    reward = SweVerifier(timeout=120).verify(_task(base), sb, patch=None)
    assert not reward.passed and reward.value == 0.0
    assert reward.details["reverted_runner_config"] == ["conftest.py", "pytest.ini"]
    assert reward.details["grade"]["fail_to_pass"]["not_passed"] == {"tests/test_calc.py::test_add": "FAILED"}
    assert sb.exec("test ! -e conftest.py && test ! -e pytest.ini", workdir=WORKDIR).ok


def test_run_tests_before_and_after_the_fix_is_what_validation_compares(repo_sandbox):
    sb, base = repo_sandbox
    task = _task(base)
    before = run_tests(sb, task, "", timeout=120)
    assert before.source == "junit report" and before.trustworthy, before.problems
    assert before.results == {"tests/test_calc.py::test_add": TestStatus.FAILED, "tests/test_calc.py::test_mul": TestStatus.PASSED}
    assert before.exit_code == 1 and not before.timed_out and before.restored == ["tests/test_calc.py"]
    assert "--junitxml=/tmp/envfarm-report-" in before.command and before.command.endswith(" tests/test_calc.py")
    report = before.command.split("--junitxml=")[1].split()[0]
    assert sb.exec(f"test ! -e {report}").ok  # read, then removed: the next run cannot find it
    # Same sandbox, now with the gold patch: the test file is restored and test_patch re-applied.
    after = run_tests(sb, task, GOLD_PATCH, timeout=120)
    assert after.trustworthy and after.exit_code == 0, after.problems
    assert set(after.results.values()) == {TestStatus.PASSED}
    f2p, p2p, flaky = compare([RunOutcome("before", before)], [RunOutcome("after", after)])
    assert (f2p, p2p, flaky) == (task.FAIL_TO_PASS, task.PASS_TO_PASS, [])


def test_run_tests_catches_a_report_rewritten_by_the_code_under_test(repo_sandbox):
    sb, base = repo_sandbox
    forged = (
        '<testsuites><testsuite tests="2" failures="0" errors="0">'
        '<testcase classname="tests.test_calc" name="test_add" file="tests/test_calc.py"/>'
        '<testcase classname="tests.test_calc" name="test_mul" file="tests/test_calc.py"/></testsuite></testsuites>'
    )
    cheat = f"""\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,3 +1,12 @@
+import atexit
+import sys
+
+
+def _forge():
+    path = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--junitxml="))
+    open(path, "w").write({forged!r})
+
+atexit.register(_forge)
 def add(a, b):
     return a - b
 
"""
    run = run_tests(sb, _task(base), cheat, timeout=120)
    assert run.results["tests/test_calc.py::test_add"] == TestStatus.PASSED  # the forgery reached the report
    assert not run.trustworthy
    problems = " ".join(run.problems)
    assert "disagree" in problems and "exited with 1" in problems


def test_run_tests_without_a_report_is_untrustworthy_not_a_pass(repo_sandbox):
    sb, base = repo_sandbox
    # A "runner" that prints a pass and exits 0 but never writes the report it was asked for.
    task = _task(base).model_copy(update={"install": InstallConfig(test_cmd="python3 -c 'print(\"tests/test_calc.py::test_add PASSED\")'")})
    run = run_tests(sb, task, GOLD_PATCH, timeout=120)
    assert run.source == "nothing" and run.results == {} and run.problems == [NO_REPORT] and not run.trustworthy
    assert "test_add PASSED" in run.log_tail
    reward = SweVerifier(timeout=120).verify(task, sb, None)
    assert reward.value == 0.0 and reward.details["graded_from"] == "nothing"


def test_run_tests_reports_a_timeout_instead_of_raising(repo_sandbox):
    sb, base = repo_sandbox
    task = _task(base).model_copy(update={"install": InstallConfig(test_cmd="sleep 600 #")})
    run = run_tests(sb, task, "", timeout=3)
    assert run.timed_out and run.checked_exit_code is None and not run.trustworthy


def test_run_tests_tells_a_bad_candidate_patch_from_a_broken_task(repo_sandbox):
    sb, base = repo_sandbox
    with pytest.raises(PatchError):
        run_tests(sb, _task(base), GOLD_PATCH.replace("-    return a - b", "-    return a * b"), timeout=120)
    broken = _task(base).model_copy(update={"test_patch": TEST_PATCH.replace("     assert mul(2, 3) == 6", "     assert mul(2, 3) == 7")})
    with pytest.raises(TestPatchError, match="test_patch does not apply") as info:
        run_tests(sb, broken, "", timeout=120)
    assert not isinstance(info.value, PatchError)  # the verifier must not score a broken task as the agent's 0


def test_run_tests_reverts_runner_config_a_fix_changes(repo_sandbox):
    sb, base = repo_sandbox
    # A "fix" that also deselects the failing test through a new pytest.ini: the same steps the verifier
    # takes undo it, so validation can never see a FAIL_TO_PASS that grading would not.
    sneaky = (
        "diff --git a/pytest.ini b/pytest.ini\nnew file mode 100644\n--- /dev/null\n+++ b/pytest.ini\n@@ -0,0 +1,2 @@\n"
        "+[pytest]\n+addopts = -k 'not test_add'\n"
    )
    run = run_tests(sb, _task(base), sneaky, timeout=120)
    assert run.dropped == ["pytest.ini (test-runner configuration)"]  # never applied, not merely reverted
    assert run.tampering == ["the patch changes pytest.ini (test-runner configuration): not applied"]
    assert sb.exec("test ! -e pytest.ini", workdir=WORKDIR).ok
    assert run.results["tests/test_calc.py::test_add"] == TestStatus.FAILED and run.trustworthy
