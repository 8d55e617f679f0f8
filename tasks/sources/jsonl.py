"""Offline source: a repository's issues, pull requests and timeline events from a JSONL dump.

Layout (one file per repository, so an air-gapped cluster can mine from a snapshot):
    DIR/<owner>__<name>.jsonl   lines {"type": "issue"|"pull"|"timeline"|"comment", "data": {...GitHub REST fields}}
                                (timeline and comment lines also carry "issue_number"; a pull may carry
                                "first_commit_at", the time its first commit was authored)
    DIR/<owner>__<name>.git     optional bare git mirror used instead of cloning from GitHub
A malformed line is skipped with its line number and reason; it never stops the repository. A dump that
cannot be JSONL at all (UTF-16 or UTF-32, not UTF-8 on any line, empty, not a file) is a SourceError
naming the dump, and a dump whose every line was skipped is a failed scan (the pipeline's scan stage).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from envfarm.tasks.sources.records import Comment, CrossReference, Issue, PullRequest, RepoActivity, SourceError


def dump_path(directory: Path, repo: str) -> Path:
    return Path(directory) / f"{repo.replace('/', '__')}.jsonl"


def reference_from_event(issue_number: int, event: dict[str, Any]) -> CrossReference | None:
    """A timeline event naming a pull request that references this issue, if it is one."""
    kind = event.get("event")
    if kind == "cross-referenced":
        source = (event.get("source") or {}).get("issue") or {}
        if "pull_request" in source and source.get("number"):
            return CrossReference(issue_number, int(source["number"]))
    if kind in ("connected", "referenced_by_pull_request") and event.get("pull_request_number"):
        return CrossReference(issue_number, int(event["pull_request_number"]))
    return None


def add_record(activity: RepoActivity, kind: str, data: dict[str, Any], issue_number: int | None = None) -> None:
    if kind == "issue":
        if "pull_request" in data:  # the issues API lists PRs too
            return
        issue = Issue.from_api(data)
        activity.issues[issue.number] = issue
    elif kind == "pull":
        pull = PullRequest.from_api(data)
        activity.pulls[pull.number] = pull
    elif kind == "timeline":
        if issue_number is None:
            raise ValueError("timeline record without issue_number")
        ref = reference_from_event(int(issue_number), data)
        if ref is not None:
            activity.references.append(ref)
    elif kind == "comment":
        if issue_number is None:
            raise ValueError("comment record without issue_number")
        activity.comments.setdefault(int(issue_number), []).append(Comment.from_api(int(issue_number), data))
    else:
        raise ValueError(f"unknown record type {kind!r} (expected issue, pull, timeline or comment)")


def read_lines(repo: str, lines: Iterable[bytes], source_name: str) -> RepoActivity:
    activity = RepoActivity(repo=repo)
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(UTF8_BOM)  # editors on Windows write one; it is not part of the JSON
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw.decode("utf-8"))
            if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
                raise ValueError('expected an object with "type" and "data"')
            add_record(activity, str(doc.get("type")), doc["data"], doc.get("issue_number"))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            activity.skipped.append(f"{source_name}:{number}: {type(exc).__name__}: {str(exc)[:200]}")
    return activity


UTF8_BOM = b"\xef\xbb\xbf"
WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def wide_encoding(head: bytes) -> str | None:
    """'UTF-16' / 'UTF-32' when the file's first bytes say so (a BOM, or NULs between ASCII letters, as
    PowerShell's `>` and Python's encoding='utf-16' write); JSONL in UTF-8 never holds a NUL byte."""
    for bom, name in WIDE_BOMS.items():  # UTF-32's BOMs first: they start with UTF-16's
        if head.startswith(bom):
            return name
    if head and head.count(0) * 4 >= len(head):
        return "UTF-32" if head.count(0) * 4 >= len(head) * 3 else "UTF-16"
    return None


def records_read(activity: RepoActivity) -> int:
    """How many records the dump contributed (issues, pulls, references, comments)."""
    return len(activity.issues) + len(activity.pulls) + len(activity.references) + sum(map(len, activity.comments.values()))


def load_repo(directory: str | Path, repo: str) -> RepoActivity:
    path = dump_path(Path(directory), repo)
    where = f"write {path.name} into {directory} (see tasks/sources/jsonl.py for the format) or drop --offline"
    if not path.exists():
        raise SourceError(f"no offline dump for {repo}: {path} does not exist", where, reason_class="repo_not_found")
    if not path.is_file():
        raise SourceError(f"offline dump {path} is not a file", where, reason_class="dump_unreadable")
    try:
        with path.open("rb") as handle:
            wide = wide_encoding(handle.read(4096))
            if wide is not None:
                raise SourceError(f"dump {path} is {wide}, not UTF-8 JSONL",
                                  f"write UTF-8 JSONL: iconv -f {wide} -t UTF-8 {path.name} > {path.stem}.utf8, then rename it",
                                  reason_class="dump_encoding")
            handle.seek(0)
            activity = read_lines(repo, handle, path.name)
    except OSError as exc:
        raise SourceError(f"cannot read offline dump {path}: {exc.strerror or exc}", "check the file's permissions",
                          reason_class="dump_unreadable") from None
    if not activity.skipped and not records_read(activity):
        raise SourceError(f"offline dump {path} is empty", where, reason_class="dump_empty")
    if not records_read(activity) and all(": UnicodeDecodeError: " in line for line in activity.skipped):
        raise SourceError(f"dump {path} is not UTF-8 text ({activity.skipped[0]})",
                          f"write UTF-8 JSONL: iconv -f LATIN1 -t UTF-8 {path.name} > {path.stem}.utf8 (name the dump's real encoding), then rename it",
                          reason_class="dump_encoding")
    mirror = path.with_suffix(".git")
    if mirror.is_dir():
        activity.clone_url = str(mirror.resolve())
    return activity


def write_dump(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records atomically (temp file, then rename): a killed writer never leaves half a dump."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, default=str) + "\n")
    tmp.replace(path)
