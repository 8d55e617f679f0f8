"""Run a task's tests in a sandbox and read the result: the one way, for the miner and the verifier.

The miner's validation calls `run_tests` twice (without and with the gold patch) and compares; the
verifier calls it once with the agent's patch and grades. Both therefore see a test run made by the
same steps and judged by the same checks, so a task the miner accepts is graded under exactly the
conditions it was validated under. Order matters for honesty:

0. before anything of the candidate's is in place, the pytest plugins the environment installed are
   listed (`installed_plugins`): the run loads those by name, with autoload off;
1. the candidate patch (gold or agent's) is filtered (`envfarm.verifiers.integrity.filter_patch`:
   tests, runner configuration, packaging metadata, VCS internals, ignored files and modules that
   shadow the runner or the standard library are never applied) and the rest is applied with
   canonical headers; if it does not apply, `PatchError` propagates and the caller decides (the
   verifier scores 0, the miner rejects the task). What was dropped, and added lines that reach for
   the runner's internals, are recorded in `TestRun.tampering`;
2. every file the task's `test_patch` touches, and every test-runner config or conftest that differs
   from `base_commit` (whoever changed it), is restored to `base_commit` (files that did not exist
   there are deleted), then `test_patch` is applied (`TestPatchError` if it does not: the task is
   broken), so edits to tests or to the runner's configuration never count;
3. the test command runs with a timeout, on the test files `test_patch` selects
   (`selected_test_files`), with the repository last on `sys.path` (`SAFE_PYTEST`: Python 3.11's
   `-P` does not exist on the 3.9 of older images, so a bootstrap does the same on every version) and
   `PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`; for pytest the results are read from a JUnit report written to
   a random path outside the repository (`new_report_path`), copied out capped at `REPORT_LIMIT`
   bytes; the verifier also plants a canary test that must fail (`run_tests(..., canary=True)`);
4. the report is cross-checked with the console log and the exit code (`cross_check`): any
   disagreement lands in `TestRun.problems`, and a run with problems is never a result; a report
   without pytest's own final console line (the process left through `os._exit`, say) is one.

Which statuses count as passing is decided once, in `envfarm.verifiers.logs.status`.
"""

from __future__ import annotations

import json
import posixpath
import re
import secrets
import shlex
from dataclasses import dataclass, field

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from envfarm.errors import EnvfarmError, PatchError, SandboxError
from envfarm.sandbox.protocol import ExecResult, Sandbox
from envfarm.task import TaskSpec
from envfarm.verifiers.grading import consistency_problems
from envfarm.verifiers.integrity import MIXED_CONFIG_NAMES, RUNNER_ONLY_NAMES, Canary, FilteredPatch, filter_patch, new_canary, shadow_candidates
from envfarm.verifiers.logs import ParsedLog, parse_log, reads_console, report_parser
from envfarm.verifiers.logs.status import TestStatus

