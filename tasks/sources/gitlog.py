"""Build an offline JSONL dump from a repository's own history, for when no GitHub API is reachable.

What git alone can tell: merge commits ("Merge pull request #N from ..."), squash merges ("Title (#N)"),
and commits that close issues with a keyword ("Fix #N: ..."). What it cannot: the issues' own text.
Issue records written here therefore carry `"synthesized": true` and use the commit message as the
problem statement; tasks mined from such a dump are for exercising the pipeline, and say so in their
`source` field. With API access, use the GitHub source instead.
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from envfarm.tasks.candidates import closing_refs
from envfarm.tasks.sources.jsonl import dump_path, write_dump

_MERGE = re.compile(r"^Merge pull request #(\d+) from \S+")
_SQUASH = re.compile(r"\(#(\d+)\)\s*$")


def _log(repo_dir: Path, *args: str) -> list[list[str]]:
    out = subprocess.run(["git", "-C", str(repo_dir), "log", "--format=%H%x1f%P%x1f%cI%x1f%B%x1e", *args],
                         capture_output=True, check=True).stdout.decode("utf-8", errors="replace")
    return [rec.strip("\n").split("\x1f") for rec in out.split("\x1e") if rec.strip()]


def records_from_git(repo_dir: Path, repo: str, ref: str = "HEAD") -> Iterator[dict[str, Any]]:
    issues: dict[int, dict[str, Any]] = {}
    seen: set[int] = set()
    for sha, parents, date, message in _log(repo_dir, "--first-parent", ref):
        parent_list = parents.split()
        subject, _, body = message.partition("\n")
        number = None
        if (m := _MERGE.match(subject)) and len(parent_list) == 2:
            number = int(m.group(1))
            branch_msgs = subprocess.run(["git", "-C", str(repo_dir), "log", "--format=%B", f"{parent_list[0]}..{parent_list[1]}"],
                                         capture_output=True).stdout.decode("utf-8", errors="replace")
            body = f"{body}\n{branch_msgs}"
        elif (m := _SQUASH.search(subject)) and len(parent_list) == 1:
            number = int(m.group(1))
        elif len(parent_list) == 1 and (refs := closing_refs(message, repo)):
            number = refs[0]  # a direct commit closing an issue: numbered by the issue it closes
        if number is None or number in seen:
            continue
        seen.add(number)
        when = datetime.fromisoformat(date).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{subject}\n\n{body}".strip()
        for issue in closing_refs(text, repo):
            issues.setdefault(issue, {"number": issue, "title": f"Issue #{issue} (text unavailable offline)",
                                      "body": text, "created_at": when, "state": "closed", "synthesized": True,
                                      "html_url": f"https://github.com/{repo}/issues/{issue}"})
        yield {"type": "pull", "data": {
            "number": number, "title": subject, "body": body, "created_at": when, "merged_at": when,
            "merge_commit_sha": sha, "base": {"sha": parent_list[0] if parent_list else ""}, "head": {"sha": sha},
            "html_url": f"https://github.com/{repo}/pull/{number}", "commits": 1, "synthesized_from_git": True}}
    for issue in issues.values():
        yield {"type": "issue", "data": issue}


def dump_from_git(repo_dir: str | Path, repo: str, out_dir: str | Path) -> Path:
    """Write DIR/<owner>__<name>.jsonl and a bare mirror beside it (so `--offline DIR` finds both)."""
    out_dir = Path(out_dir)
    path = dump_path(out_dir, repo)
    write_dump(path, list(records_from_git(Path(repo_dir), repo)))
    mirror = path.with_suffix(".git")
    if not mirror.exists():
        subprocess.run(["git", "clone", "-q", "--mirror", str(repo_dir), str(mirror)], check=True)
    return path
