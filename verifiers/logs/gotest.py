"""`go test -json` output (test2json events), with the plain lines `go test` prints around them.

Ids are `<import path>::<test name>` (`example.com/m/calc::TestTable/bad_case`): a test name alone is
not unique across packages. Subtests, examples and fuzz seeds are tests like any other; a parent that
has subtests is reported too (it fails when any subtest fails, as `go test` says).

What the events do not say on their own, and how it is read:
- a package that does not build: Go before 1.24 prints `FAIL <pkg> [build failed]` as plain text and
  no event; 1.24+ sends a package `fail` event with `FailedBuild`. Either way the package is one
  ERROR result under its bare import path (no test of it ran, so they are all missing, i.e. failed);
- a package that fails with no failing test (a panic in `init` or `TestMain`, `os.Exit(1)`): the
  package is an ERROR result, so "the runner failed but no failing test was read" cannot hide it;
- a panic inside a test: test2json closes the running test with `fail`; tests that never started
  are missing;
- a run cut short (timeout, kill): tests that started and never ended are ERROR results, and the log
  is incomplete.
Forgery: test2json reads the test binary's text output, so a test that prints `--- PASS: TestX` makes
it emit a `pass` for TestX. A pass for a test that never started (`run` event) is not believed and is
reported as a contradiction; a test reported twice keeps the worse outcome (ParsedLog.add), and a
package whose final verdict is `pass` while one of its tests failed is a contradiction too.
"""

from __future__ import annotations

import json
import re

from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.text import clean_lines

FRAMEWORK = "gotest"
SEPARATOR = "::"
_BUILD_FAILED = re.compile(r"^FAIL\s+(\S+)\s+\[(build failed|setup failed)\]$")
_OUTCOMES = {"pass": TestStatus.PASSED, "fail": TestStatus.FAILED, "skip": TestStatus.SKIPPED}


def test_id(package: str, test: str) -> str:
    return f"{package}{SEPARATOR}{test}"


def split_id(test_id: str) -> tuple[str, str]:
    """(import path, test name); the test name is '' for a package-level result."""
    package, _, test = test_id.partition(SEPARATOR)
    return package, test


def parse_gotest_log(raw: bytes | str) -> ParsedLog:
    lines, problems = clean_lines(raw)
    parsed = ParsedLog(framework=FRAMEWORK, problems=problems)
    started: set[tuple[str, str]] = set()
    ended: set[tuple[str, str]] = set()
    package_verdict: dict[str, str] = {}
    build_failed: set[str] = set()
    packages_seen: set[str] = set()
    events = 0
    for line in lines:
        if not line.startswith("{"):
            match = _BUILD_FAILED.match(line)
            if match:
                build_failed.add(match.group(1))
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # the code under test printed something that looks like JSON: not an event
        if not isinstance(event, dict) or not isinstance(event.get("Action"), str) or not isinstance(event.get("Package", ""), str):
            continue
        events += 1
        action, package, test = event["Action"], event.get("Package") or "", event.get("Test")
        if not package:
            continue
        packages_seen.add(package)
        if not isinstance(test, str) or not test:
            if action in ("pass", "fail", "skip"):
                package_verdict[package] = action
                if action == "fail" and event.get("FailedBuild"):
                    build_failed.add(package)
            continue
        key = (package, test)
        if action == "run":
            started.add(key)
        elif action in _OUTCOMES:
            parsed.count_line(package, action.upper())
            if key not in started and action != "fail":
                parsed.contradictions.append(f"a '{action}' result for {test_id(package, test)}, which never started (a forged result line?)")
                continue
            ended.add(key)
            parsed.add(test_id(package, test), _OUTCOMES[action])
    for package in sorted(build_failed):
        parsed.add(package, TestStatus.ERROR)
        parsed.problems.append(f"package {package} did not build: its tests did not run")
    unfinished = sorted(started - ended)
    for package, test in unfinished:
        parsed.add(test_id(package, test), TestStatus.ERROR)
    if unfinished:
        parsed.problems.append(f"{len(unfinished)} test(s) started and never finished (the run was cut short?): {[t for _, t in unfinished[:5]]}")
    for package, verdict in sorted(package_verdict.items()):
        own = [s for tid, s in parsed.results.items() if split_id(tid)[0] == package]
        failing = any(s in (TestStatus.FAILED, TestStatus.ERROR) for s in own)
        if verdict == "fail" and not failing:
            parsed.add(package, TestStatus.ERROR)  # init panic, TestMain exit, or a failure outside any test
        elif verdict == "pass" and failing:
            parsed.contradictions.append(f"package {package} passed but {sum(s is TestStatus.FAILED for s in own)} of its tests failed")
    parsed.reported = {"packages": len(package_verdict), "packages_failed": sum(v == "fail" for v in package_verdict.values())}
    missing_verdict = sorted((packages_seen | {split_id(t)[0] for t in parsed.results}) - set(package_verdict) - build_failed)
    if missing_verdict:
        parsed.complete = False
        parsed.problems.append(f"no final verdict for package(s) {missing_verdict[:5]}: the run was cut short")
    if events == 0 and not build_failed:
        parsed.complete = False
        parsed.problems.append("no `go test -json` events in the log (was the command run with -json?)")
    return parsed
