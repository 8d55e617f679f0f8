"""`cargo test` console output: unit, integration and doc-tests, per test binary.

Why text and not `--format json`: libtest's JSON output needs `-Z unstable-options`, which stable
toolchains (Debian's included) refuse; the text format has been stable since Rust 1.0.

Ids are `<binary>@<source>::<test path>`, because a test path alone (`tests::it_works`) repeats
across the crate's lib, bins and integration tests: `sample@src/lib.rs::tests::adds`,
`integration@tests/integration.rs::it_adds`, and for doc-tests `sample@doc::src/lib.rs - add (line 5)`.
`<binary>` is the test executable's name without cargo's hash (the crate name for unit tests, the file
stem for integration tests); `<source>` comes from cargo's `Running` line (absent before cargo 1.52,
when the id is `<binary>::<test>`).

What the lines do not say on their own, and how it is read:
- a test binary that prints no libtest output at all (`harness = false`) has no results and makes the
  log incomplete (its own words are not read);
- a test binary that dies (abort, stack overflow, `process::exit`) prints no `test result:` line:
  its tests without a result line are missing (failed), the binary itself is an ERROR result
  (`<binary>@<source>`), and the log is incomplete;
- a crate that does not compile (`error: could not compile`): no test of it runs; the crate is an
  ERROR result `<crate>@build`, so a failing run always has a failing result;
- forgery: a test can write `test x ... ok` straight to stdout (libtest captures only `print!`). Each
  binary's `test result:` line counts its passes and failures; more `ok` lines than it counts, or a
  result for a name the `running N tests` header cannot hold, is a contradiction (grading treats the
  run as suspicious), and a test reported twice keeps the worse outcome.
"""

from __future__ import annotations

import re

from envfarm.verifiers.logs.status import ParsedLog, TestStatus
from envfarm.verifiers.logs.text import clean_lines

FRAMEWORK = "cargo"
SEPARATOR = "::"
_RUNNING = re.compile(r"^\s*Running (?:unittests )?(?:(?P<source>\S+) )?\(?(?P<path>[^\s()]+)\)?$")
_DOCTESTS = re.compile(r"^\s*Doc-tests (?P<crate>\S+)$")
_HEADER = re.compile(r"^running (?P<n>\d+) tests?$")
_RESULT = re.compile(r"^test (?P<name>.+?) \.\.\. (?P<outcome>ok|FAILED|ignored(?:, .*)?|bench:.*)$")
_SUMMARY = re.compile(r"^test result: (?P<verdict>ok|FAILED)\. (?P<passed>\d+) passed; (?P<failed>\d+) failed; (?P<ignored>\d+) ignored")
_COMPILE_ERROR = re.compile(r"^error: could not compile `(?P<crate>[^`]+)`")
_HASH = re.compile(r"-[0-9a-f]{16}$")
_SHOULD_PANIC = re.compile(r" - should panic$")


def binary_name(path: str) -> str:
    stem = path.rsplit("/", 1)[-1]
    stem = stem[:-4] if stem.endswith(".exe") else stem
    return _HASH.sub("", stem)


def split_id(test_id: str) -> tuple[str, str]:
    """(target, test name): the name is what `cargo test` prints after `test `."""
    target, _, name = test_id.partition(SEPARATOR)
    return target, name


class _Binary:
    def __init__(self, target: str) -> None:
        self.target = target
        self.declared: int | None = None
        self.summary: dict[str, int] | None = None
        self.lines: dict[str, int] = {"ok": 0, "FAILED": 0, "ignored": 0}
        self.results: list[tuple[str, TestStatus]] = []


def parse_cargo_log(raw: bytes | str) -> ParsedLog:
    lines, problems = clean_lines(raw)
    parsed = ParsedLog(framework=FRAMEWORK, problems=problems)
    binaries: list[_Binary] = []
    current: _Binary | None = None
    for line in lines:
        match = _RUNNING.match(line)
        if match and "/" in match.group("path"):
            source = match.group("source")
            name = binary_name(match.group("path"))
            current = _Binary(f"{name}@{source}" if source else name)
            binaries.append(current)
            continue
        match = _DOCTESTS.match(line)
        if match:
            current = _Binary(f"{match.group('crate').replace('-', '_')}@doc")
            binaries.append(current)
            continue
        match = _COMPILE_ERROR.match(line)
        if match:
            parsed.add(f"{match.group('crate')}@build", TestStatus.ERROR)
            parsed.problems.append(line[:300])
            current = None
            continue
        if current is None:
            continue
        match = _HEADER.match(line)
        if match and current.declared is None:
            current.declared = int(match.group("n"))
            continue
        match = _SUMMARY.match(line)
        if match:
            if current.summary is not None:
                parsed.contradictions.append(f"two `test result:` lines for {current.target}")
                continue
            current.summary = {k: int(match.group(k)) for k in ("passed", "failed", "ignored")}
            parsed.reported[current.target] = current.summary["passed"]
            continue
        match = _RESULT.match(line)
        if match:  # also after the summary: a forged early summary must not hide the real lines
            outcome = match.group("outcome")
            word = "ok" if outcome == "ok" else "FAILED" if outcome == "FAILED" else "ignored" if outcome.startswith("ignored") else ""
            if not word:
                continue  # a benchmark line, run as a test: no verdict
            name = _SHOULD_PANIC.sub("", match.group("name"))
            current.lines[word] += 1
            parsed.count_line(current.target, word)
            status = {"ok": TestStatus.PASSED, "FAILED": TestStatus.FAILED, "ignored": TestStatus.SKIPPED}[word]
            current.results.append((f"{current.target}{SEPARATOR}{name}", status))
    for binary in binaries:
        if binary.declared is None and binary.summary is None:
            # `harness = false` (the test prints what it likes) or a binary killed before it started: not
            # a result, and nothing vouches for the run's exit code either.
            parsed.complete = False
            parsed.problems.append(f"test binary {binary.target} printed no libtest output (a custom harness, or it died before starting)")
            continue
        if binary.summary is None:
            # Its result lines are not believed: nothing the runner counted vouches for them (a test can
            # print `ok` lines and a `Running` line of its own). Its tests are missing, i.e. failed.
            parsed.complete = False
            parsed.add(binary.target, TestStatus.ERROR)
            for test_id, status in binary.results:
                if not status.succeeded:
                    parsed.add(test_id, status)
            parsed.problems.append(f"test binary {binary.target} ended without a `test result:` line (it crashed, aborted or was killed)")
            continue
        for test_id, status in binary.results:
            parsed.add(test_id, status)
        for word, key in (("ok", "passed"), ("FAILED", "failed")):
            if binary.lines[word] > binary.summary[key]:
                parsed.contradictions.append(
                    f"{binary.lines[word]} `{word}` lines for {binary.target} but its `test result:` line counts {binary.summary[key]} {key}")
        total = sum(binary.lines.values())
        if binary.declared is not None and total > binary.declared:
            parsed.contradictions.append(f"{total} result lines for {binary.target} but it said `running {binary.declared} tests`")
        if binary.summary["failed"] > binary.lines["FAILED"]:
            parsed.problems.append(f"{binary.target}: {binary.summary['failed']} failures counted but {binary.lines['FAILED']} result lines read")
    if not binaries and not parsed.results:
        parsed.complete = False
        parsed.problems.append("no `cargo test` output in the log (no `Running` or `Doc-tests` line, no compile error)")
    return parsed
