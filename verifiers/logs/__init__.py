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
from envfarm.verifiers.logs.junit import parse_junit_xml
from envfarm.verifiers.logs.pytest_log import parse_pytest_log
from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.sympy_log import parse_sympy_log
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
}


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


__all__ = ["PARSERS", "LogParser", "ParsedLog", "TestStatus", "get_parser", "parse_log"]
