"""Split a pull request's diff into `patch` (the fix) and `test_patch` (the tests that check it).

Why our own splitter instead of a diff library: we split on the raw `diff --git` blocks so that every
block survives byte-for-byte (mode changes, new/deleted files, binary markers), and we classify each block
by path with per-language rules. The diff is produced with `--no-renames`, so a rename is a delete plus
an add and both halves apply with `git apply` and `patch` alike.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable, Literal

FileClass = Literal["test", "code", "docs"]

_HEADER = re.compile(r"^diff --git a/(?P<a>.+?) b/(?P<b>.+?)$")
_BINARY = re.compile(r"^(Binary files .* differ|GIT binary patch)$", re.M)

# Directory names that hold tests, in any language we mine.
TEST_DIRS = frozenset({"test", "tests", "testing", "__tests__", "spec", "specs", "testdata", "test_data", "e2e"})
_JS_EXT = r"[cm]?[jt]sx?"
TEST_FILE_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "python": (re.compile(r"^test_.*\.py$"), re.compile(r".*_tests?\.py$"), re.compile(r"^conftest\.py$")),
    "go": (re.compile(r".*_test\.go$"),),
    "javascript": (re.compile(rf".*[._-](test|spec)\.{_JS_EXT}$"), re.compile(r".*\.snap$")),
    "typescript": (re.compile(rf".*[._-](test|spec)\.{_JS_EXT}$"), re.compile(r".*\.snap$")),
    "rust": (re.compile(r".*_tests?\.rs$"), re.compile(r"^tests?\.rs$")),  # `#[cfg(test)] mod tests;` lives in tests.rs
    "java": (re.compile(r".*Tests?\.java$"), re.compile(r"^Test.*\.java$")),
    "ruby": (re.compile(r".*_spec\.rb$"), re.compile(r"^test_.*\.rb$"), re.compile(r".*_test\.rb$")),
}
# Per-language test directories beyond TEST_DIRS (Jest's mocks and snapshots live next to the code).
EXTRA_TEST_DIRS: dict[str, frozenset[str]] = {
    "javascript": frozenset({"__mocks__", "__snapshots__", "__fixtures__"}),
    "typescript": frozenset({"__mocks__", "__snapshots__", "__fixtures__"}),
    "rust": frozenset({"benches"}),
}
DOC_DIRS = frozenset({"doc", "docs", "documentation", ".github", "changelog.d", "changes", "newsfragments"})
DOC_SUFFIXES = (".md", ".rst", ".txt", ".adoc", ".png", ".jpg", ".svg", ".gif")
DOC_NAMES = re.compile(r"^(changelog|changes|history|news|authors|contributors|license|copying|readme)(\..*)?$", re.I)


def classify_path(path: str, language: str = "python") -> FileClass:
    """'test' for test code and fixtures, 'docs' for documentation and changelogs, else 'code'."""
    parts = path.split("/")
    name = parts[-1]
    dirs = [d.lower() for d in parts[:-1]]
    if language == "java" and "src/test/" in path:
        return "test"
    if any(d in TEST_DIRS or d in EXTRA_TEST_DIRS.get(language, ()) for d in dirs):
        return "test"
    patterns = TEST_FILE_PATTERNS.get(language, ()) + TEST_FILE_PATTERNS["python"]
    if any(p.match(name) for p in patterns):
        return "test"
    if any(d in DOC_DIRS for d in dirs) or name.lower().endswith(DOC_SUFFIXES) or DOC_NAMES.match(name):
        return "docs"
    return "code"


# -- which test files a runner is pointed at ------------------------------------------------------
# A test_patch also carries fixtures, snapshots, mocks and helpers: the runner is pointed only at the
# files that hold tests (what `TaskSpec.extra["test_directives"]` records, and run_tests appends to
# the test command). Python's rule is the verifier's own (`selected_test_files`).
_JS_SUPPORT_DIRS = frozenset({"__mocks__", "__snapshots__", "__fixtures__", "fixtures", "fixture", "helpers", "support", "utils", "testdata"})
_JS_SOURCE = re.compile(rf".*\.{_JS_EXT}$")


def _js_targets(paths: list[str]) -> list[str]:
    out = []
    for path in paths:
        parts = path.split("/")
        name, dirs = parts[-1], {d.lower() for d in parts[:-1]}
        if not _JS_SOURCE.match(name) or name.endswith(".d.ts") or dirs & _JS_SUPPORT_DIRS:
            continue
        if TEST_FILE_PATTERNS["javascript"][0].match(name) or dirs & (TEST_DIRS | {"__tests__"}):
            out.append(path)
    return out


def _go_targets(paths: list[str]) -> list[str]:
    """`go test` takes packages: the folder of every `_test.go` file the patch leaves in place; with
    none (only testdata changed) every package (`./...`), since bare `go test` tests only the root."""
    dirs = (posixpath.dirname(p) for p in paths if p.endswith("_test.go"))
    return list(dict.fromkeys(f"./{d}" if d else "." for d in dirs)) or ["./..."]


TargetRule = Callable[[list[str]], list[str]]
TARGET_RULES: dict[str, TargetRule] = {"javascript": _js_targets, "typescript": _js_targets, "go": _go_targets}


def register_target_rule(language: str, rule: TargetRule) -> None:
    """Let a language module say which files (or packages, or test binaries) its runner is pointed at."""
    TARGET_RULES[language] = rule


def runner_targets(test_patch: str, language: str = "python") -> list[str]:
    """What the test command runs for a task whose tests are `test_patch`: the one rule per language.

    Files the patch deletes are never targets. An empty list means "run the whole suite".
    """
    if language == "python":
        from envfarm.verifiers.run import selected_test_files  # the verifier owns Python's rule

        return selected_test_files(test_patch)
    kept = [b.new_path for b in split_blocks(test_patch) if "\ndeleted file mode" not in b.text.split("@@", 1)[0]]
    _load_language(language)
    rule = TARGET_RULES.get(language)
    return rule(list(dict.fromkeys(kept))) if rule else []


@dataclass(frozen=True)
class FileDiff:
    """One `diff --git` block: its text, the path it is classified by, and whether it is binary."""

    old_path: str
    new_path: str
    text: str
    binary: bool
    added: int
    removed: int

    @property
    def path(self) -> str:
        """The path a reviewer would name: the new one, unless the file was deleted."""
        return self.old_path if "\ndeleted file mode" in self.text.split("@@", 1)[0] else self.new_path


@dataclass
class SplitDiff:
    patch: str = ""
    test_patch: str = ""
    code_files: list[str] = field(default_factory=list)
    test_files: list[str] = field(default_factory=list)
    doc_files: list[str] = field(default_factory=list)
    binary_files: list[str] = field(default_factory=list)
    mixed_files: list[str] = field(default_factory=list)  # source files whose tests and code both changed
    lines_changed: int = 0


def split_blocks(diff: str) -> list[FileDiff]:
    """Cut git's diff output into per-file blocks; text before the first header is ignored."""
    blocks: list[FileDiff] = []
    current: list[str] = []
    header: re.Match[str] | None = None

    def flush() -> None:
        if header is None:
            return
        text = "".join(current)
        added = removed = 0
        body = text.split("\n@@", 1)
        if len(body) == 2:
            for line in ("@@" + body[1]).splitlines():
                if line.startswith("+") and not line.startswith("+++"):
                    added += 1
                elif line.startswith("-") and not line.startswith("---"):
                    removed += 1
        blocks.append(FileDiff(header["a"], header["b"], text, bool(_BINARY.search(text)), added, removed))

    for line in diff.splitlines(keepends=True):
        match = _HEADER.match(line.rstrip("\n"))
        if match:
            flush()
            header, current = match, [line]
        elif header is not None:
            current.append(line)
    flush()
    return blocks