# Files whose content changes how tests are collected or reported; neither an agent nor a fix has any
# business editing them, and a tampered one can skip, deselect or rewrite test outcomes. Restored to
# base after the patch (whoever changed them), on top of the filter that keeps an agent's out.
RUNNER_CONFIG_NAMES = RUNNER_ONLY_NAMES | MIXED_CONFIG_NAMES
# The same names as git pathspecs, to find ignored copies without listing every ignored file.
_CONFIG_PATHSPECS = [f"*{name}" for name in sorted(RUNNER_CONFIG_NAMES)] + ["*.pth", "*entry_points.txt"]
# Installed dependency trees the env layer keeps inside the repository, git-excluded (node_modules: see
# envfarm.tasks.envsetup.javascript): their packages ship their own jest.config.js or package.json,
# which are the environment's, not the agent's, so the ignored-config listing never looks inside them.
_INSTALLED_TREES = [":(exclude,glob)**/node_modules/**"]
REPORT_PLACEHOLDER = "{report}"  # where a task's own test command wants the report path
LOG_TAIL_CHARS = 2000  # kept with each run so a zero or a rejection can be explained without re-running
REPORT_LIMIT = 32 << 20  # a JUnit report larger than this is not read (a real one for one task is far smaller)
CONSOLE_LIMIT = 8 << 20  # the test command's console is kept up to this; its final line is a cross-check
AUTOLOAD_OFF = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
# `python -m pytest` puts the repository first on sys.path, so a repo-level pytest.py or json.py is
# imported instead of the real one before pytest starts. The bootstrap does what `-P` does (3.11+) on
# every Python, and appends the repository at the end so code under test still imports as before.
SAFE_PYTEST = (
    "import os, sys; cwd = os.getcwd(); sys.path[:] = [p for p in sys.path if p not in ('', '.', cwd)] + [cwd]; "
    "sys.argv[0] = 'pytest'; import pytest; raise SystemExit(getattr(pytest, 'console_main', pytest.main)())"
)
# Lists the pytest11 entry points of distributions installed outside the repository (a .dist-info
# or .egg-info inside it is the agent's to write), whose module can be found.
_LIST_PLUGINS = (
    "import os, sys, json; cwd = os.path.realpath(os.getcwd()); sys.path[:] = [p for p in sys.path if p not in ('', '.', os.getcwd())]\n"
    "try:\n from importlib import metadata as md\nexcept ImportError:\n import importlib_metadata as md\n"
    "import importlib.util\nfound = set()\n"
    "for dist in md.distributions():\n"
    " where = os.path.realpath(str(getattr(dist, '_path', '') or dist.locate_file('')))\n"
    " if where == cwd or where.startswith(cwd + os.sep):\n  continue\n"
    " for ep in dist.entry_points:\n"
    "  if ep.group != 'pytest11':\n   continue\n"
    "  mod = ep.value.split(':')[0].strip()\n"
    "  try:\n   ok = importlib.util.find_spec(mod.split('.')[0]) is not None\n  except Exception:\n   ok = False\n"
    "  if ok:\n   found.add(mod)\n"
    "print('envfarm-plugins ' + json.dumps(sorted(found)))\n"
)
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_SYNTAX = re.compile(r"[;&|<>`$(){}\n]")

SOURCE_REPORT = "junit report"
SOURCE_CONSOLE = "console log"
SOURCE_NOTHING = "nothing"
NO_REPORT = "the test runner wrote no report (it crashed, timed out, or something removed it)"
REPORT_ONLY = ("the report has results but the console has no pytest final summary line: the runner did not finish "
               "normally (os._exit, a crash, or a log cut short), so the report alone is not trusted")


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


def test_directives(task: TaskSpec) -> list[str]:
    """The task's recorded `test_directives` (the miner stores them), else for pytest the selected files."""
    directives = task.extra.get("test_directives")
    if directives is None and task.log_parser == "pytest":
        directives = selected_test_files(task.test_patch)
    return list(directives or [])


def pytest_invocation(cmd: str) -> tuple[list[str], str | None, list[str]] | None:
    """(env assignments, interpreter, arguments) of a plain `[VAR=x] python -m pytest ...` command;
    interpreter None for the `pytest` console script; None for anything else (shell syntax, tox, make)."""
    if _SHELL_SYNTAX.search(cmd):
        return None
    try:
        tokens = shlex.split(cmd)
    except ValueError:
        return None
    env = []
    while tokens and _ENV_ASSIGN.match(tokens[0]):
        env.append(tokens.pop(0))
    if not tokens:
        return None
    head = posixpath.basename(tokens[0])
    if re.fullmatch(r"python[0-9.]*", head) and tokens[1:3] in (["-m", "pytest"], ["-m", "py.test"]):
        return env, tokens[0], tokens[3:]
    if head in ("pytest", "py.test"):
        return env, None, tokens[1:]
    return None


