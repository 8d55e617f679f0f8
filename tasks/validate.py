"""Validation: which tests the fix turns from failing to passing, measured in real sandboxes.

For each run a fresh sandbox starts from the instance image; the test files are restored to the base,
`test_patch` is applied (state "before"), plus the gold `patch` (state "after"), and the tests touched by
`test_patch` run. Outcomes come from the verifiers' parsers: the JUnit report written outside the repo
is the record, the console log and the exit code must agree with it (a patch that prints fake "PASSED"
lines, or a runner that dies without reporting, makes the run unusable, not a pass).
FAIL_TO_PASS = failed in every "before" run and passed in every "after" run; PASS_TO_PASS = passed in all
runs; a test whose outcome changes between repeats of the same state is flaky and dropped. Finally the
task is graded by `SweVerifier` exactly as the RL loop will grade it: the gold patch must score 1 and an
empty patch 0.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from envfarm.errors import EngineUnavailable, ImageMissing, PatchError, SandboxError
from envfarm import sandbox as sandboxes
from envfarm.sandbox import Sandbox
from envfarm.task import TaskSpec
from envfarm.verifiers.grading import consistency_problems
from envfarm.verifiers.logs import parse_log
from envfarm.verifiers.logs.status import TestStatus
from envfarm.verifiers.swe import SweVerifier, build_test_command, patched_paths, restore_paths

INFRA_ERRORS = (SandboxError, EngineUnavailable, ImageMissing)


class InfraFailure(Exception):
    """Not the task's fault (engine error, timeout, out of disk): retry, never count as a result."""

    def __init__(self, reason_class: str, reason: str) -> None:
        self.reason_class = reason_class
        self.reason = reason
        super().__init__(f"{reason_class}: {reason}")


@dataclass
class RunOutcome:
    state: str
    exit_code: int
    results: dict[str, TestStatus]
    usable: bool
    problems: list[str] = field(default_factory=list)
    duration: float = 0.0


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
    """One test run in a fresh sandbox. PatchError means the task is broken; SandboxError is infra."""
    with sandbox_factory() as sandbox:
        restore_paths(sandbox, task, task.base_commit, patched_paths(task.test_patch))
        sandbox.apply_patch(task.test_patch, workdir=task.workdir)
        if state == "after":
            sandbox.apply_patch(task.patch, workdir=task.workdir)
        report_path = f"/tmp/envfarm-report-{secrets.token_hex(8)}.xml"
        run = sandbox.exec(build_test_command(task, report_path), timeout=timeout, workdir=task.workdir)
        if run.timed_out:
            raise InfraFailure("timeout", f"the test command ran past {timeout:.0f}s in state {state}")
        try:
            report: bytes | None = sandbox.read_file(report_path)
        except SandboxError:
            report = None
    console = parse_log(task.log_parser, run.output)
    problems = consistency_problems(console, run.exit_code)
    if report is None:
        return RunOutcome(state, run.exit_code, {}, False, ["the runner wrote no JUnit report", run.output[-500:]], run.duration)
    parsed = parse_log("junit", report)
    flipped = [t for t, s in console.results.items() if not s.succeeded and t in parsed.results and parsed.results[t].succeeded]
    if flipped:
        problems.append(f"console and report disagree on {flipped[:5]}")
    if run.exit_code == 0 and any(not s.succeeded and s != TestStatus.SKIPPED for s in parsed.results.values()):
        problems.append("the runner exited 0 but the report holds failures")
    return RunOutcome(state, run.exit_code, dict(parsed.results), not problems, problems, run.duration)


def compare(before: list[RunOutcome], after: list[RunOutcome]) -> tuple[list[str], list[str], list[str]]:
    """(FAIL_TO_PASS, PASS_TO_PASS, flaky) from repeated runs of both states."""
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
    except PatchError as exc:
        return Validation(False, "patch_does_not_apply", exc.line()[:500])
    except INFRA_ERRORS as exc:
        raise InfraFailure("engine_error", exc.line()[:500]) from exc
    summary = [{"state": r.state, "exit_code": r.exit_code, "tests": len(r.results), "usable": r.usable, "problems": r.problems[:3], "seconds": round(r.duration, 2)} for r in runs]
    if all(r.exit_code == 5 and not r.results for r in runs):  # pytest's "no tests collected"
        return Validation(False, "no_tests_collected", "the tests touched by test_patch collect no test in either state", runs=summary)
    unusable = [r for r in runs if not r.usable]
    if unusable:
        return Validation(False, "untrustworthy_log", "; ".join(unusable[0].problems)[:500], runs=summary)
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
