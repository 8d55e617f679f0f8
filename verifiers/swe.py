"""Grade a SWE task in a sandbox: apply the agent's patch, put the task's tests back, run, grade.

Order matters for honesty:
1. the agent's patch is applied (if it does not apply: reward 0 with the failing hunk);
2. every file the task's `test_patch` touches, and every test-runner config or conftest the agent
   changed, is restored to `base_commit` (files that did not exist there are deleted), then
   `test_patch` is applied, so edits to tests or to the runner's configuration do not count;
3. the test command runs with a timeout; for pytest the results are read from a JUnit report written
   to a random path outside the repository, and cross-checked with the console log and exit code.

Grade in a fresh sandbox from `task.image` with the patch (rather than in the agent's own sandbox) so
nothing the agent installed outside the repository can touch the run.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from typing import Any

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from envfarm.errors import EnvfarmError, PatchError, SandboxError
from envfarm.sandbox.protocol import ExecResult, Sandbox
from envfarm.task import TaskSpec
from envfarm.verifiers.grading import grade
from envfarm.verifiers.logs import get_parser, parse_log
from envfarm.verifiers.reward import Reward

# Files whose content changes how tests are collected or reported; an agent has no business editing
# them to fix a bug, and a tampered one can skip, deselect or rewrite test outcomes.
RUNNER_CONFIG_NAMES = frozenset(
    {"conftest.py", "pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml", "sitecustomize.py", "usercustomize.py", "runtests.py", "manage.py"}
)
REPORT_PLACEHOLDER = "{report}"
LOG_TAIL_CHARS = 2000  # kept in the reward's details so a zero can be explained without re-running


def patched_paths(diff: str) -> list[str]:
    """Paths a unified diff touches (source and target side), relative to the repository root."""
    if not diff.strip():
        return []
    try:
        patch = PatchSet(diff)
    except UnidiffParseError as exc:
        raise EnvfarmError(f"the task's test_patch is not a unified diff: {exc}", "re-export the task from the miner") from exc
    paths: set[str] = set()
    for item in patch:
        for name in (item.source_file, item.target_file):
            if name and name != "/dev/null":
                paths.add(name[2:] if name[:2] in ("a/", "b/") else name)
    return sorted(paths)


def build_test_command(task: TaskSpec, report_path: str) -> str:
    """The task's test command, made to write a JUnit report we can trust (pytest), plus its targets."""
    cmd = task.test_cmd
    directives = task.extra.get("test_directives")
    if directives is None and task.log_parser == "pytest":
        directives = [p for p in patched_paths(task.test_patch) if p.endswith(".py")]
    if REPORT_PLACEHOLDER in cmd:
        cmd = cmd.replace(REPORT_PLACEHOLDER, shlex.quote(report_path))
    elif task.log_parser == "pytest":
        cmd += (
            f" -rA -p no:cacheprovider --rootdir={shlex.quote(task.workdir)} -o junit_family=xunit1"
            f" --junitxml={shlex.quote(report_path)}"
        )
    if directives:
        cmd += " " + " ".join(shlex.quote(d) for d in directives)
    return cmd


def _changed_paths(sandbox: Sandbox, task: TaskSpec, base: str) -> list[str]:
    """Tracked files that differ from base, plus untracked files (new conftest.py, pytest.ini ...)."""
    result = sandbox.exec(
        f"git diff --name-only {shlex.quote(base)} -- && git ls-files --others --exclude-standard",
        workdir=task.workdir,
        timeout=60,
    )
    if not result.ok:
        raise EnvfarmError(
            f"cannot list changed files in {task.workdir} (is it a git repository?): {result.output[-300:]}",
            "build the task image with the repository checked out at base_commit",
        )
    return sorted({line.strip() for line in result.output.splitlines() if line.strip()})


def restore_paths(sandbox: Sandbox, task: TaskSpec, base: str, paths: list[str]) -> None:
    """Put each path back as it was at `base`; delete it if it did not exist there."""
    if not paths:
        return
    quoted = " ".join(shlex.quote(p) for p in paths)
    script = (
        f"for p in {quoted}; do "
        f'if git cat-file -e {shlex.quote(base)}:"$p" 2>/dev/null; then git checkout -q {shlex.quote(base)} -- "$p"; '
        f'else rm -rf -- "$p"; fi; done'
    )
    result = sandbox.exec(script, workdir=task.workdir, timeout=60)
    if not result.ok:
        raise EnvfarmError(f"restoring test files failed: {result.output[-300:]}", "check that base_commit exists in the image's repository")


