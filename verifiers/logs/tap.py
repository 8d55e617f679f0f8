"""TAP (Test Anything Protocol) streams: Node's own test runner (`node --test --test-reporter=tap`), ava
(`--tap`), tape and mocha's tap reporter.

Nested subtests (Node's built-in TAP reporter) sit four spaces deeper per level, each announced with
`# Subtest: NAME` before its children; the enclosing test's own `ok`/`not ok` line follows them. An
id is the names from the outermost subtest down, joined with " > " (`suite b > works`). A test that
has subtests is a container: its line is not a result of its own (its children are). The built-in
reporter names no file, so envfarm's images run Node's runner with their own reporter
(`tasks/envsetup/node/tap-reporter.mjs`), which prints flat lines whose names already carry the
file and the enclosing tests (`ok 5 - test/a.test.js > outer > inner ok`), the same on Node 18 and 20.

`# SKIP` and `# TODO` directives are skips (a failing TODO is not a failure in TAP). The runner's own
totals (`# tests`, `# pass`, `# fail`) land in `reported` for the grader's cross-check; a stream
without its top-level plan (`1..N`) or cut by `Bail out!` is incomplete.
"""

from __future__ import annotations

import re

from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.text import clean_lines, repo_path

_RESULT = re.compile(r"^(?P<indent> *)(?P<ok>ok|not ok)\b(?: +(?P<num>\d+))?(?: *-)? *(?P<rest>.*)$")
_SUBTEST = re.compile(r"^(?P<indent> *)# Subtest: (?P<name>.*)$")
_PLAN = re.compile(r"^(?P<indent> *)1\.\.(?P<n>\d+)")
_TOTAL = re.compile(r"^# (?P<key>tests|pass|fail|cancelled|skipped|todo|suites) (?P<n>\d+)$")
_DIRECTIVE = re.compile(r"(?:^|\s)#\s*(?P<word>SKIP|TODO)\b.*$", re.I)  # Node escapes a '#' in a name as '\#'


def _unescape(name: str) -> str:
    return name.replace("\\#", "#").replace("\\\\", "\\").strip()


def _split_directive(rest: str) -> tuple[str, str]:
    """(name, directive word or "") of a result line's text after the number."""
    match = _DIRECTIVE.search(rest)
    return (rest[: match.start()], match.group("word").upper()) if match else (rest, "")


def parse_tap(raw: bytes | str) -> ParsedLog:
    lines, problems = clean_lines(raw)
    parsed = ParsedLog(framework="tap", problems=problems)
    names: dict[int, str] = {}  # nesting level -> the subtest announced there
    pending: list[tuple[int, str, TestStatus]] = []  # (level, id, status) in stream order
    has_children: set[str] = set()
    top_plan: int | None = None
    top_results = 0
    bailed = False
    for line in lines:
        if line.lstrip().startswith("Bail out!"):
            bailed = True
            parsed.problems.append(f"the stream bailed out: {line.strip()[:200]}")
            break
        sub = _SUBTEST.match(line)
        if sub:
            level = len(sub.group("indent")) // 4
            names = {k: v for k, v in names.items() if k < level}
            names[level] = _unescape(sub.group("name"))
            continue
        result = _RESULT.match(line)
        if result:
            level = len(result.group("indent")) // 4
            name, directive = _split_directive(result.group("rest"))
            name = _unescape(name) or f"#{result.group('num') or '?'}"
            path = [names[k] for k in range(level) if k in names] + [name]
            path[0] = repo_path(path[0])
            test_id = " > ".join(path)
            if level > 0:
                has_children.add(" > ".join(path[:-1]))
            else:
                top_results += 1
            if directive:
                status = TestStatus.SKIPPED
            else:
                status = TestStatus.PASSED if result.group("ok") == "ok" else TestStatus.FAILED
            pending.append((level, test_id, status))
            parsed.count_line("results", status.value)
            names = {k: v for k, v in names.items() if k < level}
            continue
        plan = _PLAN.match(line)
        if plan and not plan.group("indent"):
            top_plan = int(plan.group("n"))
            continue
        total = _TOTAL.match(line)
        if total:
            key = {"pass": "passed", "fail": "failed"}.get(total.group("key"), total.group("key"))
            parsed.reported[key] = int(total.group("n"))
    for _level, test_id, status in pending:
        if test_id not in has_children:  # a container's line sums up its children
            parsed.add(test_id, status)
    if bailed:
        parsed.complete = False
    elif top_plan is None:
        parsed.complete = False
        parsed.problems.append("no top-level plan line (1..N): the stream was cut short")
    elif top_results != top_plan:
        parsed.complete = False
        parsed.problems.append(f"the plan announces {top_plan} top-level tests but {top_results} were reported")
    return parsed
