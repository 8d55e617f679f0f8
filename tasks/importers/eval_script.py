"""The test command inside a SWE-bench 5.x row's `eval_script`, as one command `run_tests` can run.

swebench 5.x no longer carries per-repository/version spec tables: each row (and each task of a task
repository, `tasks/<id>/eval.sh`) carries the script the harness runs in the row's image. That script
does four things: set the environment up (activate the conda env, `cd /testbed`, exports), reset the
test files and apply `test_patch`, run the tests between the harness's start and end markers, reset
the test files again. `run_tests` does the reset and the test patch itself (with its tampering checks),
so envfarm keeps the script's own environment lines and its test lines, in order, and runs them with
bash (the scripts use `source`): the dataset's recipe, with only the steps envfarm owns taken out.
"""

from __future__ import annotations

import re
import shlex

from envfarm.tasks.importers.base import ImportRowError
from envfarm.verifiers import harness

# Script lines that are the harness's own bookkeeping, done by run_tests (reset, test patch) or only
# informative (status, show, diff of the evaluated patch): everything else before the markers is kept.
_HARNESS_ONLY = re.compile(r"^\s*(git\s|set\s+-[a-z]+|#!|:\s*$)")
_HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?")


def test_command(eval_script: str, where: str) -> str:
    """`bash -c '<environment lines>; <test lines>'` from an eval script; ImportRowError if it has no test section."""
    start, end = harness.markers()
    lines = eval_script.splitlines()
    begin = next((i for i, line in enumerate(lines) if start in line), None)
    finish = next((i for i, line in enumerate(lines) if end in line and begin is not None and i > begin), None)
    if begin is None or finish is None:
        raise ImportRowError(
            f"{where}: field 'eval_script' has no test section (no {start!r} ... {end!r} marker lines)",
            "give the harness's eval script as the dataset publishes it (tasks/<id>/eval.sh in a task repository)",
        )
    setup: list[str] = []
    heredoc: str | None = None
    for line in lines[:begin]:
        if heredoc is not None:  # the body of a heredoc (the test patch): part of the harness-only line above it
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        found = _HEREDOC.search(line)
        if _HARNESS_ONLY.match(line):
            heredoc = found.group(1) if found else None
            continue
        setup.append(line)
    # The exit-code capture the harness adds when it writes the script out (record_test_exit_code) would
    # make the script's own status 0: run_tests reads the test command's status directly instead.
    capture = f"{harness.module('constants').TEST_EXIT_CODE_VAR}="
    tests = [line for line in lines[begin + 1:finish] if line.strip() and not line.strip().startswith(capture)]
    if not tests:
        raise ImportRowError(f"{where}: field 'eval_script' runs no command between its test markers",
                             "give the harness's eval script as the dataset publishes it")
    script = "\n".join(["set -uo pipefail", *setup, *tests])
    return f"bash -c {shlex.quote(script)}"


_DIFF_TARGET = re.compile(r"^diff --git a/\S+ b/(\S+)$", re.MULTILINE)


def test_directives(test_patch: str, repo: str) -> list[str]:
    """What a recipe's `test_cmd` is given to run, for rows that carry a command and no script
    (SWE-rebench): the files `test_patch` touches, less the harness's non-test extensions
    (`NON_TEST_EXTS`, read from the pinned package), as Django's runner names them for django/django."""
    skip = tuple(harness.module("constants").NON_TEST_EXTS)
    files = [p for p in dict.fromkeys(_DIFF_TARGET.findall(test_patch)) if not p.endswith(skip)]
    if repo == "django/django":
        files = [p.removesuffix(".py").removeprefix("tests/").replace("/", ".") for p in files]
    return files
