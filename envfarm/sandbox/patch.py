"""Applying unified diffs inside a sandbox, all or nothing, with an error that names the failing hunk.

Order of attempts follows the SWE-bench harness: `git apply`, then `patch --fuzz`; each is checked with a
dry run first, so a patch that fails leaves the tree exactly as it was.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from envfarm.errors import PatchError

if TYPE_CHECKING:
    from envfarm.sandbox.protocol import Sandbox

_GIT_FAILED_AT = re.compile(r"error: patch failed: (?P<path>.+?):(?P<line>\d+)")
_GIT_MISSING = re.compile(r"error: (?P<path>.+?): (No such file or directory|does not exist in index)")
_GIT_EXISTS = re.compile(r"error: (?P<path>.+?): already exists in working directory")


def parse_diff(diff: str) -> PatchSet:
    """Parse or raise a PatchError that says why the text is not a usable diff."""
    if not diff or not diff.strip():
        raise PatchError("the patch is empty", "pass a unified diff (git diff output)")
    try:
        patch = PatchSet(diff)
    except UnidiffParseError as exc:
        raise PatchError(f"the patch is not a valid unified diff: {exc}", "regenerate it with 'git diff'") from None
    if len(patch) == 0:
        raise PatchError("the text contains no file diffs (no '--- a/...' / '+++ b/...' headers)", "pass 'git diff' output")
    return patch


def failing_hunk(patch: PatchSet, tool_output: str) -> str:
    """Map git's 'patch failed: path:LINE' to the hunk header, so users see which hunk, not a line number."""
    match = _GIT_FAILED_AT.search(tool_output)
    if match:
        path, line = match["path"], int(match["line"])
        for patched_file in patch:
            if patched_file.path == path or patched_file.source_file.endswith(path):
                best = None
                for hunk in patched_file:
                    if hunk.source_start <= line:
                        best = hunk
                if best is None and len(patched_file):
                    best = patched_file[0]
                if best is not None:
                    header = f"@@ -{best.source_start},{best.source_length} +{best.target_start},{best.target_length} @@"
                    return f"{path} {header}"
        return f"{path}:{line}"
    for pattern, what in ((_GIT_MISSING, "file not found"), (_GIT_EXISTS, "file already exists")):
        match = pattern.search(tool_output)
        if match:
            return f"{match['path']} ({what})"
    return ""


def apply_patch_in(sandbox: "Sandbox", diff: str, workdir: str) -> None:
    patch = parse_diff(diff)
    tmp = f"/tmp/.envfarm-patch-{uuid.uuid4().hex[:12]}.diff"
    sandbox.write_file(tmp, diff if diff.endswith("\n") else diff + "\n")
    try:
        attempts = (
            (f"git apply --check --verbose {tmp}", f"git apply --verbose {tmp}"),
            (f"patch --dry-run --batch --forward --fuzz=2 -p1 -i {tmp}", f"patch --batch --forward --fuzz=2 -p1 -i {tmp}"),
        )
        first_failure = ""
        for check, apply in attempts:
            checked = sandbox.exec(check, timeout=120, workdir=workdir)
            if checked.exit_code == 0:
                applied = sandbox.exec(apply, timeout=120, workdir=workdir)
                if applied.exit_code == 0:
                    return
                checked = applied
            first_failure = first_failure or checked.output
        hunk = failing_hunk(patch, first_failure)
        detail = first_failure.strip().splitlines()
        errors = [line for line in detail if line.startswith("error:") and "while searching" not in line]
        reason = errors[0] if errors else (detail[-1] if detail else "")
        raise PatchError(
            f"patch does not apply in {workdir}" + (f": hunk {hunk} failed" if hunk else "") + (f" ({reason})" if reason else ""),
            "rebase the patch on the task's base commit",
            hunk=hunk,
        )
    finally:
        sandbox.exec(["rm", "-f", tmp], timeout=30)
