"""JUnit XML reports: pytest's `--junitxml`, and Go (go-junit-report / gotestsum), Jest (jest-junit),
Maven Surefire and Gradle, which all write the same <testsuite>/<testcase> shape.

The report is the tamper-resistant source: the runner writes it to a path outside the repository
that the code under test does not know. A report cut off mid-write is read incrementally, so every
complete <testcase> before the cut still counts and the cut is reported.

The bytes may still be hostile (the code under test can learn the path from argv): the reader never
raises on them. Oversized input (over `text.MAX_REPORT_BYTES`), a DTD (entity expansion), NUL bytes and
any other malformed XML make an incomplete log with a problem, never an exception, and the whole
report is never more than one bounded buffer.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.text import decode, report_bytes


def _pytest_node_id(file: str, classname: str, name: str) -> str:
    """Rebuild pytest's node id (`tests/test_a.py::TestK::test_x[p]`) from xunit1 attributes."""
    module = file[:-3].replace("/", ".") if file.endswith(".py") else file
    if not classname and name == module:  # a collection error names the module itself
        return file
    rest = classname[len(module) :].lstrip(".") if classname.startswith(module) else ""
    parts = [file, *[p for p in rest.split(".") if p], name]
    return "::".join(parts)


def testcase_id(case: ET.Element) -> str:
    name = case.get("name", "")
    classname = case.get("classname", "")
    file = case.get("file", "")
    if file.endswith(".py"):
        return _pytest_node_id(file, classname, name)
    return f"{classname}::{name}" if classname else name


def testcase_status(case: ET.Element) -> TestStatus:
    tags = {child.tag: child for child in case}
    if "error" in tags:
        return TestStatus.ERROR
    if "failure" in tags:
        return TestStatus.FAILED
    if "skipped" in tags:
        return TestStatus.XFAIL if tags["skipped"].get("type") == "pytest.xfail" else TestStatus.SKIPPED
    return TestStatus.PASSED


_CHUNK = 1 << 16


def _malformed(parsed: ParsedLog, why: str) -> None:
    parsed.complete = False
    parsed.problems.append(f"report is not well-formed XML ({why}); read the test cases before that point")


# Character references to control characters XML 1.0 forbids (all below 0x20 but tab, newline, return).
_CONTROL_REF = re.compile(rb"&#(?:0*(?:[0-8]|1[124-9]|2[0-9]|3[01])|[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F]));")


def parse_junit_xml(raw: bytes | str) -> ParsedLog:
    parsed = ParsedLog(framework="junit")
    data = report_bytes(raw, parsed.problems)
    if data is None:
        parsed.complete = False
        return parsed
    data = _CONTROL_REF.sub(b"&#xFFFD;", data)  # mocha's xunit reporter escapes ANSI colour codes as &#27;, which XML 1.0 forbids
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        parsed.complete = False
        parsed.problems.append("report declares a DTD or entities (no runner writes one): not parsed")
        return parsed
    parser = ET.XMLPullParser(events=("end",))
    suites_seen = 0
    # Errors surface from feed()/close() *and* from read_events() (the pull parser queues them), so
    # every call is guarded; events read before the error still count.
    try:
        for start in range(0, max(len(data), 1), _CHUNK):
            parser.feed(data[start : start + _CHUNK])
            suites_seen += _drain(parser, parsed)
        parser.close()
        suites_seen += _drain(parser, parsed)
    except (ET.ParseError, ValueError, TypeError, AttributeError, RecursionError, MemoryError) as exc:
        _malformed(parsed, f"{type(exc).__name__}: {str(exc)[:200]}")
    if suites_seen == 0 and parsed.complete:
        parsed.complete = False
        parsed.problems.append("no <testsuite> element in the report")
    if not parsed.results:
        text, _ = decode(data[:200].replace(b"\0", b""))
        parsed.problems.append(f"no <testcase> elements in the report (starts with {text[:80]!r})")
    return parsed


def _drain(parser: ET.XMLPullParser, parsed: ParsedLog) -> int:
    """Record the events parsed so far; returns how many <testsuite> elements closed."""
    suites = 0
    for _event, element in parser.read_events():
        if element.tag == "testcase":
            parsed.add(testcase_id(element), testcase_status(element))
            element.clear()
        elif element.tag == "testsuite":
            suites += 1
            for key in ("tests", "failures", "errors", "skipped"):
                value = element.get(key)
                if value is not None and value.isdigit():
                    parsed.reported[key] = parsed.reported.get(key, 0) + int(value)
            element.clear()
    return suites
