"""The records the miner reads, in GitHub REST field names, so API pages and JSONL dumps parse alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from envfarm.errors import EnvfarmError


class SourceError(EnvfarmError):
    """A source cannot deliver a repository's records (bad token, missing repository, exhausted rate limit)."""

    def __init__(self, problem: str, fix: str = "", reason_class: str = "source_error") -> None:
        self.reason_class = reason_class
        super().__init__(problem, fix)


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Issue:
    number: int
    title: str
    body: str
    created_at: datetime | None
    url: str = ""
    state: str = "closed"
    comment_count: int | None = None  # REST's "comments"; 0 lets the client skip a comments call

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> "Issue":
        count = doc.get("comments")
        return cls(
            number=int(doc["number"]),
            title=doc.get("title") or "",
            body=doc.get("body") or "",
            created_at=parse_time(doc.get("created_at")),
            url=doc.get("html_url") or "",
            state=doc.get("state") or "",
            comment_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        )


@dataclass(frozen=True)
class Comment:
    """One comment on an issue; those written before the fix started become SWE-bench `hints_text`."""

    issue_number: int
    body: str
    created_at: datetime | None
    author: str = ""

    @classmethod
    def from_api(cls, issue_number: int, doc: dict[str, Any]) -> "Comment":
        user = doc.get("user")
        return cls(
            issue_number=int(issue_number),
            body=doc.get("body") or "",
            created_at=parse_time(doc.get("created_at")),
            author=(user.get("login") or "") if isinstance(user, dict) else "",
        )


@dataclass(frozen=True)
class PullRequest:
    number: int
    title: str
    body: str
    created_at: datetime | None
    merged_at: datetime | None
    merge_commit_sha: str
    base_sha: str
    head_sha: str
    url: str = ""
    commit_count: int = 1
    commit_messages: tuple[str, ...] = ()
    # Not a REST field: GraphQL's first commit authoredDate, or a dump's "first_commit_at". It bounds hints_text.
    first_commit_at: datetime | None = None
    # What GitHub itself says the PR changed, when the source knows it (GraphQL, a single-PR REST record, a
    # dump): the candidate's computed diff must agree, or the candidate is refused (`diff_mismatch`).
    files: tuple[str, ...] | None = None  # paths, as the PR's "files changed" lists them; None: unknown
    changed_files: int | None = None
    additions: int | None = None
    deletions: int | None = None

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> "PullRequest":
        return cls(
            number=int(doc["number"]),
            title=doc.get("title") or "",
            body=doc.get("body") or "",
            created_at=parse_time(doc.get("created_at")),
            merged_at=parse_time(doc.get("merged_at")),
            merge_commit_sha=doc.get("merge_commit_sha") or "",
            base_sha=(doc.get("base") or {}).get("sha", ""),
            head_sha=(doc.get("head") or {}).get("sha", ""),
            url=doc.get("html_url") or "",
            commit_count=int(doc.get("commits") or 1),
            commit_messages=tuple(doc.get("commit_messages") or ()),
            first_commit_at=parse_time(doc.get("first_commit_at")),
            files=_file_list(doc.get("files")),
            changed_files=_count(doc.get("changed_files")),
            additions=_count(doc.get("additions")),
            deletions=_count(doc.get("deletions")),
        )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _file_list(value: Any) -> tuple[str, ...] | None:
    """A PR's changed paths from a dump: REST `/pulls/N/files` entries ({"filename": ...}), GraphQL nodes
    ({"path": ...}) or plain strings. Anything else is 'unknown', never an empty list (which would claim
    the PR changed nothing)."""
    if not isinstance(value, list):
        return None
    paths = []
    for entry in value:
        path = entry.get("filename") or entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(path, str) or not path:
            return None
        paths.append(path)
    return tuple(paths)


@dataclass(frozen=True)
class CrossReference:
    """An issue's timeline says a pull request referenced it (GitHub 'cross-referenced' / 'connected')."""

    issue_number: int
    pr_number: int


@dataclass
class RepoActivity:
    """Everything one repository's sources said, plus the lines that could not be read and why."""

    repo: str
    issues: dict[int, Issue] = field(default_factory=dict)
    pulls: dict[int, PullRequest] = field(default_factory=dict)
    references: list[CrossReference] = field(default_factory=list)
    comments: dict[int, list[Comment]] = field(default_factory=dict)  # issue number -> its comments
    skipped: list[str] = field(default_factory=list)
    clone_url: str = ""
