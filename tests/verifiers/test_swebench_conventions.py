"""The harness's test-id conventions, one rule at a time, on logs written here (no licensed real log
shows them; see data/swebench_logs/README.md). Each expectation is checked against the `swebench`
package's own parser on the same text, so these tests pin envfarm to the package, not to a copy.
"""

from __future__ import annotations

import pytest

pytest.importorskip("swebench", reason="the swebench package (pinned in pyproject.toml) is not installed")

from envfarm.errors import EnvfarmError  # noqa: E402 - after the skip above
from envfarm.sandbox.protocol import ExecResult  # noqa: E402
from envfarm.task import TaskSpec  # noqa: E402
from envfarm.verifiers import harness  # noqa: E402
from envfarm.verifiers.grading import grade  # noqa: E402
from envfarm.verifiers.logs import get_parser, parse_log  # noqa: E402
from envfarm.verifiers.logs.status import TestStatus  # noqa: E402
from envfarm.verifiers.run import read_run  # noqa: E402

P, F, S = TestStatus.PASSED, TestStatus.FAILED, TestStatus.SKIPPED


def _package(repo: str, text: str) -> dict[str, str]:
    """The package's parser, called as the harness calls it (no envfarm code in between)."""
    name, parser = harness.parser_for(repo)
    return parser(text, None)


def _ids(repo: str, text: str) -> dict[str, TestStatus]:
    return parse_log(f"swebench:{repo}", text).results


DJANGO_DOCSTRINGS = """\
test_no_user (admin_changelist.tests.GetAdminLogTests)
{% get_admin_log %} works without specifying a user. ... ok
test_with_user (admin_changelist.tests.GetAdminLogTests)
Shared docstring line. ... ok
test_without_user (admin_changelist.tests.GetAdminLogTests)
Shared docstring line. ... FAIL
test_plain (admin_changelist.tests.GetAdminLogTests) ... ok

----------------------------------------------------------------------
Ran 4 tests in 0.010s

FAILED (failures=1)
"""


def test_django_docstring_tests_are_named_by_their_docstring_and_shared_lines_merge() -> None:
    ids = _ids("django/django", DJANGO_DOCSTRINGS)
    assert ids == {k: TestStatus(v) for k, v in _package("django/django", DJANGO_DOCSTRINGS).items()}
    assert ids["{% get_admin_log %} works without specifying a user."] is P
    assert ids["Shared docstring line."] is F  # two tests, one id: the later line wins, as in the harness
    assert "test_no_user (admin_changelist.tests.GetAdminLogTests)" not in ids
    native = parse_log("django", DJANGO_DOCSTRINGS).results  # envfarm's own ids stay exact and unmerged
    assert native["test_with_user (admin_changelist.tests.GetAdminLogTests)"] is P
    assert native["test_without_user (admin_changelist.tests.GetAdminLogTests)"] is F


def test_django_on_python_311_keeps_the_long_form() -> None:
    log = "test_x (mod.tests.Class.test_x) ... ok\ntest_y (mod.tests.Class.test_y) ... ERROR\n\nRan 2 tests in 0.1s\n\nFAILED (errors=1)\n"
    assert _ids("django/django", log) == {"test_x (mod.tests.Class.test_x)": P, "test_y (mod.tests.Class.test_y)": TestStatus.ERROR}
    assert set(parse_log("django", log).results) == {"test_x (mod.tests.Class)", "test_y (mod.tests.Class)"}


PYTEST_SPACES = """\
============================= test session starts ==============================
collected 3 items

lib/matplotlib/tests/test_x.py ...                                       [100%]

=========================== short test summary info ============================
PASSED lib/matplotlib/tests/test_x.py::test_stem[png-w/ line collection]
FAILED lib/matplotlib/tests/test_x.py::test_stem[png-w/o line collection] - AssertionError: no
PASSED lib/matplotlib/tests/test_x.py::test_plain
========================= 1 failed, 2 passed in 0.50s ==========================
"""


def test_pytest_ids_are_cut_at_the_first_space_and_can_merge() -> None:
    ids = _ids("matplotlib/matplotlib", PYTEST_SPACES)
    assert ids == {k: TestStatus(v) for k, v in _package("matplotlib/matplotlib", PYTEST_SPACES).items()}
    assert ids == {"lib/matplotlib/tests/test_x.py::test_stem[png-w/": P, "lib/matplotlib/tests/test_x.py::test_stem[png-w/o": F,
                   "lib/matplotlib/tests/test_x.py::test_plain": P}
    native = parse_log("pytest", PYTEST_SPACES).results
    assert native["lib/matplotlib/tests/test_x.py::test_stem[png-w/ line collection]"] is P


