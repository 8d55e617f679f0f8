"""Multi-SWE-bench rows (ByteDance-Seed/Multi-SWE-bench and its RL set): one pull request per row.

The test lists are maps from test name to its outcome in three runs (`run`: base, `test`: with the
test patch, `fix`: with the fix). Its own harness resolves a task when every test of f2p, s2p and n2p
(failing, skipped or absent before, passing after) and of p2p passes, so those become FAIL_TO_PASS and
PASS_TO_PASS; the maps themselves are kept as given in `extra`. Its per-repository parsers are not the
SWE-bench harness's, so such tasks cannot be graded here yet (their log parser names that).
"""

from __future__ import annotations

from typing import Any

from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.importers.base import ImportRowError, Importer, plain, text

REQUIRED = frozenset({"org", "repo", "number", "base", "fix_patch", "test_patch", "f2p_tests", "p2p_tests"})
OPTIONAL = frozenset({"instance_id", "state", "title", "body", "resolved_issues", "fixed_tests", "s2p_tests", "n2p_tests",
                      "run_result", "test_patch_result", "fix_patch_result", "lang", "language", "hints"})


def _names(row: dict[str, Any], key: str, where: str) -> list[str]:
    value = plain(row.get(key)) or {}
    if not isinstance(value, dict):
        raise ImportRowError(f"{where}: field {key!r} must map test names to their outcomes", "give it as a JSON object")
    return sorted(value)


def to_task(row: dict[str, Any], where: str) -> TaskSpec:
    base = plain(row["base"])
    if not isinstance(base, dict) or not base.get("sha"):
        raise ImportRowError(f"{where}: field 'base' must be an object with the base commit's 'sha'", "give base as {\"label\", \"ref\", \"sha\"}")
    org, name, number = text(row["org"]), text(row["repo"]), int(row["number"])
    issues = plain(row.get("resolved_issues")) or []
    statement = "\n\n".join(f"{i.get('title', '')}\n{i.get('body', '')}".strip() for i in issues if isinstance(i, dict)) or text(row.get("body"))
    f2p = sorted({*_names(row, "f2p_tests", where), *_names(row, "s2p_tests", where), *_names(row, "n2p_tests", where)})
    language = text(row.get("lang") or row.get("language")) or "python"
    return TaskSpec(
        instance_id=text(row.get("instance_id")) or f"{org}__{name}-{number}",
        repo=f"{org}/{name}",
        base_commit=text(base["sha"]),
        patch=text(row["fix_patch"]),
        test_patch=text(row["test_patch"]),
        problem_statement=statement,
        hints_text=text(row.get("hints")),
        FAIL_TO_PASS=f2p,
        PASS_TO_PASS=_names(row, "p2p_tests", where),
        language=language,
        install=InstallConfig(log_parser=f"swebench:{org}/{name}"),
        test_ids="swebench",
        source={"dataset": "multi-swe-bench", "pull_request": f"https://github.com/{org}/{name}/pull/{number}"},
        extra={k: plain(row[k]) for k in ("f2p_tests", "p2p_tests", "s2p_tests", "n2p_tests", "fixed_tests", "title") if row.get(k) is not None},
    )


IMPORTER = Importer("multi-swe-bench", REQUIRED, OPTIONAL, to_task, signature=frozenset({"fix_patch", "f2p_tests"}))
