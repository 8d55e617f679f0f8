"""Django's test runner (`./tests/runtests.py --verbosity 2` or `manage.py test -v 2`).

Its result lines are unittest's, but it prints much else around them — migrations ("Applying
app.0001_initial... OK"), database creation, system checks — and some of it looks like a result.
Those lines are dropped before the unittest reader sees them.
"""

from __future__ import annotations

import re

from envfarm.verifiers.logs.status import ParsedLog
from envfarm.verifiers.logs.text import clean_lines
from envfarm.verifiers.logs.unittest_log import _finish, parse_unittest_lines

_NOISE = re.compile(
    r"^\s*(Applying [\w.]+\.\.\.|Creating table |Running deferred SQL|Synchroniz|Creating test database|"
    r"Cloning test database|Destroying test database|Destroying old test database|System check identified|"
    r"Testing against Django installed|Importing application|Found \d+ test|Using existing test database|"
    r"Operations to perform|Running migrations|Apply all migrations|Synchronize unmigrated)"
)


def parse_django_log(raw: bytes | str) -> ParsedLog:
    lines, problems = clean_lines(raw)
    parsed = ParsedLog(framework="django", problems=problems)
    parse_unittest_lines(lines, parsed, noise=_NOISE)
    return _finish(parsed, "Django's runner")
