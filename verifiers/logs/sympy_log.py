"""sympy's own test runner (`bin/test --verbose`, sympy.testing.runtests), which is not pytest.

It prints a header per file (`sympy/core/tests/test_basic.py[23] `), then one line per test function,
`test_name <outcome>`, where the outcome is one letter or word: ok, F (failed), E (error), f (expected to
fail), X (unexpectedly passed), s / w / T (skipped, slow, timed out). The last line of a file may end
with the file verdict (`test_x ok      [OK]`). Failures are detailed after `____ path:test_name ____`
headers, and the run ends `tests finished: 3 passed, 1 failed, in 0.20 seconds`.

Ids are exact (`sympy/core/tests/test_basic.py::test_has`): two files may hold tests of the same name.
The SWE-bench harness names them by the bare function name (see envfarm.verifiers.harness).
"""

from __future__ import annotations

import re

from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.text import clean_lines

_FILE_HEADER = re.compile(r"^(?P<path>\S+\.py)\[\d+\]\s*(?P<rest>.*)$")
_TEST_LINE = re.compile(r"^(?P<name>test_\w+) (?P<outcome>ok|F|E|f|X|s|w|T|Slow|skipped)\b.*?(?:\s+\[(?:OK|FAIL)\])?$")
_OUTCOMES = {
    "ok": TestStatus.PASSED,
    "F": TestStatus.FAILED,
    "E": TestStatus.ERROR,
    "f": TestStatus.XFAIL,
    "X": TestStatus.PASSED,  # an unexpected pass: the runner does not fail the run for it
    "s": TestStatus.SKIPPED,
    "skipped": TestStatus.SKIPPED,
    "w": TestStatus.SKIPPED,  # slow test not run
    "Slow": TestStatus.SKIPPED,
    "T": TestStatus.ERROR,  # timed out
}
_DETAIL_HEADER = re.compile(r"^_{3,} (?P<path>\S+\.py):(?P<name>test_\w+) _{3,}$")
_FINISHED = re.compile(r"^=+ tests finished: (?P<body>.*) in [\d.]+ seconds =+$")
_FINISHED_COUNT = re.compile(r"(\d+) (passed|failed|exceptions?|expected to fail(?: but passed)?|skipped|timed out)")


def parse_sympy_log(raw: bytes | str) -> ParsedLog:
    lines, problems = clean_lines(raw)
    parsed = ParsedLog(framework="sympy", problems=problems)
    current_file = ""
    finished_seen = False
    for line in lines:
        header = _FILE_HEADER.match(line)
        if header:
            current_file = header.group("path")
            line = header.group("rest")  # a short file may print its first test on the header line
            if not line:
                continue
        match = _TEST_LINE.match(line.strip())
        if match:
            status = _OUTCOMES[match.group("outcome")]
            test_id = f"{current_file}::{match.group('name')}" if current_file else match.group("name")
            parsed.add(test_id, status)
            parsed.count_line("verbose", status.value)
            continue
        detail = _DETAIL_HEADER.match(line)
        if detail:  # a failure's traceback: its test line said F or E already; a forged "ok" never hides it
            test_id = f"{detail.group('path')}::{detail.group('name')}"
            parsed.add(test_id, parsed.results.get(test_id, TestStatus.FAILED))
            parsed.add(test_id, TestStatus.FAILED if parsed.results[test_id].succeeded else parsed.results[test_id])
            continue
        finished = _FINISHED.match(line)
        if finished:
            finished_seen = True
            for number, word in _FINISHED_COUNT.findall(finished.group("body")):
                key = {"exception": "errors", "exceptions": "errors", "expected to fail": "xfailed",
                       "expected to fail but passed": "xpassed", "timed out": "timed_out"}.get(word, word)
                parsed.reported[key] = int(number)
    if not finished_seen:
        parsed.complete = False
        parsed.problems.append("log ends before sympy's 'tests finished' line (truncated or the runner crashed)")
    if not parsed.results:
        parsed.problems.append("no sympy result lines found (was bin/test run with --verbose?)")
    return parsed
