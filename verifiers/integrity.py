"""What of an agent's diff may reach the test run, and the signs that a diff is aimed at the grader.

An RL policy optimizes whatever the reward measures, so every byte of its patch is treated as hostile.
Restoring files after the fact (the old rule) misses whatever the restorer does not list: a conftest
hidden by `.gitignore`, a `pytest.toml` pytest 9 reads, a `.dist-info` that autoloads a plugin. So the
diff is filtered *before* it is applied, by what a path is rather than by a list of known tricks:

- tests (test directories, test file names, anything `test_patch` touches): dropped; their content is
  the task's, never the agent's (not tampering: agents write tests);
- test-runner configuration (`conftest.py`, every file pytest reads its ini from, `sitecustomize`,
  `.pth`), packaging metadata (`*.dist-info`, `*.egg-info`, `entry_points.txt`), VCS internals
  (`.git/`, ignore rules), symlinks, binaries Python loads, paths that leave the repository, and new
  modules that shadow the standard library or the runner: dropped, and a tampering signal;
- multi-purpose files (`pyproject.toml`, `setup.cfg`, `tox.ini`, `setup.py`): dropped (the environment
  was built from the base version), a tampering signal only when the change talks to the test runner.

What is kept is re-written with canonical headers naming one checked path per file, so the applier
(`git apply`, or `patch` as a fallback) cannot be steered to a path the filter did not see. Also here:
the scan of added lines for the runner's internals, and the canary test that must fail.
"""

from __future__ import annotations

import posixpath
import re
import secrets
import sys
from dataclasses import dataclass, field

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from envfarm.errors import PatchError

TAMPERING = "tampering"

# Every file pytest (up to 9.x) reads configuration from, and files Python itself runs at start-up.
RUNNER_ONLY_NAMES = frozenset(
    {"conftest.py", "pytest.ini", ".pytest.ini", "pytest.toml", ".pytest.toml", "sitecustomize.py", "usercustomize.py",
     "build.rs"}  # cargo runs a build script before compiling the tests: it could rewrite them
    # JavaScript runners' own configuration and setup files: they choose, skip and transform the tests
    | {f"{stem}.{ext}" for stem in ("jest.config", "vitest.config", "vitest.workspace", "ava.config", "jest.setup", "setupTests")
       for ext in ("js", "cjs", "mjs", "ts", "cts", "mts", "json")}
    | {f".mocharc.{ext}" for ext in ("js", "cjs", "mjs", "json", "jsonc", "yaml", "yml")}
)
# Files that hold runner configuration next to other things (packaging, linters, tox envs).
MIXED_CONFIG_NAMES = frozenset({"pyproject.toml", "setup.cfg", "tox.ini", "setup.py", "noxfile.py", "runtests.py", "manage.py",
                                "go.mod", "go.sum", "Cargo.toml", "Cargo.lock",
                                # package.json holds scripts.test and Jest/ava/mocha config; the lockfiles pin the env layer's node_modules
                                "package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", ".yarnrc.yml",
                                ".npmrc", "tsconfig.json", ".babelrc", "babel.config.js", "babel.config.json", "babel.config.cjs",
                                "vite.config.js", "vite.config.ts", "vite.config.mjs"})
RUNNER_WORDS = re.compile(r"pytest|addopts|conftest|entry[_-]points|plugins?\b|-p\s|jest|vitest|mocha|\bava\b|\"test[\w:]*\"\s*:|testMatch|setupFiles", re.I)
VCS_NAMES = frozenset({".gitignore", ".gitattributes", ".gitmodules", ".hgignore"})
LOADED_BINARIES = (".pyc", ".pyo", ".so", ".pyd", ".dylib", ".pth")
TEST_DIRS = frozenset({"test", "tests", "testing", "__tests__", "spec", "specs", "testdata", "test_data", "e2e"})
# Go compiles `_test.go` files into the tests alone: an agent's one could change what the tests see.
TEST_FILE = re.compile(r"^(test_.*\.py|.*_tests?\.py|.*_test\.go|.*[._-](test|spec)\.[cm]?[jt]sx?|.*\.snap)$")
RUNNER_MODULES = frozenset({"pytest", "_pytest", "py", "pluggy", "iniconfig", "packaging", "xdist", "exceptiongroup", "tomli", "pygments"})
SHADOWED = frozenset(sys.stdlib_module_names) | RUNNER_MODULES
ALLOWED_MODES = ("100644", "100755")

