"""Validation: which tests the fix turns from failing to passing, measured in real sandboxes.

Each run is one `run_tests` (envfarm.verifiers.run) in a fresh sandbox from the instance image: state
"before" with no patch, state "after" with the gold `patch`; either way the test files are restored to
the base and `test_patch` is applied, and the tests it selects run. These are the very steps and checks
the verifier grades with: the JUnit report written outside the repo is the record, the console log and
the exit code must agree with it (a patch that prints fake "PASSED" lines, or a runner that dies
without reporting, makes the run unusable, not a pass).
FAIL_TO_PASS = failed in every "before" run and passed in every "after" run; PASS_TO_PASS = passed in all
runs (which statuses count as passing: envfarm.verifiers.logs.status); a test whose outcome changes
between repeats of the same state is flaky and dropped. Finally the task is graded by `SweVerifier`
exactly as the RL loop will grade it: the gold patch must score 1 and an empty patch 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from envfarm.errors import EngineUnavailable, ImageMissing, PatchError, SandboxError
from envfarm import sandbox as sandboxes
from envfarm.sandbox import Sandbox
from envfarm.task import TaskSpec
from envfarm.verifiers.logs.status import TestStatus
from envfarm.verifiers.run import SOURCE_NOTHING, TestPatchError, TestRun, run_tests
from envfarm.verifiers.swe import SweVerifier

INFRA_ERRORS = (SandboxError, EngineUnavailable, ImageMissing)


class InfraFailure(Exception):
    """Not the task's fault (engine error, timeout, out of disk): retry, never count as a result."""

    def __init__(self, reason_class: str, reason: str) -> None:
        self.reason_class = reason_class
        self.reason = reason
        super().__init__(f"{reason_class}: {reason}")


@dataclass
class RunOutcome:
    """One validation run: which state it tested, and the run itself."""

    state: str
    run: TestRun

    @property
    def results(self) -> dict[str, TestStatus]:
        return self.run.results

    def summary(self) -> dict[str, Any]:
        run = self.run
        return {"state": self.state, "exit_code": run.exit_code, "tests": len(run.results), "usable": run.trustworthy,
                "problems": run.problems[:3], "seconds": round(run.duration, 2)}

    def why_unusable(self) -> str:
        why = "; ".join(self.run.problems)
        return f"{why}; {self.run.log_tail[-500:]}" if self.run.source == SOURCE_NOTHING else why


@dataclass
class Validation:
    accepted: bool
    reason_class: str = ""
    reason: str = ""
    fail_to_pass: list[str] = field(default_factory=list)
    pass_to_pass: list[str] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


SandboxFactory = Callable[[str, str], Sandbox]


def default_sandbox(image: str, task_id: str, run_id: str = "mine") -> Sandbox:
    return sandboxes.open(image, run_id=run_id, task_id=task_id)


def run_state(task: TaskSpec, state: str, timeout: float, sandbox_factory: Callable[[], Sandbox]) -> RunOutcome:
    """One test run in a fresh sandbox. PatchError/TestPatchError: the task is broken; SandboxError: infra."""
    with sandbox_factory() as sandbox:
        run = run_tests(sandbox, task, task.patch if state == "after" else "", timeout=timeout)
    if run.timed_out:
        raise InfraFailure("timeout", f"the test command ran past {timeout:.0f}s in state {state}")
    return RunOutcome(state, run)


def compare(before: list[RunOutcome], after: list[RunOutcome]) -> tuple[list[str], list[str], list[str]]:
    """(FAIL_TO_PASS, PASS_TO_PASS, flaky) from repeated runs of both states.

    A test missing from a run's results (its module failed to import, say) did not succeed there;
    "succeeded" is `TestStatus.succeeded`, so a test skipped in both states is listed nowhere.
    """
    ids = set().union(*(r.results for r in before + after))
    f2p, p2p, flaky = [], [], []
    for test_id in sorted(ids):
        b = {r.results.get(test_id) for r in before}
        a = {r.results.get(test_id) for r in after}
        if len(b) > 1 or len(a) > 1:
            flaky.append(test_id)
            continue
        (sb,), (sa,) = b, a
        b_ok = sb is not None and sb.succeeded
        a_ok = sa is not None and sa.succeeded
        if a_ok and not b_ok:
            f2p.append(test_id)
        elif a_ok and b_ok:
            p2p.append(test_id)
    return f2p, p2p, flaky


def validate(
    task: TaskSpec,
    repeats: int = 3,
    timeout: float = 900.0,
    sandbox: SandboxFactory = default_sandbox,
    confirm: bool = True,
) -> Validation:
    """Validate one task; raises InfraFailure for anything that is not the task's own result."""
    factory = lambda: sandbox(task.image, task.instance_id)  # noqa: E731
    runs: list[RunOutcome] = []
    try:
        for _ in range(max(1, repeats)):
            for state in ("before", "after"):
                runs.append(run_state(task, state, timeout, factory))
    except (PatchError, TestPatchError) as exc:
        return Validation(False, "patch_does_not_apply", exc.line()[:500])
    except INFRA_ERRORS as exc:
        raise InfraFailure("engine_error", exc.line()[:500]) from exc
    summary = [r.summary() for r in runs]
    if all(r.run.exit_code == 5 and not r.results for r in runs):  # pytest's "no tests collected"
        return Validation(False, "no_tests_collected", "the tests touched by test_patch collect no test in either state", runs=summary)
    unusable = [r for r in runs if not r.run.trustworthy]
    if unusable:
        return Validation(False, "untrustworthy_log", unusable[0].why_unusable()[:500], runs=summary)
    if all(not r.results for r in runs):  # a runner whose output the task's parser cannot read (a custom harness)
        said = next((p for r in runs for p in r.run.log_problems), "")
        return Validation(False, "no_test_results", f"no run gave a result the {task.log_parser!r} parser could read"
                          + (f": {said}" if said else ""), runs=summary)
    before = [r for r in runs if r.state == "before"]
    after = [r for r in runs if r.state == "after"]
    f2p, p2p, flaky = compare(before, after)
    if not f2p:
        why = "flaky tests only" if flaky else "no test fails before the fix and passes after it"
        return Validation(False, "no_fail_to_pass", why, [], p2p, flaky, summary)
    result = Validation(True, fail_to_pass=f2p, pass_to_pass=p2p, flaky=flaky, runs=summary)
    if confirm:
        graded = task.model_copy(update={"FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p})
        verifier = SweVerifier(timeout=timeout)
        try:
            with factory() as box:
                gold = verifier.verify(graded, box, task.patch)
            with factory() as box:
                empty = verifier.verify(graded, box, "")
        except INFRA_ERRORS as exc:
            raise InfraFailure("engine_error", exc.line()[:500]) from exc
        if not gold.passed or empty.passed:
            return Validation(False, "verifier_disagrees", f"gold patch reward {gold.value}, empty patch reward {empty.value}", f2p, p2p, flaky, summary)
    return result
