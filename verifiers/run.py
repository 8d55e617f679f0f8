"""Run a task's tests in a sandbox and read the result: the one way, for the miner and the verifier.

The miner's validation calls `run_tests` twice (without and with the gold patch) and compares; the
verifier calls it once with the agent's patch and grades. Both therefore see a test run made by the
same steps and judged by the same checks, so a task the miner accepts is graded under exactly the
conditions it was validated under. Order matters for honesty:

1. the candidate patch (gold or agent's) is applied; if it does not apply, `PatchError` propagates
   and the caller decides (the verifier scores 0, the miner rejects the task);
2. every file the task's `test_patch` touches, and every test-runner config or conftest that differs
   from `base_commit` (whoever changed it), is restored to `base_commit` (files that did not exist
   there are deleted), then `test_patch` is applied (`TestPatchError` if it does not: the task is
   broken), so edits to tests or to the runner's configuration never count;
3. the test command runs with a timeout, on the test files `test_patch` selects
   (`selected_test_files`); for pytest the results are read from a JUnit report written to a random
   path outside the repository (`new_report_path`), which the code under test does not know;
4. the report is cross-checked with the console log and the exit code (`cross_check`): any
   disagreement lands in `TestRun.problems`, and a run with problems is never a result.

Which statuses count as passing is decided once, in `envfarm.verifiers.logs.status`.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from dataclasses import dataclass, field

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from envfarm.errors import EnvfarmError, PatchError, SandboxError
from envfarm.sandbox.protocol import ExecResult, Sandbox
from envfarm.task import TaskSpec
from envfarm.verifiers.grading import consistency_problems
from envfarm.verifiers.logs import ParsedLog, parse_log
from envfarm.verifiers.logs.status import TestStatus

# Files whose content changes how tests are collected or reported; neither an agent nor a fix has any
# business editing them, and a tampered one can skip, deselect or rewrite test outcomes.
RUNNER_CONFIG_NAMES = frozenset(
    {"conftest.py", "pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml", "sitecustomize.py", "usercustomize.py", "runtests.py", "manage.py"}
)
REPORT_PLACEHOLDER = "{report}"  # where a task's own test command wants the report path
LOG_TAIL_CHARS = 2000  # kept with each run so a zero or a rejection can be explained without re-running

SOURCE_REPORT = "junit report"
SOURCE_CONSOLE = "console log"
SOURCE_NOTHING = "nothing"
NO_REPORT = "the test runner wrote no report (it crashed, timed out, or something removed it)"


def new_report_path() -> str:
    """A fresh, unguessable report path outside the repository (the only place the path is made)."""
    return f"/tmp/envfarm-report-{secrets.token_hex(8)}.xml"


def _diff(diff: str) -> PatchSet:
    try:
        return PatchSet(diff)
    except UnidiffParseError as exc:
        raise EnvfarmError(f"the task's test_patch is not a unified diff: {exc}", "re-export the task from the miner") from exc


def _strip_prefix(name: str) -> str:
    return name[2:] if name[:2] in ("a/", "b/") else name


def patched_paths(diff: str) -> list[str]:
    """Paths a unified diff touches (source and target side), relative to the repository root."""
    if not diff.strip():
        return []
    paths: set[str] = set()
    for item in _diff(diff):
        for name in (item.source_file, item.target_file):
            if name and name != "/dev/null":
                paths.add(_strip_prefix(name))
    return sorted(paths)


def selected_test_files(test_patch: str) -> list[str]:
    """The test files a task's `test_patch` selects: the one rule, for the miner and the verifier.

    A Python file the patch adds or modifies (its new side exists), except `conftest.py`: a conftest
    holds fixtures, not tests, and naming it on pytest's command line would collect nothing from it
    while dropping the modules that use it. Deleted files are not selected (pytest would fail on a
    missing path). Order is the diff's, without repeats.
    """
    if not test_patch.strip():
        return []
    selected: list[str] = []
    for item in _diff(test_patch):
        if item.is_removed_file or not item.target_file or item.target_file == "/dev/null":
            continue
        path = _strip_prefix(item.target_file)
        if path.endswith(".py") and posixpath.basename(path) != "conftest.py" and path not in selected:
            selected.append(path)
    return selected


def uses_report(task: TaskSpec) -> bool:
    """Whether the task's results come from a JUnit report (pytest, or a command with {report})."""
    return task.log_parser == "pytest" or REPORT_PLACEHOLDER in task.test_cmd


