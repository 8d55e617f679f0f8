"""Verifiers: turn what an agent did into a `Reward`.

    from envfarm.verifiers import parse_log, grade, SweVerifier, WebVerifier, verifier_for

Test-log tasks (`kind == "swe"`): `SweVerifier().verify(task, sandbox, patch)`; the test run under it,
`run_tests(sandbox, task, patch, timeout=...) -> TestRun`, is the one the miner's validation uses too.
Web tasks (`kind == "web"`): `WebVerifier().verify(task, sandbox)` or `.verify_app(folder, script)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envfarm.verifiers.grading import Grade, grade
from envfarm.verifiers.logs import ParsedLog, TestStatus, get_parser, parse_log
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.run import TestRun, run_tests, selected_test_files
from envfarm.verifiers.swe import SweVerifier, grade_run

if TYPE_CHECKING:
    from envfarm.task import TaskSpec
    from envfarm.verifiers.web.verifier import WebVerifier


def verifier_for(task: "TaskSpec") -> "SweVerifier | WebVerifier":
    """The verifier a task's kind calls for (the web one is imported only when needed: Playwright)."""
    if task.kind == "web":
        from envfarm.verifiers.web.verifier import WebVerifier

        return WebVerifier()
    return SweVerifier()


def __getattr__(name: str):  # lazy: `from verifiers import WebVerifier` without importing Playwright eagerly
    if name == "WebVerifier":
        from envfarm.verifiers.web.verifier import WebVerifier

        return WebVerifier
    raise AttributeError(name)


__all__ = [
    "Grade", "ParsedLog", "Reward", "SweVerifier", "TestRun", "TestStatus", "WebVerifier", "get_parser", "grade", "grade_run",
    "parse_log", "run_tests", "selected_test_files", "verifier_for",
]
