"""Log parsers by name: a task's `install.log_parser` picks one.

Each maps a runner's output to {test id: TestStatus} and says what it could not read; none raises on
a truncated or garbled log. Names of the form `swebench:<owner/repo>` or `swebench:<harness parser>`
read a log as the SWE-bench harness does, with its test ids (`TaskSpec.test_ids == "swebench"`).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from envfarm.errors import EnvfarmError
from envfarm.verifiers import harness
from envfarm.verifiers.logs.cargo_log import parse_cargo_log
from envfarm.verifiers.logs.django_log import parse_django_log
from envfarm.verifiers.logs.gotest import parse_gotest_log
from envfarm.verifiers.logs.harness_log import parse_harness_log
from envfarm.verifiers.logs.jest_json import parse_jest_json
from envfarm.verifiers.logs.junit import parse_junit_xml
from envfarm.verifiers.logs.pytest_log import parse_pytest_log
from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.sympy_log import parse_sympy_log
from envfarm.verifiers.logs.tap import parse_tap
from envfarm.verifiers.logs.unittest_log import parse_unittest_log

LogParser = Callable[[bytes | str], ParsedLog]

PARSERS: dict[str, LogParser] = {
    "pytest": parse_pytest_log,
    "unittest": parse_unittest_log,
    "django": parse_django_log,
    "junit": parse_junit_xml,
    "sympy": parse_sympy_log,
    "gotest": parse_gotest_log,  # `go test -json` events
    "cargo": parse_cargo_log,  # `cargo test` console (libtest's JSON is unstable-only)
    # JavaScript / TypeScript: Jest and Vitest JSON reports (one shape, two id conventions on export),
    # TAP from Node's own runner, ava and tape; mocha writes JUnit through its xunit reporter.
    "jest": parse_jest_json,
    "vitest": parse_jest_json,
    "tap": parse_tap,
}
# Parsers that read a report file the runner writes (`{report}` in the test command), never the console:
# a runner whose console is for humans (Jest, Vitest, mocha's spec output) is cross-checked by its exit
# code alone. Every other parser reads the console, and with a report the report is the trusted source.
REPORT_PARSERS = frozenset({"junit", "jest", "vitest", "tap"})
# Which language's runners each parser reads (the entry point a language module documents and tests).
LANGUAGE_PARSERS: dict[str, tuple[str, ...]] = {
    "python": ("pytest", "unittest", "django", "sympy", "junit"),
    "javascript": ("jest", "vitest", "tap", "junit"),
    "typescript": ("jest", "vitest", "tap", "junit"),
    "go": ("gotest", "junit"),
    "rust": ("cargo",),
}


def register_parser(name: str, parser: LogParser, *, language: str, report: bool = False) -> None:
    """Add a language's parser (`report`: it reads the runner's report file, not the console)."""
    global REPORT_PARSERS
    PARSERS[name] = parser
    LANGUAGE_PARSERS[language] = tuple(dict.fromkeys([*LANGUAGE_PARSERS.get(language, ()), name]))
    if report:
        REPORT_PARSERS = REPORT_PARSERS | {name}


def reads_console(name: str) -> bool:
    """Whether a task whose log_parser is `name` has per-test lines on its console to read."""
    return name not in REPORT_PARSERS


def report_parser(name: str) -> str:
    """The parser for the report file of a task whose log_parser is `name` (pytest's report is JUnit)."""
    return name if name in REPORT_PARSERS else "junit"


def get_parser(name: str) -> LogParser:
    if name.startswith(harness.PREFIX):
        spec = name[len(harness.PREFIX):]
        harness.parser_for(spec)  # an unknown repository or parser fails here, before any sandbox is opened
        return partial(parse_harness_log, spec=spec)
    try:
        return PARSERS[name]
    except KeyError:
        raise EnvfarmError(
            f"unknown log parser {name!r}",
            f"set the task's install.log_parser to one of: {', '.join(sorted(PARSERS))}, or swebench:<owner/repo>",
        ) from None


def parse_log(name: str, raw: bytes | str) -> ParsedLog:
    return get_parser(name)(raw)


__all__ = ["LANGUAGE_PARSERS", "PARSERS", "REPORT_PARSERS", "LogParser", "ParsedLog", "TestStatus", "get_parser", "parse_log",
           "reads_console", "register_parser", "report_parser"]