def build_test_command(task: TaskSpec, report_path: str) -> str:
    """The task's test command, made to write a JUnit report we can trust (pytest), plus its targets.

    Targets are the task's recorded `test_directives` (the miner stores them) or, for pytest tasks
    without them, `selected_test_files(test_patch)`.
    """
    cmd = task.test_cmd
    directives = task.extra.get("test_directives")
    if directives is None and task.log_parser == "pytest":
        directives = selected_test_files(task.test_patch)
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


def changed_paths(sandbox: Sandbox, task: TaskSpec, base: str) -> list[str]:
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


class TestPatchError(EnvfarmError):
    """The task's own `test_patch` does not apply over the restored files: the task is broken.

    Not a `PatchError` on purpose: a candidate patch that does not apply is the candidate's fault (a
    zero reward), this one is the task's (re-validate it), and callers must not confuse the two.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, problem: str, fix: str = "", hunk: str = "") -> None:
        self.hunk = hunk
        super().__init__(problem, fix)


@dataclass
class TestRun:
    """One finished run of a task's tests, read and cross-checked.

    `results` come from the trusted source (`source`: the JUnit report where the task uses one, else
    the console log; "nothing" when the expected report is missing). `problems` are the ways the run
    contradicts itself (report vs console vs exit code, forged lines, a missing report): a run with
    any is not a result, whatever `results` say. `log_problems` are parts of the log the parser
    could not read (truncation, garbage), which make tests missing rather than the run untrusted.
    """

    __test__ = False  # not a pytest test class

    results: dict[str, TestStatus]
    exit_code: int
    timed_out: bool = False
    duration: float = 0.0
    source: str = SOURCE_CONSOLE
    problems: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    console_problems: list[str] = field(default_factory=list)
    log_complete: bool = True
    log_truncated: bool = False
    log_tail: str = ""
    command: str = ""
    timeout: float | None = None
    restored: list[str] = field(default_factory=list)
    reverted_runner_config: list[str] = field(default_factory=list)
    parsed: ParsedLog | None = None  # the trusted source as parsed, for grading (totals, line counts)

    @property
    def trustworthy(self) -> bool:
        return self.source != SOURCE_NOTHING and not self.problems

    @property
    def checked_exit_code(self) -> int | None:
        """The exit code where it means something (a killed, timed-out command's does not)."""
        return None if self.timed_out else self.exit_code


def cross_check(console: ParsedLog | None, report: ParsedLog | None, exit_code: int | None) -> list[str]:
    """Every way the console log, the report and the exit code contradict one another.

    `console` is None where the console holds no per-test lines to compare (a JUnit-only runner);
    `report` is None where the task has no report. The trusted source is the report if there is one.
    """
    found: list[str] = []
    if console is not None:
        found += consistency_problems(console, exit_code)
    trusted = report if report is not None else console
    if report is not None:
        found += consistency_problems(report, exit_code)
        if console is not None:
            # The report is the trusted source, but a test the console saw fail cannot pass in it:
            # disagreement means something rewrote one of the two.
            flipped = sorted(
                tid
                for tid, status in console.results.items()
                if not status.succeeded and tid in report.results and report.results[tid].succeeded
            )
            if flipped:
                found.append(f"console log and report disagree on {len(flipped)} test(s): {flipped[:5]}")
    if trusted is not None and exit_code == 0:
        failing = sorted(t for t, s in trusted.results.items() if s in (TestStatus.FAILED, TestStatus.ERROR))
        if failing:
            found.append(f"the runner exited 0 but {len(failing)} test(s) failed: {failing[:5]}")
    return list(dict.fromkeys(found))


def read_run(task: TaskSpec, run: ExecResult, report: bytes | None, *, command: str = "", timeout: float | None = None) -> TestRun:
    """Read one finished run (console output, exit code, report bytes) into a cross-checked TestRun.

    Separate from the sandbox steps so the same rules apply to runs made elsewhere (a Kubernetes
    Job's collected logs, a recorded run in a test).
    """
    exit_code = None if run.timed_out else run.exit_code
    console = parse_log(task.log_parser, run.output) if task.log_parser != "junit" else None
    out = TestRun(
        results={},
        exit_code=run.exit_code,
        timed_out=run.timed_out,
        duration=run.duration,
        console_problems=list(console.problems) if console else [],
        log_truncated=run.truncated,
        log_tail=run.output[-LOG_TAIL_CHARS:],
        command=command,
        timeout=timeout,
    )
    if uses_report(task):
        if report is None:
            out.source, out.problems, out.log_complete = SOURCE_NOTHING, [NO_REPORT], False
            return out
        parsed = parse_log("junit", report)
        out.source = SOURCE_REPORT
        out.problems = cross_check(console, parsed, exit_code)
    else:
        parsed = console if console is not None else parse_log(task.log_parser, run.output)
        out.problems = cross_check(parsed, None, exit_code)
    out.parsed = parsed
    out.results = dict(parsed.results)
    out.log_problems = list(parsed.problems)
    out.log_complete = parsed.complete
    return out


def _read_report(sandbox: Sandbox, report_path: str) -> bytes | None:
    try:
        data = sandbox.read_file(report_path)
    except (FileNotFoundError, SandboxError):
        return None
    sandbox.exec(f"rm -f {shlex.quote(report_path)}", timeout=30)
    return data


def prepare_tests(sandbox: Sandbox, task: TaskSpec) -> tuple[list[str], list[str]]:
    """Step 2: restore test files and runner configs to base, apply test_patch; (restored, reverted config)."""
    base = task.base_commit or "HEAD"
    tampered = [p for p in changed_paths(sandbox, task, base) if posixpath.basename(p) in RUNNER_CONFIG_NAMES]
    restored = sorted(set(patched_paths(task.test_patch)) | set(tampered))
    restore_paths(sandbox, task, base, restored)
    if task.test_patch.strip():
        try:
            sandbox.apply_patch(task.test_patch, workdir=task.workdir)
        except PatchError as exc:
            raise TestPatchError(
                f"the task's own test_patch does not apply over restored files: {exc.line()}",
                "re-validate the task: its test_patch must apply to base_commit",
                hunk=exc.hunk,
            ) from exc
    return restored, tampered


def run_tests(sandbox: Sandbox, task: TaskSpec, patch: str | None, *, timeout: float) -> TestRun:
    """Apply `patch` (None or blank: the working tree as it is), put the task's tests in place, run them.

    Raises `PatchError` when `patch` does not apply, `TestPatchError` when the task's own test_patch
    does not, `SandboxError` (and subclasses) for engine trouble; a test command that fails, crashes
    or times out is a `TestRun`, never an exception.
    """
    if patch is not None and patch.strip():
        sandbox.apply_patch(patch, workdir=task.workdir)
    restored, tampered = prepare_tests(sandbox, task)
    report_path = new_report_path()
    command = build_test_command(task, report_path)
    run = sandbox.exec(command, timeout=timeout, workdir=task.workdir)
    report = _read_report(sandbox, report_path) if uses_report(task) else None
    out = read_run(task, run, report, command=command, timeout=timeout)
    out.restored, out.reverted_runner_config = restored, tampered
    return out
