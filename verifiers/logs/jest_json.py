"""Jest's `--json --outputFile=PATH` report, and Vitest's `--reporter=json --outputFile=PATH` (the same shape).

An id is the test file's path inside the repository, then the describe blocks, then the test's title,
joined with " > " (`src/sum.test.js > sum > adds`): Vitest's verbose reporter prints exactly that, and
Jest's titles alone collide across describe blocks. A test file that could not run (a syntax error, a
missing module) has no assertion results: it is recorded as one ERROR under the file's path, so its
tests are missing (failed) and the non-zero exit agrees with a failure read.

`pending`, `skipped`, `todo` and `disabled` are skips. The report's totals (`numTotalTests`,
`numPassedTests`, `numFailedTests`) land in `reported` for the grader's cross-check. Like every parser,
it never raises on hostile bytes: anything unreadable is an incomplete log with a problem.
"""

from __future__ import annotations

import json
from typing import Any

from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.text import decode, report_bytes, repo_path

_STATUS = {
    "passed": TestStatus.PASSED,
    "failed": TestStatus.FAILED,
    "pending": TestStatus.SKIPPED,
    "skipped": TestStatus.SKIPPED,
    "todo": TestStatus.SKIPPED,
    "disabled": TestStatus.SKIPPED,
    "focused": TestStatus.PASSED,
}


def _title_path(assertion: dict[str, Any]) -> list[str]:
    ancestors = assertion.get("ancestorTitles") or []
    titles = [str(a) for a in ancestors if isinstance(a, (str, int, float)) and str(a)]  # Vitest's file-level suite has no name
    return [*titles, str(assertion.get("title", "") or assertion.get("fullName", ""))]


def parse_jest_json(raw: bytes | str) -> ParsedLog:
    parsed = ParsedLog(framework="jest")
    data = report_bytes(raw, parsed.problems)
    if data is None:
        parsed.complete = False
        return parsed
    text, bad = decode(data)
    if bad:
        parsed.problems.append(f"{bad} undecodable byte(s) replaced")
    try:
        report = json.loads(text)
    except (ValueError, RecursionError) as exc:
        parsed.complete = False
        parsed.problems.append(f"report is not JSON ({type(exc).__name__}: {str(exc)[:200]}; starts with {text[:80]!r})")
        return parsed
    suites = report.get("testResults") if isinstance(report, dict) else None
    if not isinstance(suites, list):
        parsed.complete = False
        parsed.problems.append("report has no testResults list: not a Jest/Vitest JSON report")
        return parsed
    for key, name in (("numTotalTests", "tests"), ("numPassedTests", "passed"), ("numFailedTests", "failed"),
                      ("numPendingTests", "pending"), ("numTodoTests", "todo")):
        value = report.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            parsed.reported[name] = value
    for suite in suites:
        if not isinstance(suite, dict):
            parsed.problems.append("a testResults entry is not an object: skipped")
            continue
        file = repo_path(str(suite.get("name") or suite.get("testFilePath") or "?"))
        assertions = suite.get("assertionResults") or []
        if not assertions and suite.get("status") == "failed":
            parsed.add(file, TestStatus.ERROR)  # the file did not run: its tests are missing
            message = str(suite.get("message") or suite.get("failureMessage") or "")
            parsed.problems.append(f"{file} failed to run: {message.strip().splitlines()[0][:200] if message.strip() else 'no message'}")
            continue
        for assertion in assertions:
            if not isinstance(assertion, dict):
                continue
            status = _STATUS.get(str(assertion.get("status")))
            if status is None:
                parsed.problems.append(f"unknown status {str(assertion.get('status'))[:40]!r} in {file}")
                continue
            parsed.add(" > ".join([file, *_title_path(assertion)]), status)
            parsed.count_line("report", status.value)
    if not suites:
        parsed.problems.append("the report lists no test file")
    return parsed