class SweVerifier:
    """Test-log verifier for `kind == "swe"` tasks. Stateless: one instance serves many rollouts."""

    def __init__(self, timeout: float = 1800.0, partial_credit: bool = False) -> None:
        self.timeout = timeout
        self.partial_credit = partial_credit

    def verify(self, task: TaskSpec, sandbox: Sandbox, patch: str | None = None) -> Reward:
        """`patch` is the agent's diff; None grades the sandbox's working tree as the agent left it."""
        get_parser(task.log_parser)  # fail fast on a bad task before touching the sandbox
        details: dict[str, Any] = {"instance_id": task.instance_id, "log_parser": task.log_parser}
        if patch is not None and patch.strip():
            try:
                sandbox.apply_patch(patch, workdir=task.workdir)
            except PatchError as exc:
                return Reward.zero(f"the patch does not apply: {exc.line()}", hunk=exc.hunk, **details)
        elif patch is not None:
            details["note"] = "empty patch"

        base = task.base_commit or "HEAD"
        if not task.base_commit:
            details["warning"] = "task has no base_commit: restored test files from HEAD"
        test_files = patched_paths(task.test_patch)
        tampered = [p for p in _changed_paths(sandbox, task, base) if posixpath.basename(p) in RUNNER_CONFIG_NAMES]
        restored = sorted(set(test_files) | set(tampered))
        restore_paths(sandbox, task, base, restored)
        details["restored"] = restored
        details["reverted_runner_config"] = tampered
        if task.test_patch.strip():
            try:
                sandbox.apply_patch(task.test_patch, workdir=task.workdir)
            except PatchError as exc:
                raise EnvfarmError(
                    f"the task's own test_patch does not apply over restored files: {exc.line()}",
                    "re-validate the task: its test_patch must apply to base_commit",
                ) from exc

        report_path = f"/tmp/envfarm-report-{secrets.token_hex(8)}.xml"
        cmd = build_test_command(task, report_path)
        run = sandbox.exec(cmd, timeout=self.timeout, workdir=task.workdir)
        details.update(test_cmd=cmd, exit_code=run.exit_code, timed_out=run.timed_out, log_truncated=run.truncated, duration_s=round(run.duration, 3))
        report = _read_report(sandbox, report_path) if _uses_report(task) else None
        return grade_run(task, run, report, details, partial_credit=self.partial_credit, timeout=self.timeout)


def _uses_report(task: TaskSpec) -> bool:
    return task.log_parser == "pytest" or REPORT_PLACEHOLDER in task.test_cmd


def _read_report(sandbox: Sandbox, report_path: str) -> bytes | None:
    try:
        data = sandbox.read_file(report_path)
    except (FileNotFoundError, SandboxError):
        return None
    sandbox.exec(f"rm -f {shlex.quote(report_path)}", timeout=30)
    return data


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

    Separate from the sandbox steps so the same rules apply to runs made elsewhere (the miner's
    validation, a Kubernetes Job's collected logs).
    """
    details = dict(details or {})
    details["log_tail"] = run.output[-LOG_TAIL_CHARS:]
    console = parse_log(task.log_parser, run.output)
    parsed = console
    disagreement = ""
    if _uses_report(task):
        if report is None:
            details.update(
                graded_from="nothing",
                reason="the test runner wrote no report (it crashed, timed out, or something removed it)",
                console_problems=console.problems,
            )
            return Reward(0.0, False, details, {})
        parsed = parse_log("junit", report)
        details["graded_from"] = "junit report"
        # The report is the trusted source, but a test the console saw fail cannot pass in it:
        # disagreement means something rewrote one of the two.
        flipped = sorted(
            tid
            for tid, status in console.results.items()
            if not status.succeeded and tid in parsed.results and parsed.results[tid].succeeded
        )
        if flipped:
            disagreement = f"console log and report disagree on {len(flipped)} test(s): {flipped[:5]}"
    else:
        details["graded_from"] = "console log"
    exit_code = None if run.timed_out else run.exit_code
    result = grade(parsed, task.FAIL_TO_PASS, task.PASS_TO_PASS, exit_code=exit_code, partial_credit=partial_credit)
    if disagreement:
        result.suspicious.append(disagreement)
        result.resolved, result.reward = False, 0.0
    if run.timed_out:
        result.problems.append(f"the test command timed out after {timeout or run.duration:.0f}s")
    details["grade"] = result.to_dict()
    return Reward(result.reward, result.resolved, details, {})
