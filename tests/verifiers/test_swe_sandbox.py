"""SweVerifier end to end in a real container: patches applied with the sandbox's own `apply_patch`,
tests run by pytest inside the container, results read from its JUnit report.

The base image has no pytest and the sandbox has no network, so the host venv's pure-Python pytest
packages are copied in (same Python minor version as bookworm's python3).
"""

from __future__ import annotations

import importlib.metadata
import io
import tarfile
from pathlib import Path

import pytest

from envfarm.task import InstallConfig, TaskSpec
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
