"""pytest console output (`-rA` short summary, verbose `-v` lines, xdist lines).

Summary-form lines ("PASSED tests/x.py::test_y") are read only inside the *last* short-summary
section: one printed by the code under test lands in a captured-output section before the runner's
real summary and is ignored. Verbose lines count too (a log cut off before the summary still grades
what ran), with the worse outcome winning per id, and the grader compares pass counts with pytest's
own final totals to catch forged lines for tests that never ran.
"""

from __future__ import annotations

import re

from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.text import clean_lines

_STATUS_WORDS = {
    "PASSED": TestStatus.PASSED,
    "FAILED": TestStatus.FAILED,
    "ERROR": TestStatus.ERROR,
    "SKIPPED": TestStatus.SKIPPED,
    "XFAIL": TestStatus.XFAIL,
    # A non-strict unexpected pass: pytest counts the run as successful, so do we.
    "XPASS": TestStatus.PASSED,
}
_SUMMARY_HEADER = re.compile(r"^=+ short test summary info =+$")
# pytest < 5.0 ends "in 2.80 seconds", later versions "in 2.80s" (sometimes with "(0:00:02)").
_FINAL_LINE = re.compile(r"^=+ (?P<body>.*\d+ \w+.*) in [\d.]+ ?s(?:econds)?(?: \([^)]*\))? =+$")
_FINAL_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)")
_NO_TESTS = re.compile(r"^=+ no tests ran in [\d.]+ ?s(?:econds)? =+$")
_VERBOSE = re.compile(r"^(?P<id>\S+?::\S.*?) (?P<status>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_XDIST = re.compile(r"^\[gw\d+\] \[\s*\d+%\] (?P<status>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (?P<rest>.+)$")
_COLLECT_ERROR = re.compile(r"^_+ ERROR collecting (?P<path>\S+) _+$")


def split_test_id(rest: str) -> str:
    """The node id at the start of `rest`, which may go on with " - message" or a reason.

    Parametrized ids can hold spaces, " - " and nested brackets (`test_x[a - b]`), so the id ends at
    the first space *outside* the bracket group of the last `::` segment.
    """
    depth = 0
    last_sep = rest.rfind("::", 0, rest.find("[") if "[" in rest else len(rest))
    start = last_sep + 2 if last_sep >= 0 else 0
    for i in range(start, len(rest)):
        ch = rest[i]
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
            if depth == 0 and (i + 1 == len(rest) or rest[i + 1] == " "):
                return rest[: i + 1]
        elif ch == " " and depth == 0:
            return rest[:i]
    return rest


def _summary_line(line: str) -> tuple[TestStatus, str] | None:
    word, _, rest = line.partition(" ")
    status = _STATUS_WORDS.get(word)
    if status is None or not rest:
        return None
    if rest.startswith("["):  # "SKIPPED [1] path:12: reason" names a location, not a test id
        return None
    return status, split_test_id(rest)


def parse_pytest_log(raw: bytes | str) -> ParsedLog:
    lines, problems = clean_lines(raw)
    parsed = ParsedLog(framework="pytest", problems=problems)

    summary_starts = [i for i, line in enumerate(lines) if _SUMMARY_HEADER.match(line)]
    final_index = None
    for i in range(len(lines) - 1, -1, -1):
        match = _FINAL_LINE.match(lines[i])
        if match:
            final_index = i
            for number, word in _FINAL_COUNT.findall(match.group("body")):
                key = {"error": "errors", "warning": "warnings"}.get(word, word)
                parsed.reported[key] = int(number)
            break
        if _NO_TESTS.match(lines[i]):
            final_index = i
            parsed.reported["passed"] = 0
            break

    summary = summary_starts[-1] if summary_starts and (final_index is None or summary_starts[-1] < final_index) else None
    # Verbose lines (`-v`) and summary lines (`-rA`) are merged, the worse outcome winning, so a forged
    # "PASSED" can never hide the runner's own FAILED for the same id; forged lines for ids that did
    # not fail are caught by the grader comparing pass counts with pytest's final totals.
    for line in lines[: summary if summary is not None else len(lines)]:
        match = _VERBOSE.match(line) or _XDIST.match(line)
        if match:
            test_id = match.group("id") if "id" in match.groupdict() else match.group("rest")
            parsed.count_line("verbose", match.group("status"))
            parsed.add(split_test_id(test_id), _STATUS_WORDS[match.group("status")])
            continue
        match = _COLLECT_ERROR.match(line)
        if match:
            parsed.add(match.group("path"), TestStatus.ERROR)
    if summary is not None:
        end = final_index if final_index is not None else len(lines)
        for line in lines[summary + 1 : end]:
            item = _summary_line(line)
            if item:
                parsed.add(item[1], item[0])
                parsed.count_line("summary", line.split(" ", 1)[0])
    if final_index is None:
        parsed.complete = False
        parsed.problems.append("log ends before pytest's final summary line (truncated or the runner crashed)")
    if not parsed.results:
        parsed.problems.append("no pytest result lines found (was the test command run with -rA or -v?)")
    return parsed
