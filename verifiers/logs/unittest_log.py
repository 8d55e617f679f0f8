"""unittest's verbose output (`python -m unittest -v`), which Django's runner also prints.

Ids are normalised to the classic `test_name (module.Class)` form: Python 3.11 prints
`test_name (module.Class.test_name)`, and a task mined on one Python must grade on another.
A test that prints while it runs splits its line ("test_x (m.C) ... hello\\nok"); a docstring puts
the description on its own line before " ... ok". Both are stitched back together.
"""

from __future__ import annotations

import re

from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.text import clean_lines

_HEAD = r"(?P<name>[A-Za-z_]\w*) \((?P<where>[A-Za-z_][\w.]*)\)"
_RESULT_LINE = re.compile(rf"^{_HEAD} \.\.\. ?(?P<tail>.*)$")
_BARE_HEAD = re.compile(rf"^{_HEAD}$")
_DETAIL_HEAD = re.compile(rf"^(?P<kind>FAIL|ERROR|UNEXPECTED SUCCESS): {_HEAD}")
_FIXTURES = {"setUpClass", "tearDownClass", "setUpModule", "tearDownModule"}
_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s$")
_VERDICT = re.compile(r"^(OK|FAILED)\b(?: \((?P<body>[^)]*)\))?")
_OUTCOMES: list[tuple[re.Pattern[str], TestStatus]] = [
    (re.compile(r"^ok$"), TestStatus.PASSED),
    (re.compile(r"^FAIL$"), TestStatus.FAILED),
    (re.compile(r"^ERROR$"), TestStatus.ERROR),
    (re.compile(r"^skipped\b.*$"), TestStatus.SKIPPED),
    (re.compile(r"^expected failure$"), TestStatus.XFAIL),
    (re.compile(r"^unexpected success$"), TestStatus.FAILED),  # wasSuccessful() is False for these
]


def canonical_id(name: str, where: str) -> str:
    if where.endswith("." + name):
        where = where[: -len(name) - 1]
    return f"{name} ({where})"


def _outcome(text: str) -> TestStatus | None:
    text = text.strip()
    for pattern, status in _OUTCOMES:
        if pattern.match(text):
            return status
    return None


def _outcome_at_end(text: str) -> TestStatus | None:
    """The outcome word may follow output the test printed on the same line: "hello ok"."""
    for word in ("unexpected success", "expected failure", "ok", "FAIL", "ERROR"):
        if text == word or text.endswith(" " + word):
            return _outcome(word)
    if text.startswith("skipped"):
        return TestStatus.SKIPPED
    return None


def parse_unittest_lines(lines: list[str], parsed: ParsedLog, noise: re.Pattern[str] | None = None) -> None:
    pending: str | None = None  # a test whose outcome word has not been seen yet
    described: str | None = None  # a bare head line followed by a docstring line
    for line in lines:
        if noise is not None and noise.match(line):
            continue
        match = _RESULT_LINE.match(line)
        if match:
            name, where, tail = match.group("name"), match.group("where"), match.group("tail")
            if name in _FIXTURES:
                parsed.problems.append(f"{name} failed in {where}: its tests did not run")
                continue
            test_id = canonical_id(name, where)
            # Output printed by the test (even a forged "x ... ok") means the real outcome comes later.
            status = None if " ... " in tail else _outcome_at_end(tail)
            if status is None:
                pending = test_id
            else:
                parsed.add(test_id, status)
                pending = None
            described = None
            continue
        match = _BARE_HEAD.match(line)
        if match:
            described = canonical_id(match.group("name"), match.group("where"))
            continue
        if described is not None and " ... " in line:
            status = _outcome_at_end(line.rsplit(" ... ", 1)[1])
            if status is None:
                pending = described
            else:
                parsed.add(described, status)
            described = None
            continue
        match = _DETAIL_HEAD.match(line)
        if match:
            kind = {"FAIL": TestStatus.FAILED, "ERROR": TestStatus.ERROR}.get(match.group("kind"), TestStatus.FAILED)
            name, where = match.group("name"), match.group("where")
            if name not in _FIXTURES:
                parsed.add(canonical_id(name, where), kind)
            pending = None
            continue
        if pending is not None:
            status = _outcome_at_end(line.strip())
            if status is not None:
                parsed.add(pending, status)
                pending = None
            continue
        match = _RAN.match(line)
        if match:
            parsed.reported["ran"] = int(match.group(1))
            continue
        match = _VERDICT.match(line)
        if match and "ran" in parsed.reported:
            parsed.reported["verdict_ok"] = int(match.group(1) == "OK")
            for part in (match.group("body") or "").split(","):
                key, _, number = part.strip().partition("=")
                if number.isdigit():
                    parsed.reported[key] = int(number)
    if pending is not None:
        parsed.problems.append(f"no outcome found for {pending} (log cut off while it ran?)")


def _finish(parsed: ParsedLog, runner: str) -> ParsedLog:
    if "ran" not in parsed.reported:
        parsed.complete = False
        parsed.problems.append(f"log ends before {runner}'s 'Ran N tests' line (truncated or the runner crashed)")
    if not parsed.results:
        parsed.problems.append(f"no {runner} result lines found (was it run with verbosity 2 / -v?)")
    return parsed


def parse_unittest_log(raw: bytes | str) -> ParsedLog:
    lines, problems = clean_lines(raw)
    parsed = ParsedLog(framework="unittest", problems=problems)
    parse_unittest_lines(lines, parsed)
    return _finish(parsed, "unittest")