def _safe_command(task: TaskSpec) -> str:
    """The task's command with `python -m pytest` replaced by the safe-path bootstrap (see SAFE_PYTEST)."""
    parts = pytest_invocation(task.test_cmd)
    if parts is None or parts[1] is None:  # unknown shape, or the console script (its sys.path[0] is bin/)
        return task.test_cmd
    env, python, args = parts
    return " ".join(shlex.quote(t) for t in [*env, python, "-c", SAFE_PYTEST, *args])


def build_test_command(task: TaskSpec, report_path: str, plugins: list[str] | None = None) -> str:
    """The task's test command, made to write a JUnit report we can trust (pytest), plus its targets.

    Targets are `test_directives(task)`. `plugins` (module names) are loaded with `-p`, since the run
    turns plugin autoload off (a `.dist-info` the agent commits would otherwise load its own).
    """
    cmd = _safe_command(task)
    directives = test_directives(task)
    if REPORT_PLACEHOLDER in cmd:
        cmd = cmd.replace(REPORT_PLACEHOLDER, shlex.quote(report_path))
    elif task.log_parser == "pytest":
        cmd += (
            f" -rA -p no:cacheprovider --rootdir={shlex.quote(task.workdir)} -o junit_family=xunit1"
            f" --junitxml={shlex.quote(report_path)}"
        )
        cmd += "".join(f" -p {shlex.quote(p)}" for p in plugins or [])
    if directives:
        cmd += " " + " ".join(shlex.quote(d) for d in directives)
    return cmd


def installed_plugins(sandbox: Sandbox, task: TaskSpec) -> list[str]:
    """The pytest plugins the environment installed, read before the candidate's files are in place.

    Empty for commands whose interpreter cannot be told (they run with autoload off and no plugins,
    in validation and grading alike).
    """
    parts = pytest_invocation(task.test_cmd)
    if parts is None:
        return []
    env, python, _ = parts
    prefix = " ".join(shlex.quote(t) for t in env)
    if python is None:  # the console script: its shebang names the environment's interpreter
        interpreter = "$(sed -n '1s/^#! *//p' \"$(command -v pytest || command -v py.test)\")"
    else:
        interpreter = shlex.quote(python)
    result = sandbox.exec(f"{prefix} {interpreter} -c {shlex.quote(_LIST_PLUGINS)}", timeout=120, workdir=task.workdir, env=AUTOLOAD_OFF)
    for line in reversed(result.output.splitlines()):
        if line.startswith("envfarm-plugins "):
            try:
                names = json.loads(line[len("envfarm-plugins "):])
            except ValueError:
                return []
            return [n for n in names if isinstance(n, str) and _MODULE_NAME.match(n)]
    return []


def changed_paths(sandbox: Sandbox, task: TaskSpec, base: str, *, ignored_config: bool = False) -> list[str]:
    """Tracked files that differ from base, plus untracked files (new conftest.py, pytest.ini ...).

    `ignored_config` adds git-ignored files with runner-config names (a `.gitignore` or
    `.git/info/exclude` entry hides them from the plain listing, not from pytest).
    """
    script = f"git diff --name-only {shlex.quote(base)} -- && git ls-files --others --exclude-standard"
    if ignored_config:
        specs = " ".join(shlex.quote(p) for p in [*_CONFIG_PATHSPECS, *_INSTALLED_TREES])
        script += f" && git ls-files --others --ignored --exclude-standard -- {specs}"
    result = sandbox.exec(script, workdir=task.workdir, timeout=60)
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
    # Signs that the candidate aimed at the grader (files the filter refused, runner internals in added
    # lines, a canary reported as passing). The verifier scores any of them 0; validation of a gold
    # patch records them but does not reject on them (a real fix may touch setup.cfg).
    tampering: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # every file of the candidate not applied, with why
    plugins: list[str] = field(default_factory=list)
    canary: str = ""  # the canary's test id, when one was planted

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
    if report is not None and console is not None and console.framework == "pytest" and report.results:
        if not console.complete:
            found.append(REPORT_ONLY)
        else:
            console_ok = sum(console.reported.get(k, 0) for k in ("passed", "xpassed", "xfailed"))
            report_ok = sum(1 for s in report.results.values() if s.succeeded)
            if report_ok > console_ok:
                found.append(f"the report has {report_ok} passing test(s) but pytest's final line counts {console_ok}")
    if trusted is not None and trusted.framework in ("jest", "tap") and trusted.complete and "passed" in trusted.reported:
        # JavaScript runners count their own passes; more passing results than that were not the runner's.
        passing = sum(1 for s in trusted.results.values() if s is TestStatus.PASSED)
        if passing > trusted.reported["passed"]:
            found.append(f"the report has {passing} passing test(s) but the runner counted {trusted.reported['passed']}")
    if trusted is not None and exit_code == 0:
        failing = sorted(t for t, s in trusted.results.items() if s in (TestStatus.FAILED, TestStatus.ERROR))
        if failing:
            found.append(f"the runner exited 0 but {len(failing)} test(s) failed: {failing[:5]}")
    return list(dict.fromkeys(found))


