"""JavaScript/TypeScript runners' machine-readable output, recorded from real runs (Jest 29, Vitest 1,
mocha 10's xunit reporter, Node 20's and Node 18's test runner with the built-in TAP reporter and envfarm's), read into ids
and statuses, and cross-checked with the exit code by the one `read_run` path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envfarm.sandbox.protocol import ExecResult
from envfarm.task import InstallConfig, TaskSpec
from envfarm.verifiers.logs import REPORT_PARSERS, parse_log, reads_console, report_parser
from envfarm.verifiers.logs.status import TestStatus
from envfarm.verifiers.run import SOURCE_REPORT, read_run

LOGS = Path(__file__).parent / "logs"
P, F, S, E = TestStatus.PASSED, TestStatus.FAILED, TestStatus.SKIPPED, TestStatus.ERROR


def test_jest_json_report() -> None:
    parsed = parse_log("jest", (LOGS / "jest_report.json").read_bytes())
    assert parsed.results == {
        "jt/sum.test.js > sum > adds": P, "jt/sum.test.js > sum > fails": F, "jt/sum.test.js > sum > skipped": S,
        "jt/sum.test.js > sum > later": S, "jt/sum.test.js > sum > nested > adds": P, "jt/sum.test.js > top level": P,
        "jt/broken.test.js": E,  # the file could not run: one error under its path
    }
    assert parsed.reported == {"tests": 6, "passed": 3, "failed": 1, "pending": 1, "todo": 1} and parsed.complete
    assert any("broken.test.js failed to run" in p for p in parsed.problems)


def test_vitest_json_report_drops_the_nameless_file_suite() -> None:
    parsed = parse_log("vitest", (LOGS / "vitest_report.json").read_bytes())
    assert parsed.results["vt/sum.test.js > sum > nested > adds"] is P
    assert parsed.results["vt/sum.test.js > top level"] is P
    assert parsed.results["vt/sum.test.js > sum > later"] is S and parsed.results["vt/sum.test.js > sum > fails"] is F


def test_mocha_xunit_report_reads_as_junit() -> None:
    parsed = parse_log("junit", (LOGS / "mocha_xunit.xml").read_bytes())
    assert parsed.results == {"math::adds": P, "math::fails": F, "math::skipped": S, "math inner::works": P}


def test_node20_tap_nests_subtests_and_drops_containers() -> None:
    parsed = parse_log("tap", (LOGS / "node20_test_runner.tap").read_bytes())
    assert parsed.results == {"adds": P, "fails": F, "skipped one": S, "todo one": S, "outer > inner ok": P,
                              "outer > inner # bad": F, "suite b > works": P}
    assert parsed.complete and parsed.reported["passed"] == 3 and parsed.reported["tests"] == 8


def test_envfarm_node_reporter_names_files_the_same_on_node18_and_node20() -> None:
    """The built-in reporter names no file (recorded on Node 18.20.4, bookworm); envfarm's does."""
    builtin = parse_log("tap", (LOGS / "node18_builtin_tap.tap").read_bytes())
    assert "adds" in builtin.results and not any(".js" in t for t in builtin.results)
    ours = parse_log("tap", (LOGS / "node18_envfarm_reporter.tap").read_bytes())
    assert ours.complete, ours.problems
    assert ours.results == {"test/a.test.js > adds": P, "test/a.test.js > fails": F, "test/a.test.js > skipped one": S,
                            "test/a.test.js > todo one": S, "test/a.test.js > outer > inner ok": P,
                            "test/a.test.js > outer > inner # bad": F, "test/b.test.js > suite b > works": P}
    assert ours.reported == {"tests": 7, "passed": 3, "failed": 2, "skipped": 1, "todo": 1}