# Names a fix has no business adding to code under test: hooks into the runner, its report, its exit.
INTERNALS = re.compile(
    r"_pytest|pytest_runtest_\w+|pytest_report_\w+|pytest_terminal_summary|pytest_sessionfinish|pytest_collection\w*"
    r"|pytest_configure|pytest_plugins|pytest_load_initial_conftests|pytest_cmdline_\w+|pytest_unconfigure|hookimpl|pluggy"
    r"|junitxml|junit_family|LogXML|TestReport|CollectReport|envfarm-report|envfarm_report|os\._exit|posix\._exit"
    r"|sys\.modules\s*\[\s*['\"](?:_?pytest|pluggy)|PYTEST_ADDOPTS|PYTEST_PLUGINS|PYTEST_DISABLE_PLUGIN_AUTOLOAD"
)


@dataclass
class Dropped:
    path: str
    category: str
    tampering: bool

    def describe(self) -> str:
        return f"{self.path} ({self.category})"


@dataclass
class FilteredPatch:
    """The part of a diff allowed to reach the run, what was left out, and what looked aimed at the grader."""

    blocks: dict[str, str] = field(default_factory=dict)  # kept path -> its canonical diff block
    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # kept files the diff creates (for the shadowing check)
    dropped: list[Dropped] = field(default_factory=list)
    internals: dict[str, list[str]] = field(default_factory=dict)  # path -> runner names its added lines use

    @property
    def text(self) -> str:
        return "".join(self.blocks[p] for p in self.kept)

    @property
    def tampering(self) -> list[str]:
        return [f"the patch changes {d.describe()}: not applied" for d in self.dropped if d.tampering]

    def drop(self, path: str, category: str, tampering: bool) -> None:
        self.blocks.pop(path, None)
        self.kept = [p for p in self.kept if p != path]
        self.added = [p for p in self.added if p != path]
        self.dropped.append(Dropped(path, category, tampering))


def _strip(name: str | None) -> str | None:
    """The repository path an applier writes for a header name (`-p1`), None for /dev/null."""
    if name is None:
        return None
    name = name.strip()
    if name == "/dev/null" or not name:
        return None
    return name.split("/", 1)[1] if "/" in name else ""


def path_problem(path: str) -> str | None:
    """Why a path may not be written at all (it leaves the repository or is not a plain relative path)."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path or path.startswith('"'):
        return "not a plain relative path"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        return "leaves the repository"
    return None


def is_test_path(path: str, test_patch_paths: frozenset[str] = frozenset()) -> bool:
    parts = path.split("/")
    return path in test_patch_paths or any(d.lower() in TEST_DIRS for d in parts[:-1]) or bool(TEST_FILE.match(parts[-1]))


def classify(path: str, changed_text: str = "", test_patch_paths: frozenset[str] = frozenset()) -> Dropped | None:
    """Why `path` may not be changed by an agent (None: it may). `changed_text`: the lines it changes."""
    problem = path_problem(path)
    if problem:
        return Dropped(path, f"path {problem}", True)
    parts = path.split("/")
    name = parts[-1]
    if ".git" in parts or ".hg" in parts:
        return Dropped(path, "version-control internals", True)
    if ".cargo" in parts:  # cargo config can name a `runner` that every test binary is started through
        return Dropped(path, "cargo configuration", True)
    if name in RUNNER_ONLY_NAMES or name.endswith(".pth"):
        return Dropped(path, "test-runner configuration", True)
    if any(p.endswith((".dist-info", ".egg-info", ".egg-link")) for p in parts) or name in ("entry_points.txt", "direct_url.json") \
            or name.startswith("__editable__"):
        return Dropped(path, "packaging metadata", True)
    if name in VCS_NAMES:
        return Dropped(path, "ignore rules", False)
    if name in MIXED_CONFIG_NAMES:
        return Dropped(path, "packaging or runner configuration", bool(RUNNER_WORDS.search(changed_text)))
    if is_test_path(path, test_patch_paths):
        return Dropped(path, "tests", False)
    return None


def shadow_candidates(path: str) -> list[tuple[str, str]]:
    """(directory, module) pairs a new file makes importable under a name the runner or stdlib owns.

    `json.py` in `d` is module `json` if `d` is on sys.path; `json/x.py` makes package `json` in its
    parent. The caller keeps the pairs whose directory is not itself a package.
    """
    parts = path.split("/")
    found: list[tuple[str, str]] = []
    stem = parts[-1][:-3] if parts[-1].endswith(".py") else ""
    if stem and (stem in SHADOWED or stem.startswith("pytest_")):
        found.append(("/".join(parts[:-1]), stem))
    for i, part in enumerate(parts[:-1]):
        if part in SHADOWED or part.startswith("pytest_"):
            found.append(("/".join(parts[:i]), part))
    return found


def _header_names(patch_info: object) -> list[str]:
    """Every path named in a block's git header lines (`diff --git a/x b/y`, rename/copy from/to)."""
    names: list[str] = []
    for line in str(patch_info or "").splitlines():
        if line.startswith("diff --git "):
            names += [_strip(n) or "" for n in line[len("diff --git "):].split(" ")]
        for key in ("rename from ", "rename to ", "copy from ", "copy to "):
            if line.startswith(key):
                names.append(line[len(key):].strip())
    return names