def read_run(task: TaskSpec, run: ExecResult, report: bytes | None, *, command: str = "", timeout: float | None = None,
             report_problem: str | None = None) -> TestRun:
    """Read one finished run (console output, exit code, report bytes) into a cross-checked TestRun.

    Separate from the sandbox steps so the same rules apply to runs made elsewhere (a Kubernetes
    Job's collected logs, a recorded run in a test). Never raises on what the run produced: bytes no
    parser can read make an unusable run (`report_problem`: why the report could not be fetched).
    """
    out = TestRun(
        results={},
        exit_code=run.exit_code,
        timed_out=run.timed_out,
        duration=run.duration,
        log_truncated=run.truncated,
        log_tail=run.output[-LOG_TAIL_CHARS:],
        command=command,
        timeout=timeout,
    )
    try:
        _read_into(out, task, run, report, report_problem)
    except Exception as exc:  # noqa: BLE001 - hostile bytes must make an unusable run, never a crashed grader
        out.results, out.parsed, out.source, out.log_complete = {}, None, SOURCE_NOTHING, False
        out.problems = [f"the run's output could not be read ({type(exc).__name__}: {str(exc)[:200]})"]
    return out


def _read_into(out: TestRun, task: TaskSpec, run: ExecResult, report: bytes | None, report_problem: str | None) -> None:
    exit_code = None if run.timed_out else run.exit_code
    console = parse_log(task.log_parser, run.output) if reads_console(task.log_parser) else None
    out.console_problems = list(console.problems) if console else []
    if uses_report(task):
        if report is None:
            out.source, out.problems, out.log_complete = SOURCE_NOTHING, [report_problem or NO_REPORT], False
            return
        parsed = parse_log(report_parser(task.log_parser), report)
        out.source = SOURCE_REPORT
        out.problems = cross_check(console, parsed, exit_code)
        if not parsed.complete and not run.timed_out:  # a runner that finished writes a whole report
            out.problems.append(f"the runner finished but its report is not whole: {(parsed.problems or ['?'])[0]}")
    else:
        parsed = console if console is not None else parse_log(task.log_parser, run.output)
        out.problems = cross_check(parsed, None, exit_code)
    out.parsed = parsed
    out.results = dict(parsed.results)
    out.log_problems = list(parsed.problems)
    out.log_complete = parsed.complete