def test_path_parameters_are_shortened_for_the_repositories_the_harness_shortens() -> None:
    log = "PASSED tests/test_utils.py::test_path[/testbed/tests/test_utils.py]\n==== 1 passed in 0.1s ====\n"
    assert _ids("psf/requests", log) == {"tests/test_utils.py::test_path[/test_utils.py]": P}
    assert _ids("pytest-dev/pytest", log) == {"tests/test_utils.py::test_path[/testbed/tests/test_utils.py]": P}  # not shortened there


def test_truncated_dataset_ids_match_by_the_harness_prefix_rule() -> None:
    log = "PASSED astropy/io/tests/test_a.py::test_grammar_fail[log(photon cm)]\n==== 1 passed in 0.1s ====\n"
    parsed = parse_log("swebench:astropy/astropy", log)
    assert grade(parsed, ["astropy/io/tests/test_a.py::test_grammar_fail[log(photon"], []).resolved
    exact = parse_log("pytest", log)  # envfarm's own tasks keep exact matching
    assert not grade(exact, ["astropy/io/tests/test_a.py::test_grammar_fail[log(photon"], []).resolved


SYMPY = """\
============================= test process starts ==============================
executable:         /usr/bin/python  (3.9.20-final-0) [CPython]

sympy/core/tests/test_basic.py[4] 
test_a ok
test_b F
test_c E
test_d ok                                                                 [FAIL]

sympy/core/tests/test_other.py[2] 
test_e f
test_f ok                                                                   [OK]

________________________________________________________________________________
______________________ sympy/core/tests/test_basic.py:test_b ___________________
Traceback (most recent call last):
AssertionError

===== tests finished: 3 passed, 1 failed, 1 expected to fail, 1 exceptions, in 0.20 seconds =====
DO *NOT* COMMIT!
"""


def test_sympy_runner_native_ids_are_exact_and_agree_with_the_harness_on_status() -> None:
    native = parse_log("sympy", SYMPY)
    assert native.complete and native.reported == {"passed": 3, "failed": 1, "xfailed": 1, "errors": 1}
    assert native.results == {
        "sympy/core/tests/test_basic.py::test_a": P, "sympy/core/tests/test_basic.py::test_b": F,
        "sympy/core/tests/test_basic.py::test_c": TestStatus.ERROR, "sympy/core/tests/test_basic.py::test_d": P,
        "sympy/core/tests/test_other.py::test_e": TestStatus.XFAIL, "sympy/core/tests/test_other.py::test_f": P,
    }
    package = _package("sympy/sympy", SYMPY)
    harness_ids = _ids("sympy/sympy", SYMPY)
    assert harness_ids == {k: TestStatus(v) for k, v in package.items()}
    # Parity on every test both read: same status by bare name (the harness drops the file, misses a line
    # that ends with the file verdict and an expected failure, and adds the traceback header as a test).
    for test_id, status in native.results.items():
        name = test_id.rsplit("::", 1)[1]
        if name in package:
            assert package[name] == status.value, name
    assert {"test_a", "test_b", "test_c"} <= set(package)


def test_pytest_before_5_summary_keeps_the_forged_line_check() -> None:
    log = ("=========================== short test summary info ============================\n"
           "PASSED t.py::test_a\nPASSED t.py::test_b\nFAILED t.py::test_c\n"
           "================ 1 failed, 1 passed in 2.80 seconds ================\n")
    parsed = parse_log("pytest", log)
    assert parsed.complete and parsed.reported == {"failed": 1, "passed": 1}
    assert grade(parsed, ["t.py::test_b"], []).suspicious  # two PASSED lines, one pass counted
    as_harness = parse_log("swebench:pytest-dev/pytest", log)
    assert grade(as_harness, ["t.py::test_b"], []).suspicious  # the same check under the harness's ids


def test_a_task_with_the_harness_convention_reads_its_runs_with_the_harness_parser() -> None:
    task = TaskSpec(instance_id="django__django-1", repo="django/django", test_ids="swebench")
    assert task.log_parser == "swebench:django/django"
    run = read_run(task, ExecResult(exit_code=1, output=DJANGO_DOCSTRINGS, truncated=False, duration=1.0), None)
    assert run.results["{% get_admin_log %} works without specifying a user."] is P
    named = TaskSpec(instance_id="x__y-1", repo="x/y", test_ids="swebench", install={"log_parser": "swebench:parse_log_pytest_v2"})
    assert named.log_parser == "swebench:parse_log_pytest_v2"  # a dataset row's own parser is kept
    assert TaskSpec(instance_id="x__y-2", repo="x/y").log_parser == "pytest"


def test_unknown_repository_under_the_harness_convention_is_a_clear_error() -> None:
    with pytest.raises(EnvfarmError, match="no log parser for 'acme/widgets'"):
        get_parser("swebench:acme/widgets")


def test_the_harness_loads_without_its_heavy_dependencies() -> None:
    import subprocess
    import sys

    code = ("import sys; from envfarm.verifiers.logs import parse_log; parse_log('swebench:django/django', 'x ... ok');"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'modal', 'datasets', 'pandas', 'pyarrow', 'docker'});"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
