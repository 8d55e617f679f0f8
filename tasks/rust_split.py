"""Rust tests inside source files: which hunks of a `.rs` diff block change a `#[cfg(test)]` module.

The rule (documented in tasks/README.md):
- a source file whose every changed hunk lies inside a test module (`#[cfg(test)] mod tests { ... }`)
  is a test file: the whole block goes to `test_patch`, and the verifier restores that file to the
  base and applies the test hunks, as for any test file (an agent's edits to it are discarded);
- a source file with hunks both inside and outside test modules ("mixed") cannot be split: the
  verifier restores every file `test_patch` names, which would erase the fix in that same file, and
  leaving the test hunks with the fix would make tests that exist only with the gold patch (no agent
  could make them pass) and that an agent could edit. The block stays whole in `patch` and is reported
  as mixed; the miner refuses such candidates (`tests_inside_fixed_source`).

Where a hunk is, read from the diff alone (the splitter sees one block, not the file): git starts each
hunk header with the nearest line above it that begins in column 0 (`@@ ... @@ mod tests {`), which
for rustfmt-formatted code is the enclosing top-level item; inside the hunk, a `#[cfg(test)]`
attribute followed by `mod name {` opens a test module and a `}` at that module's indentation closes
it. A module named `tests`/`test` in the header counts as a test module (its `#[cfg(test)]` line is
above the hunk). Anything this cannot place is code, the safe side.
"""

from __future__ import annotations

import re

from envfarm.tasks.patchsplit import FileDiff

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@ ?(?P<context>.*)$")
_TEST_MOD_CONTEXT = re.compile(r"^(?:pub(?:\([\w:]+\))? )?mod (?:tests?|\w+_tests?|test_\w+)\s*\{")
_CFG_TEST = re.compile(r"^\s*#\[cfg\((?:test|all\(test[^\]]*\)|any\(test[^\]]*\))\)\]\s*$")
_MOD_OPEN = re.compile(r"^(?P<indent>\s*)(?:pub(?:\([\w:]+\))? )?mod \w+\s*\{\s*$")
_ATTRIBUTE = re.compile(r"^\s*#!?\[")


def _hunks(text: str) -> tuple[str, list[list[str]]]:
    """(header lines before the first hunk, hunks as lists of lines including their @@ line)."""
    lines = text.splitlines(keepends=True)
    head: list[str] = []
    hunks: list[list[str]] = []
    for line in lines:
        if line.startswith("@@"):
            hunks.append([line])
        elif hunks:
            hunks[-1].append(line)
        else:
            head.append(line)
    return "".join(head), hunks


def hunk_in_test_module(hunk: list[str]) -> bool | None:
    """True: every changed line is inside a test module; False: none is; None: some are (mixed)."""
    match = _HUNK.match(hunk[0].rstrip("\n"))
    inside_indent: str | None = "" if match and _TEST_MOD_CONTEXT.match(match.group("context")) else None
    pending_cfg = False
    inside_changes = outside_changes = 0
    for raw in hunk[1:]:
        if raw.startswith("\\"):
            continue
        sign, line = raw[:1], raw[1:].rstrip("\n")
        if sign == "-":
            # the old side: counted where it stands, but it does not move the new side's state
            if inside_indent is not None:
                inside_changes += 1
            else:
                outside_changes += 1
            continue
        changed = sign == "+"
        if inside_indent is None:
            if changed:
                outside_changes += 1
            if _CFG_TEST.match(line):
                pending_cfg = True
            elif pending_cfg and _MOD_OPEN.match(line):
                inside_indent, pending_cfg = _MOD_OPEN.match(line).group("indent"), False
                if changed:  # the `mod tests {` line itself belongs to the test module
                    outside_changes -= 1
                    inside_changes += 1
            elif line.strip() and not _ATTRIBUTE.match(line):
                pending_cfg = False
            continue
        if changed:
            inside_changes += 1
        if line.rstrip() == f"{inside_indent}}}":
            inside_indent = None
    if pending_cfg and outside_changes:
        return None  # a `#[cfg(test)]` whose module starts in the next hunk: cannot tell
    if inside_changes and outside_changes:
        # `+#[cfg(test)]` lines above an added test module are the module's own
        return None
    return inside_changes > 0


def split_rust_block(block: FileDiff) -> tuple[str, str]:
    """(code text, test text) for one `.rs` block outside test folders; see the module docstring.

    A mixed block comes back as (whole block, whole block): both non-empty, which `split_diff` records
    as mixed and keeps in `patch` only.
    """
    if not block.path.endswith(".rs"):
        return block.text, ""
    _head, hunks = _hunks(block.text)
    if not hunks:
        return block.text, ""
    verdicts = [hunk_in_test_module(h) for h in hunks]
    # A hunk that adds a whole test module starts with its `#[cfg(test)]` line outside: read it as inside.
    for index, hunk in enumerate(hunks):
        if verdicts[index] is None and _adds_whole_test_module(hunk):
            verdicts[index] = True
    if all(v is True for v in verdicts):
        return "", block.text
    if all(v is False for v in verdicts):
        return block.text, ""
    return block.text, block.text


def _adds_whole_test_module(hunk: list[str]) -> bool:
    """Whether the hunk's changes are only added lines forming `#[cfg(test)]` + `mod x { ... }` (+ blank lines)."""
    changed = [raw for raw in hunk[1:] if raw[:1] in "+-"]
    if not changed or any(raw.startswith("-") and raw[1:].strip() for raw in changed):
        return False
    added = [raw[1:].rstrip("\n") for raw in changed if raw[1:].strip()]
    if not added or not _CFG_TEST.match(added[0]):
        return False
    rest = [line for line in added[1:] if not _ATTRIBUTE.match(line) or _MOD_OPEN.match(line)]
    opened = _MOD_OPEN.match(rest[0]) if rest else None
    return bool(opened) and rest[-1].rstrip() == f"{opened.group('indent')}}}"