# A language whose tests can live inside source files (Rust's `#[cfg(test)]` modules) may split one
# code block into (code part, test part) diff texts; either may be "", and both non-empty means the
# file mixes tests and fix (`SplitDiff.mixed_files`, see tasks/README.md).
BlockSplitter = Callable[["FileDiff"], tuple[str, str]]
BLOCK_SPLITTERS: dict[str, BlockSplitter] = {}


def register_block_splitter(language: str, splitter: BlockSplitter) -> None:
    BLOCK_SPLITTERS[language] = splitter


def _load_language(language: str) -> None:
    """Import the language's recipes module, which registers its rules (a Ray worker may not have yet)."""
    if language in TARGET_RULES or language in BLOCK_SPLITTERS:
        return
    from envfarm.tasks.envsetup import LANGUAGE_MODULES

    if language in LANGUAGE_MODULES:
        import importlib

        importlib.import_module(LANGUAGE_MODULES[language])


def split_diff(diff: str, language: str = "python") -> SplitDiff:
    """Test blocks go to `test_patch`, everything else (code and docs) to `patch`, order kept."""
    result = SplitDiff()
    patch_parts: list[str] = []
    test_parts: list[str] = []
    _load_language(language)
    splitter = BLOCK_SPLITTERS.get(language)
    for block in split_blocks(diff):
        kind = classify_path(block.path, language)
        result.lines_changed += block.added + block.removed
        if block.binary:
            result.binary_files.append(block.path)
        if kind == "code" and splitter is not None and not block.binary:
            code_text, test_text = splitter(block)
            if code_text and test_text:
                # Tests and fix in one file: the verifier restores test_patch's files, which would erase
                # the fix, so the block stays whole with the fix and the candidate is refused.
                patch_parts.append(block.text)
                result.code_files.append(block.path)
                result.mixed_files.append(block.path)
                continue
            if test_text:
                test_parts.append(test_text)
                result.test_files.append(block.path)
            if code_text:
                patch_parts.append(code_text)
                result.code_files.append(block.path)
            continue
        if kind == "test":
            test_parts.append(block.text)
            result.test_files.append(block.path)
        else:
            patch_parts.append(block.text)
            (result.code_files if kind == "code" else result.doc_files).append(block.path)
    result.patch = "".join(patch_parts)
    result.test_patch = "".join(test_parts)
    return result

