"""FAIL_TO_PASS / PASS_TO_PASS grading of one parsed log, with the checks that keep it honest.

A test absent from the log failed (deleted tests, crashed runs and truncated logs all land here).
Which statuses pass in which list (SWE-bench's rules) is written once, in
`envfarm.verifiers.logs.status`.
A log whose result lines disagree with the runner's own totals, or with its exit code, is treated as
forged or broken: it is never resolved, whatever the result lines say.

A log read under the harness's conventions (`ParsedLog.test_ids == "swebench"`) is graded by the
harness's own rules (`test_passed`, `test_maintained` and its id lookup, called from the pinned
`swebench` package), so a task imported from the SWE-bench family resolves exactly when the harness
says it does; the checks against the runner's totals use envfarm's exact reading of the same log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from envfarm.errors import EnvfarmError
from envfarm.verifiers import harness
from envfarm.verifiers.logs.status import ParsedLog, TestStatus


@dataclass
class ListGrade:
    """How one list (FAIL_TO_PASS or PASS_TO_PASS) fared."""

    total: int
    passed: int
    not_passed: dict[str, str] = field(default_factory=dict)  # id -> status, or "MISSING"

    @property
    def all_passed(self) -> bool:
        return self.passed == self.total


@dataclass
class Grade:
    fail_to_pass: ListGrade
    pass_to_pass: ListGrade
    resolved: bool
    reward: float
    problems: list[str]
    suspicious: list[str]
    log_complete: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _grade_list(ids: Iterable[str], results: dict[str, TestStatus], passes: Callable[[TestStatus], bool]) -> ListGrade:
    ids = list(dict.fromkeys(ids))
    grade = ListGrade(total=len(ids), passed=0)
    for test_id in ids:
        status = results.get(test_id)
        if status is not None and passes(status):
            grade.passed += 1
        else:
            grade.not_passed[test_id] = status.value if status else "MISSING"
    return grade


def _grade_list_as_harness(ids: Iterable[str], results: dict[str, TestStatus], maintained: bool) -> ListGrade:
    """One list graded by the harness's functions: its prefix match for truncated ids, its pass rules."""
    ids = list(dict.fromkeys(ids))
    status_map = {test_id: status.value for test_id, status in results.items()}
    passes = harness.test_maintained if maintained else harness.test_passed
    grade = ListGrade(total=len(ids), passed=0)
    for test_id in ids:
        if passes(test_id, status_map):
            grade.passed += 1
        else:
            key = harness.resolve_case(test_id, status_map)
            grade.not_passed[test_id] = status_map[key] if key is not None else "MISSING"
    return grade


def consistency_problems(parsed: ParsedLog, exit_code: int | None = None) -> list[str]:
    """Ways the result lines contradict the runner's own accounting.

    Under the harness's naming the checks count envfarm's own exact reading of the log
    (`parsed.native`): the harness's ids can merge several tests into one.
    """
    parsed = parsed.native or parsed
    found: list[str] = list(parsed.contradictions)
    counts = parsed.counts()
    bad_lines = counts.get("FAILED", 0) + counts.get("ERROR", 0)
    rep = parsed.reported
    if parsed.framework == "pytest" and parsed.complete and rep:
        for source, words in sorted(parsed.line_counts.items()):
            for word, key in (("PASSED", "passed"), ("XPASS", "xpassed"), ("XFAIL", "xfailed")):
                if words.get(word, 0) > rep.get(key, 0):
                    where = {"summary": "the short test summary", "verbose": "the verbose output"}.get(source, source)
                    found.append(f"{words[word]} {word} lines in {where} but pytest counted {rep.get(key, 0)}")
    if parsed.framework in ("unittest", "django") and "ran" in rep:
        if len(parsed.results) > rep["ran"]:
            found.append(f"{len(parsed.results)} result lines but the runner says it ran {rep['ran']} tests")
        if rep.get("verdict_ok") == 0 and bad_lines == 0 and not any("setUp" in p or "tearDown" in p for p in parsed.problems):
            found.append("the runner's verdict is FAILED but no failing test was read")
    if parsed.framework == "junit" and parsed.complete and "tests" in rep and len(parsed.results) > rep["tests"]:
        found.append(f"{len(parsed.results)} test cases but the suites declare {rep['tests']}")
    if exit_code is not None and exit_code != 0 and bad_lines == 0 and parsed.complete:
        # pytest 5 = no tests collected; every other non-zero exit means something failed or broke.
        found.append(f"the runner exited with {exit_code} but no failing test was read")
    return found


def grade(
    parsed: ParsedLog,
    fail_to_pass: Iterable[str],
    pass_to_pass: Iterable[str],
    *,
    exit_code: int | None = None,
    partial_credit: bool = False,
    also_suspicious: Iterable[str] = (),
) -> Grade:
    """Grade one run. `partial_credit` gives the fraction of listed tests passing instead of 1/0.

    `also_suspicious` adds problems found by whoever read the run (`run_tests` cross-checks the
    report with the console log); any suspicious finding scores 0.
    """
    f2p_ids, p2p_ids = list(fail_to_pass), list(pass_to_pass)
    if not f2p_ids and not p2p_ids:
        raise EnvfarmError(
            "the task lists no FAIL_TO_PASS and no PASS_TO_PASS tests, so nothing can be graded",
            "re-run the miner's validation for this task (it must find at least one FAIL_TO_PASS test)",
        )
    if parsed.test_ids == "swebench":
        f2p = _grade_list_as_harness(f2p_ids, parsed.results, maintained=False)
        p2p = _grade_list_as_harness(p2p_ids, parsed.results, maintained=True)
    else:
        f2p = _grade_list(f2p_ids, parsed.results, lambda s: s.succeeded)
        p2p = _grade_list(p2p_ids, parsed.results, lambda s: s.maintained)
    suspicious = list(dict.fromkeys([*also_suspicious, *consistency_problems(parsed, exit_code)]))
    resolved = f2p.all_passed and p2p.all_passed and not suspicious
    if suspicious:
        reward = 0.0
    elif partial_credit:
        reward = (f2p.passed + p2p.passed) / (f2p.total + p2p.total)
    else:
        reward = 1.0 if resolved else 0.0
    return Grade(
        fail_to_pass=f2p,
        pass_to_pass=p2p,
        resolved=resolved,
        reward=reward,
        problems=list(parsed.problems),
        suspicious=suspicious,
        log_complete=parsed.complete,
    )
