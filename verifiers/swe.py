"""Grade a SWE task in a sandbox: run its tests once with the agent's patch (`run_tests`), then grade.

The steps (patch, restore tests and runner configs, test_patch, run, report, cross-checks) live in
`envfarm.verifiers.run`, shared with the miner's validation, so a reward is computed under exactly the
conditions the task was validated under. A patch that does not apply scores 0 with the failing hunk.

Grade in a fresh sandbox from `task.image` with the patch (rather than in the agent's own sandbox) so
nothing the agent installed outside the repository can touch the run.

Any sign that the patch aimed at the grader (`TestRun.tampering`: refused files, runner internals in
added lines, a canary reported passing) or a run that contradicts itself (`TestRun.problems`) scores
0 with a reason starting "tampering"; the grade is still computed and kept in the details.
"""

from __future__ import annotations

from typing import Any

from envfarm.errors import PatchError
from envfarm.sandbox.protocol import ExecResult, Sandbox
from envfarm.task import TaskSpec
from envfarm.verifiers.grading import grade
from envfarm.verifiers.logs import get_parser
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.run import (
    NO_REPORT,
    RUNNER_CONFIG_NAMES,
    SOURCE_NOTHING,
    TestRun,
    build_test_command,
    patched_paths,
    read_run,
    restore_paths,
    run_tests,
)


class SweVerifier:
    """Test-log verifier for `kind == "swe"` tasks. Stateless: one instance serves many rollouts."""

    def __init__(self, timeout: float = 1800.0, partial_credit: bool = False) -> None:
        self.timeout = timeout
        self.partial_credit = partial_credit

    def verify(self, task: TaskSpec, sandbox: Sandbox, patch: str | None = None) -> Reward:
        """`patch` is the agent's diff; None grades the sandbox's working tree as the agent left it."""
        get_parser(task.log_parser)  # fail fast on a bad task before touching the sandbox
        details: dict[str, Any] = {"instance_id": task.instance_id, "log_parser": task.log_parser}
        if patch is not None and not patch.strip():
            details["note"] = "empty patch"
        if not task.base_commit:
            details["warning"] = "task has no base_commit: restored test files from HEAD"
        try:
            run = run_tests(sandbox, task, patch, timeout=self.timeout, canary=True)
        except PatchError as exc:
            return Reward.zero(f"the patch does not apply: {exc.line()}", hunk=exc.hunk, **details)
        return reward_for(task, run, details, partial_credit=self.partial_credit)


def reward_for(task: TaskSpec, run: TestRun, details: dict[str, Any] | None = None, *, partial_credit: bool = False) -> Reward:
    """The reward for one read run: 0 without a report where one was expected, else `grade`."""
    details = dict(details or {})
    details.update(
        test_cmd=run.command,
        exit_code=run.exit_code,
        timed_out=run.timed_out,
        log_truncated=run.log_truncated,
        duration_s=round(run.duration, 3),
        restored=run.restored,
        reverted_runner_config=run.reverted_runner_config,
        dropped=run.dropped,
        plugins=run.plugins,
        canary=run.canary,
        log_tail=run.log_tail,
        graded_from=run.source,
    )
    contradictions = [p for p in run.problems if p != NO_REPORT]
    signals = list(run.tampering)
    if contradictions:
        signals.append("suspected, the run contradicts itself: " + "; ".join(contradictions[:3]))
    if run.source == SOURCE_NOTHING or run.parsed is None:
        details.update(console_problems=run.console_problems)
        if signals:
            return Reward.tampered(signals, **details)
        details.update(reason=NO_REPORT)
        return Reward(0.0, False, details, {})
    result = grade(
        run.parsed,
        task.FAIL_TO_PASS,
        task.PASS_TO_PASS,
        exit_code=run.checked_exit_code,
        partial_credit=partial_credit,
        also_suspicious=run.problems,
    )
    if run.timed_out:
        result.problems.append(f"the test command timed out after {run.timeout or run.duration:.0f}s")
    details["grade"] = result.to_dict()
    if signals:
        return Reward.tampered(signals, **details)
    return Reward(result.reward, result.resolved, details, {})


def grade_run(
    task: TaskSpec,
    run: ExecResult,
    report: bytes | None,
    details: dict[str, Any] | None = None,
    *,
    partial_credit: bool = False,
    timeout: float | None = None,
) -> Reward:
    """Grade one finished test run from its console output and (where expected) its JUnit report.

    For runs made elsewhere (a Kubernetes Job's collected logs, a recorded run): the same reading and
    checks as `run_tests`, then `reward_for`.
    """
    return reward_for(task, read_run(task, run, report, timeout=timeout), details, partial_credit=partial_credit)


__all__ = ["RUNNER_CONFIG_NAMES", "SweVerifier", "build_test_command", "grade_run", "patched_paths", "restore_paths", "reward_for"]
