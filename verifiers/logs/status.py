"""Test outcomes and the parsed-log record shared by every framework's parser.

Which outcomes count as passing: the one place it is written (grading, validation and the run
checks point here). It matches the official SWE-bench harness (swebench 5.0.2,
`swebench/harness/grading.py`, evaluation type PASS_AND_FAIL):

| listed in     | PASSED | XFAIL | SKIPPED | FAILED / ERROR | missing from the log |
|---------------|--------|-------|---------|----------------|----------------------|
| FAIL_TO_PASS  | pass   | pass  | fail    | fail           | fail                 |
| PASS_TO_PASS  | pass   | pass  | pass    | fail           | fail                 |

- FAIL_TO_PASS passes only on PASSED or XFAIL (`TestStatus.succeeded`, the harness's `test_passed`);
  a skipped FAIL_TO_PASS test is a failure (`test_failed`), or a patch that makes the new tests skip
  would resolve the task.
- PASS_TO_PASS also accepts SKIPPED (`TestStatus.maintained`, the harness's `test_maintained`): a
  skip is not a regression.
- A listed test missing from the log failed, in both lists.
- Ids: envfarm's own tasks use exact ids and exact matching. Tasks that carry the harness's
  conventions (`TaskSpec.test_ids == "swebench"`: imported SWE-bench-family tasks, exports) are read
  by the harness's own parsers and matched by its own rule, including its prefix match for
  parametrized ids truncated in SWE-bench Verified's data (`_resolve_case`); see
  `envfarm.verifiers.harness`.

The miner decides the lists by the stricter rule on purpose (envfarm.tasks.validate.compare): a test
is FAIL_TO_PASS when it does not succeed before the fix and succeeds after it, PASS_TO_PASS when it
succeeds in both states. A test skipped in the environment proves nothing, so it is never listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class TestStatus(str, Enum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    ERROR = "ERROR"
    XFAIL = "XFAIL"

    __test__ = False  # not a pytest test class

    @property
    def succeeded(self) -> bool:
        """Passed, for FAIL_TO_PASS and for the miner: an expected failure is a success, a skip is not."""
        return self in (TestStatus.PASSED, TestStatus.XFAIL)

    @property
    def maintained(self) -> bool:
        """Passed, for PASS_TO_PASS: a skip is not a regression (see the table above)."""
        return self.succeeded or self is TestStatus.SKIPPED


# When one id is reported twice (a call that passed and a teardown that errored, or a forged line
# printed by the code under test next to the runner's real one) the worse outcome wins.
_SEVERITY = {TestStatus.PASSED: 0, TestStatus.XFAIL: 1, TestStatus.SKIPPED: 2, TestStatus.FAILED: 3, TestStatus.ERROR: 4}


def worse(a: TestStatus, b: TestStatus) -> TestStatus:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


@dataclass
class ParsedLog:
    """What a parser could read from one log, and what it could not.

    `reported` holds the runner's own totals (e.g. pytest's final "3 passed, 1 failed" line) so the
    grader can notice result lines that the runner never produced. `problems` lists, in words, every
    part of the log that could not be read (truncation, unknown lines, undecodable bytes).
    """

    framework: str
    results: dict[str, TestStatus] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    complete: bool = True  # the runner's final summary was found
    # How many result lines of each word each part of the log held ("summary" -> {"PASSED": 6}), before
    # merging by id: a forged line shows up here even when its id merges into another outcome.
    line_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # Whose naming `results` uses: "envfarm" (exact ids) or "swebench" (the harness's ids, matched by its rule).
    test_ids: str = "envfarm"
    # Under the harness's naming, envfarm's own exact reading of the same log: the checks against the
    # runner's totals count its results, since the harness's ids can merge tests (shared docstrings).
    native: ParsedLog | None = None
    # Lines that contradict the runner's own accounting (a result for a test that never started, more
    # passes than the runner's summary counts): forged or broken, and grading treats any as suspicious.
    contradictions: list[str] = field(default_factory=list)

    def count_line(self, source: str, word: str) -> None:
        bucket = self.line_counts.setdefault(source, {})
        bucket[word] = bucket.get(word, 0) + 1

    def add(self, test_id: str, status: TestStatus) -> None:
        test_id = test_id.strip()
        if not test_id:
            return
        previous = self.results.get(test_id)
        self.results[test_id] = status if previous is None else worse(previous, status)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for status in self.results.values():
            out[status.value] = out.get(status.value, 0) + 1
        return out