def _read_report(sandbox: Sandbox, report_path: str) -> tuple[bytes | None, str | None]:
    """(report bytes, None) or (None, why not). Copied out capped first: the code under test could make
    the file huge, a FIFO or a link to a device, or keep writing to it."""
    copy = f"/tmp/envfarm-read-{secrets.token_hex(8)}.xml"
    src, dst = shlex.quote(report_path), shlex.quote(copy)
    fetched = sandbox.exec(
        f"[ -f {src} ] && [ ! -L {src} ] || exit 20; head -c {REPORT_LIMIT + 1} -- {src} > {dst}; rm -f -- {src}; wc -c < {dst}",
        timeout=120,
    )
    try:
        if fetched.exit_code == 20:
            return None, None
        size = fetched.output.strip().splitlines()[-1:] if fetched.ok else []
        if not size or not size[0].strip().isdigit():
            return None, f"the report could not be copied out: {fetched.output[-200:]!r}"
        if int(size[0]) > REPORT_LIMIT:
            return None, f"the report is larger than {REPORT_LIMIT} bytes: not read (no honest report for one task is)"
        try:
            return sandbox.read_file(copy), None
        except (FileNotFoundError, SandboxError) as exc:
            return None, f"the report could not be read: {str(exc)[:200]}"
    finally:
        sandbox.exec(f"rm -f -- {dst}", timeout=30)


def prepare_tests(sandbox: Sandbox, task: TaskSpec, *, also: list[str] = (), ignored_config: bool = False) -> tuple[list[str], list[str]]:
    """Step 2: restore test files and runner configs to base, apply test_patch; (restored, reverted config).

    `also`: more paths to restore (protected files the candidate's patch changed despite the filter).
    """
    base = task.base_commit or "HEAD"
    changed = changed_paths(sandbox, task, base, ignored_config=ignored_config)
    tampered = sorted({p for p in changed if posixpath.basename(p) in RUNNER_CONFIG_NAMES or p.endswith(".pth")} | set(also))
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


def _lines(sandbox: Sandbox, task: TaskSpec, script: str) -> list[str]:
    result = sandbox.exec(script, workdir=task.workdir, timeout=120)
    return [line.strip() for line in result.output.splitlines() if line.strip()]


def screen_patch(sandbox: Sandbox, task: TaskSpec, filtered: FilteredPatch) -> None:
    """The checks that need the pristine repository: ignored paths, shadowing modules, and whether a
    runner name in added lines was already in that file at base (pytest's own repository is full of them)."""
    base = shlex.quote(task.base_commit or "HEAD")
    if filtered.kept:
        listed = "\n".join(filtered.kept)
        for path in _lines(sandbox, task, f"printf '%s\\n' {shlex.quote(listed)} | git check-ignore --stdin || true"):
            if path in filtered.kept:
                filtered.drop(path, "git-ignored file (invisible to the verifier's listing)", True)
    added_packages = {posixpath.dirname(p) for p in filtered.added if posixpath.basename(p) == "__init__.py"}
    candidates = [(p, d, m) for p in filtered.added for d, m in shadow_candidates(p) if d not in added_packages]
    if candidates:
        dirs = sorted({d for _, d, _ in candidates if d})
        packages = set(_lines(sandbox, task, " ".join(
            f"[ -e {shlex.quote(d + '/__init__.py')} ] && echo {shlex.quote(d)};" for d in dirs) + " true")) if dirs else set()
        for path, directory, module in candidates:
            if directory not in packages and path in filtered.kept:
                filtered.drop(path, f"new module {module!r} shadows the standard library or the test runner", True)
    pairs = [(path, ref) for path, refs in filtered.internals.items() for ref in refs]
    if pairs:
        script = " ".join(
            f"git grep -q -F -e {shlex.quote(ref)} {base} -- {shlex.quote(path)} 2>/dev/null && echo {i};"
            for i, (path, ref) in enumerate(pairs)
        )
        known = set(_lines(sandbox, task, script + " true"))
        for i, (path, ref) in enumerate(pairs):
            if str(i) in known:
                filtered.internals[path].remove(ref)
        filtered.internals = {p: r for p, r in filtered.internals.items() if r}