def test_cut_or_bailed_tap_is_incomplete() -> None:
    text = (LOGS / "node20_test_runner.tap").read_text()
    cut = parse_log("tap", text[: text.index("1..6")])
    assert not cut.complete and "plan" in cut.problems[0]
    bailed = parse_log("tap", "TAP version 13\nok 1 - a\nBail out! database down\n1..2\n")
    assert not bailed.complete and bailed.results == {"a": P}
    ava = parse_log("tap", "TAP version 13\nok 1 - sum › adds\nnot ok 2 - sum › fails\nok 3 - sum › later # SKIP\n1..3\n# tests 3\n# pass 1\n# fail 1\n")
    assert ava.results == {"sum › adds": P, "sum › fails": F, "sum › later": S} and ava.complete


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe{", b'{"testResults": 5}', b"[" * 100000, json.dumps({"testResults": [1, {"assertionResults": [{"status": "weird"}]}]}).encode()])
def test_hostile_jest_reports_are_incomplete_or_empty_never_an_exception(raw: bytes) -> None:
    parsed = parse_log("jest", raw)
    assert not parsed.results.get("x") and (not parsed.complete or parsed.problems)


def _js_task(parser: str, cmd: str) -> TaskSpec:
    return TaskSpec(instance_id="acme__js-1", repo="acme/js", language="javascript",
                    install=InstallConfig(log_parser=parser, test_cmd=cmd))


def test_report_parsers_never_read_the_console() -> None:
    assert {"jest", "vitest", "tap", "junit"} <= REPORT_PARSERS
    assert not reads_console("jest") and reads_console("pytest")
    assert report_parser("pytest") == "junit" and report_parser("jest") == "jest"


def test_exit_code_is_cross_checked_with_the_report() -> None:
    report = (LOGS / "jest_report.json").read_bytes()
    task = _js_task("jest", "npx jest --ci --json --outputFile={report}")
    honest = read_run(task, ExecResult(1, "FAIL jt/sum.test.js", False, 1.0), report)
    assert honest.source == SOURCE_REPORT and honest.trustworthy and honest.results["jt/sum.test.js > sum > fails"] is F
    lying = read_run(task, ExecResult(0, "", False, 1.0), report)  # failures in the report, but exit 0
    assert not lying.trustworthy and any("exited 0" in p for p in lying.problems)
    all_pass = json.dumps({"numTotalTests": 1, "numPassedTests": 1, "testResults": [
        {"name": "/testbed/a.test.js", "status": "passed", "assertionResults": [{"ancestorTitles": [], "title": "a", "status": "passed"}]}]})
    crashed = read_run(task, ExecResult(1, "", False, 1.0), all_pass.encode())  # exit 1, nothing failed
    assert not crashed.trustworthy and any("no failing test" in p for p in crashed.problems)
    forged = json.loads(all_pass)
    forged["testResults"][0]["assertionResults"].append({"ancestorTitles": [], "title": "b", "status": "passed"})
    extra = read_run(task, ExecResult(0, "", False, 1.0), json.dumps(forged).encode())
    assert not extra.trustworthy and any("runner counted 1" in p for p in extra.problems)


def test_tap_report_missing_is_no_result() -> None:
    task = _js_task("tap", "node --test --test-reporter=tap --test-reporter-destination={report}")
    run = read_run(task, ExecResult(1, "", False, 1.0), None)
    assert not run.trustworthy and not run.results


def test_mocha_xunit_with_escaped_colour_codes_still_parses() -> None:
    """mocha's xunit reporter writes ANSI colours in failure messages as &#27;, which XML 1.0 forbids (seen on axios)."""
    xml = (b'<testsuite name="Mocha Tests" tests="2" failures="1" errors="0" skipped="0">'
           b'<testcase classname="a" name="ok" time="0"/>'
           b'<testcase classname="a" name="bad" time="0"><failure>&#27;[31mexpected&#27;[39m &#x1b;[0m &#9;tab</failure></testcase></testsuite>')
    parsed = parse_log("junit", xml)
    assert parsed.complete, parsed.problems
    assert parsed.results == {"a::ok": P, "a::bad": F}