def _mode_problem(patch_info: object) -> str | None:
    for line in str(patch_info or "").splitlines():
        for key in ("new file mode ", "deleted file mode ", "old mode ", "new mode "):
            if line.startswith(key) and line[len(key):].strip() not in ALLOWED_MODES:
                return "symlink or special file" if line[len(key):].strip() == "120000" else "unusual file mode"
        if line.startswith(("copy from ", "copy to ")):
            return "copy header"
    return None


def filter_patch(diff: str | None, test_patch_paths: frozenset[str] = frozenset()) -> FilteredPatch:
    """Split an agent's diff into what may be applied and what may not (see the module docstring).

    Raises `PatchError` when the text is not a unified diff: a zero for the agent, never a crash.
    """
    out = FilteredPatch()
    if diff is None or not diff.strip():
        return out
    try:
        parsed = PatchSet(diff)
    except (UnidiffParseError, ValueError, IndexError) as exc:
        raise PatchError(f"the patch is not a valid unified diff: {exc}", "regenerate it with 'git diff'") from None
    if len(parsed) == 0:
        raise PatchError("the text contains no file diffs (no '--- a/...' / '+++ b/...' headers)", "pass 'git diff' output")
    for item in parsed:
        source, target = _strip(item.source_file), _strip(item.target_file)
        path = target or source or ""
        names = [n for n in {source, target, *_header_names(item.patch_info)} if n is not None]
        added_lines = "".join(line.value for hunk in item for line in hunk if line.is_added)
        changed = "".join(line.value for hunk in item for line in hunk if line.is_added or line.is_removed)
        refs = sorted(set(INTERNALS.findall(added_lines)))
        verdicts = [v for v in (classify(n, changed, test_patch_paths) for n in names) if v is not None]
        if refs:
            out.internals[path] = refs
        if not names:
            out.dropped.append(Dropped("(unnamed)", "block without a path", True))
            continue
        if verdicts:
            worst = max(verdicts, key=lambda v: v.tampering)
            out.dropped.append(Dropped(path, worst.category, worst.tampering))
            continue
        mode = _mode_problem(item.patch_info)
        if mode:
            out.dropped.append(Dropped(path, mode, True))
            continue
        if item.is_binary_file:
            out.dropped.append(Dropped(path, "binary file", path.endswith(LOADED_BINARIES)))
            continue
        if path.endswith(LOADED_BINARIES):
            out.dropped.append(Dropped(path, "file Python loads without source", True))
            continue
        if path in out.blocks:  # two blocks for one file: appliers disagree on what that means
            out.drop(path, "file named twice in the patch", True)
            continue
        out.blocks[path] = _canonical_block(item, source, target)
        out.kept.append(path)
        if item.is_added_file:
            out.added.append(path)
    return out


def _canonical_block(item: object, source: str | None, target: str | None) -> str:
    """One file's diff with headers written by us: a single checked path per side, nothing else."""
    a, b = source or target, target or source
    head = [f"diff --git a/{a} b/{b}\n"]
    for line in str(item.patch_info or "").splitlines():  # type: ignore[attr-defined]
        if line.startswith(("new file mode ", "deleted file mode ", "old mode ", "new mode ", "similarity index ")):
            head.append(line + "\n")
    if source is not None and target is not None and source != target:
        head += [f"rename from {source}\n", f"rename to {target}\n"]
    hunks = "".join(str(h) for h in item)  # type: ignore[attr-defined]
    if hunks:
        head.append(f"--- a/{source}\n" if source is not None else "--- /dev/null\n")
        head.append(f"+++ b/{target}\n" if target is not None else "+++ /dev/null\n")
    return "".join(head) + hunks


# -- the canary: a test that must fail, hidden among the task's tests --------------------------------
_WORDS = ("parse", "render", "config", "roundtrip", "empty", "unicode", "default", "nested", "order", "merge", "limit", "path")


@dataclass(frozen=True)
class Canary:
    """A test appended to a selected test file that fails on any honest run.

    Code that flips outcomes wholesale (a patched report class, a hook registered by any means) flips
    it too; its name is random per run, so the code under test cannot tell it from the task's tests by
    name. A canary reported as passing is proof of tampering; a missing one proves nothing (the module
    may not import).
    """

    path: str
    name: str
    source: str

    @property
    def test_id(self) -> str:
        return f"{self.path}::{self.name}"


def new_canary(path: str) -> Canary:
    a, b = secrets.choice(_WORDS), secrets.choice(_WORDS)
    name = f"test_{a}_{b}_{secrets.token_hex(3)}"
    value = secrets.randbelow(900) + 100
    source = f"\n\ndef {name}():\n    expected = {value}\n    assert expected + {secrets.randbelow(8) + 1} == expected\n"
    return Canary(path, name, source)