def plant_canary(sandbox: Sandbox, task: TaskSpec) -> tuple[Canary, bytes, bool] | None:
    """Append a must-fail test to the first selected test file: (canary, original bytes, file uses xfail)."""
    if task.log_parser != "pytest" or REPORT_PLACEHOLDER in task.test_cmd:
        return None
    targets = [d for d in test_directives(task) if d.endswith(".py") and "::" not in d]
    if not targets:
        return None
    path = f"{task.workdir.rstrip('/')}/{targets[0]}"
    try:
        original = sandbox.read_file(path)
    except (FileNotFoundError, SandboxError):
        return None
    canary = new_canary(targets[0])
    text = original.decode("utf-8", errors="replace")
    sandbox.write_file(path, text + ("" if text.endswith("\n") else "\n") + canary.source)
    return canary, original, "xfail" in text


def run_tests(sandbox: Sandbox, task: TaskSpec, patch: str | None, *, timeout: float, canary: bool = False) -> TestRun:
    """Apply `patch` (None: the working tree as it is; blank: nothing), put the task's tests in place, run them.

    `canary`: plant a test that must fail (the verifier does; validation need not, and a canary makes
    pytest exit 1 where "no tests collected" would exit 5).
    Raises `PatchError` when `patch` does not apply (or is not a diff), `TestPatchError` when the
    task's own test_patch does not, `SandboxError` (and subclasses) for engine trouble; a test
    command that fails, crashes or times out is a `TestRun`, never an exception.
    """
    plugins = installed_plugins(sandbox, task)
    filtered = filter_patch(patch, frozenset(patched_paths(task.test_patch)))
    tampering: list[str] = []
    unexpected: list[str] = []
    if patch is not None and patch.strip():
        screen_patch(sandbox, task, filtered)
        base = task.base_commit or "HEAD"
        before = set(changed_paths(sandbox, task, base, ignored_config=True))
        if filtered.text:
            sandbox.apply_patch(filtered.text, workdir=task.workdir)
        after = set(changed_paths(sandbox, task, base, ignored_config=True))
        unexpected = sorted(p for p in after - before if p not in filtered.kept)
        tampering += filtered.tampering
        tampering += [f"the patch adds references to the test runner's internals in {p}: {', '.join(r)}" for p, r in filtered.internals.items()]
        tampering += [f"applying the patch changed {p}, which it does not name: restored" for p in unexpected]
    restored, reverted = prepare_tests(sandbox, task, also=unexpected, ignored_config=patch is None)
    if patch is None:  # the agent's own working tree: whatever runner config it holds is the agent's
        tampering += [f"the working tree changes {p} (test-runner configuration): restored" for p in reverted
                      if posixpath.basename(p) in RUNNER_ONLY_NAMES or p.endswith(".pth")]
    planted = plant_canary(sandbox, task) if canary else None
    report_path = new_report_path()
    command = build_test_command(task, report_path, plugins)
    run = sandbox.exec(command, timeout=timeout, workdir=task.workdir, env=AUTOLOAD_OFF, output_limit=CONSOLE_LIMIT)
    report, why = _read_report(sandbox, report_path) if uses_report(task) else (None, None)
    out = read_run(task, run, report, command=command, timeout=timeout, report_problem=why)
    if planted is not None:
        found, original, uses_xfail = planted
        sandbox.write_file(f"{task.workdir.rstrip('/')}/{found.path}", original)
        status = out.parsed.results.get(found.test_id) if out.parsed is not None else None
        if status is TestStatus.PASSED or (status is TestStatus.XFAIL and not uses_xfail):
            tampering.append(f"a canary test that must fail ({found.test_id}) was reported as {status.value}")
        out.results.pop(found.test_id, None)
        out.canary = found.test_id
    out.restored, out.reverted_runner_config = restored, reverted
    out.tampering = list(dict.fromkeys(tampering))
    out.dropped = [d.describe() for d in filtered.dropped]
    out.plugins = plugins
    return out
