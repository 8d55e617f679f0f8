"""Reading a log the way the SWE-bench harness does, for tasks that carry its test-id conventions.

The ids and statuses come from the harness's own parser (envfarm.verifiers.harness). envfarm's own
parser for the same framework reads the same text too, and its reading rides along as
`ParsedLog.native`: the runner's totals, the per-word line counts and the completeness it finds keep
the forged-line and exit-code checks working under the harness's naming.
"""

from __future__ import annotations

from typing import Callable

from envfarm.verifiers import harness
from envfarm.verifiers.logs.django_log import parse_django_log
from envfarm.verifiers.logs.pytest_log import parse_pytest_log
from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.sympy_log import parse_sympy_log
from envfarm.verifiers.logs.text import decode

# envfarm's parser for the runner behind each harness parser; every other Python one reads pytest output.
_NATIVE: dict[str, Callable[[bytes | str], ParsedLog]] = {
    "parse_log_django": parse_django_log,
    "parse_log_sympy": parse_sympy_log,
}
_NON_PYTHON_HINT = ("jest", "vitest", "karma", "tap", "maven", "gradle", "ant", "gotest", "cargo", "phpunit", "minitest",
                    "rspec", "cucumber", "ruby", "googletest", "doctest", "redis", "jq", "micropython")


def _native_parser(parser_name: str) -> Callable[[bytes | str], ParsedLog] | None:
    if parser_name in _NATIVE:
        return _NATIVE[parser_name]
    if any(hint in parser_name for hint in _NON_PYTHON_HINT):
        return None
    return parse_pytest_log


def parse_harness_log(raw: bytes | str, spec: str, *, harness_log: bool = False) -> ParsedLog:
    """Parse `raw` with the harness's parser for `spec` (a repository or a harness parser name).

    `harness_log=False` (the default, and what `run_tests` gets): the output of envfarm's own run of the
    test command, read whole. The harness's markers mean nothing there; one printed by the code under
    test must not choose which part of the output is read, so it is reported, not obeyed.
    `harness_log=True` (`read_harness_log`): a log the harness's eval script wrote, read by the
    harness's own `get_logs_eval`, markers and all.
    """
    text, bad = decode(raw)
    marked = harness.is_harness_log(text)
    results, counted, parser_name = harness.status_map(text, spec, harness_log=harness_log)
    native_parser = _native_parser(parser_name)
    native = native_parser(harness.test_section(text) if harness_log else text) if native_parser else None
    parsed = ParsedLog(
        framework=native.framework if native else "swebench",
        test_ids="swebench",
        native=native,
        reported=dict(native.reported) if native else {},
        line_counts=dict(native.line_counts) if native else {},
        complete=native.complete if native else True,
        problems=list(native.problems) if native else ([f"{bad} undecodable byte(s) replaced"] if bad else []),
    )
    if marked and not harness_log:
        parsed.problems.append("the output contains the SWE-bench harness's test-output markers, which envfarm's own runs never "
                               "print (the code under test printed them); the whole output was read")
    if not counted:
        parsed.problems.append(
            "the harness would not grade this log (patch not applied, tests errored or timed out, markers missing, "
            "or the exit code contradicts the results): every listed test counts as failed"
        )
        return parsed
    for test_id, word in results.items():
        try:
            status = TestStatus(word)
        except ValueError:
            parsed.problems.append(f"the harness reported status {word!r} for {test_id!r}, which envfarm does not know")
            continue
        parsed.results[test_id] = status  # the harness's last word per id wins, as in its own status map
    if not parsed.results:
        parsed.problems.append(f"the harness's parser {parser_name} read no test results from the log")
    return parsed


def read_harness_log(raw: bytes | str, spec: str) -> ParsedLog:
    """A log written by the official harness (its `test_output.txt`), read as the harness reads it."""
    return parse_harness_log(raw, spec, harness_log=True)
