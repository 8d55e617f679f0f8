"""Candidates: merged pull requests that resolve an issue and change both tests and code.

Each pull request becomes either a `Candidate` or a `Rejection` with a reason class (counted in the
funnel) and a human reason. Nothing here touches a container: it reads the source records and the
repository's bare mirror only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from envfarm.tasks.mirror import Mirror, MirrorError
from envfarm.tasks.patchsplit import SplitDiff, split_diff
from envfarm.tasks.sources.records import Comment, Issue, PullRequest, RepoActivity

_KEYWORDS = r"(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)"


def closing_refs(text: str, repo: str) -> list[int]:
    """Issue numbers a text closes with GitHub's keywords: '#12', 'owner/repo#12' or an issue URL."""
    owner_repo = re.escape(repo)
    pattern = re.compile(
        rf"\b{_KEYWORDS}\b\s*:?\s+(?:(?:{owner_repo})?#(\d+)|https?://github\.com/{owner_repo}/issues/(\d+))",
        re.I,
    )
    return [int(a or b) for a, b in pattern.findall(text or "")]


@dataclass(frozen=True)
class FilterConfig:
    min_issue_chars: int = 40
    max_patch_lines: int = 2000
    max_files: int = 50
    created_after: datetime | None = None
    created_before: datetime | None = None
    language: str = "python"


@dataclass
class Candidate:
    repo: str
    pull: PullRequest
    issues: list[Issue]
    base_commit: str
    head_commit: str
    split: SplitDiff
    link: str  # how the issue was linked: keyword or timeline
    hints_text: str = ""  # issue comments written before the fix began (SWE-bench's definition)

    @property
    def instance_id(self) -> str:
        return instance_id(self.repo, self.pull.number)

    @property
    def problem_statement(self) -> str:
        return "\n\n".join(f"{i.title}\n{i.body}".strip() for i in self.issues)


@dataclass
class Rejection:
    repo: str
    pr_number: int
    reason_class: str
    reason: str
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        return instance_id(self.repo, self.pr_number)


def instance_id(repo: str, number: int) -> str:
    owner, name = repo.split("/", 1)
    return f"{owner}__{name}-{number}"


def linked_issues(activity: RepoActivity, pull: PullRequest, commit_messages: list[str]) -> tuple[list[int], str]:
    by_keyword: list[int] = []
    for text in (pull.title, pull.body, *pull.commit_messages, *commit_messages):
        by_keyword += closing_refs(text, activity.repo)
    if by_keyword:
        return list(dict.fromkeys(by_keyword)), "keyword"
    by_timeline = [r.issue_number for r in activity.references if r.pr_number == pull.number]
    return list(dict.fromkeys(by_timeline)), "timeline"


def base_and_head(mirror: Mirror, pull: PullRequest) -> tuple[str, str]:
    """Where the fix applies: the merge commit's first parent (a squash or merge), or head~n for a rebase."""
    head = pull.merge_commit_sha
    if not mirror.has_commit(head):
        raise MirrorError(f"merge commit {head[:12]} of PR #{pull.number} is not in the mirror", "re-fetch the mirror", "commit_missing")
    parents = mirror.parents(head)
    if not parents:
        raise MirrorError(f"merge commit {head[:12]} has no parent", "", "commit_missing")
    if len(parents) == 1 and pull.commit_count > 1 and pull.base_sha and mirror.has_commit(pull.base_sha):
        # Rebase-merged: the PR's commits sit on top of each other; the base is their first parent.
        base = mirror.git_bytes("rev-parse", f"{head}~{pull.commit_count}").decode().strip()
        return base, head
    return parents[0], head


def hints_cutoff(mirror: Mirror, pull: PullRequest) -> datetime | None:
    """When work on the fix began: comments after this may discuss the fix itself, so they are no hint.

    SWE-bench uses the PR's first commit. Sources that know it (GraphQL, dumps) set `first_commit_at`;
    otherwise a true merge's side branch in the mirror gives the earliest author date. Squash and rebase
    merges rewrite commits, so there the PR's creation time is the honest fallback.
    """
    if pull.first_commit_at is not None:
        return utc(pull.first_commit_at)
    try:
        parents = mirror.parents(pull.merge_commit_sha) if pull.merge_commit_sha else []
        if len(parents) > 1:
            out = mirror.git_bytes("log", "--format=%at", f"{parents[0]}..{parents[1]}").decode().split()
            if out:
                return datetime.fromtimestamp(min(int(t) for t in out), timezone.utc)
    except (MirrorError, ValueError):
        pass
    return utc(pull.created_at) if pull.created_at else None


def hints_text(comments: list[Comment], cutoff: datetime | None) -> str:
    """Comment bodies strictly before `cutoff`, oldest first; undated comments (or no cutoff) are left out,
    because a comment we cannot place in time might leak the fix."""
    if cutoff is None:
        return ""
    early = [c for c in comments if c.created_at is not None and utc(c.created_at) < cutoff and c.body.strip()]
    return "\n".join(c.body.strip() for c in sorted(early, key=lambda c: utc(c.created_at)))  # type: ignore[arg-type]


def select(activity: RepoActivity, pull: PullRequest, mirror: Mirror, config: FilterConfig) -> Candidate | Rejection:
    repo = activity.repo

    def reject(reason_class: str, reason: str, **detail: object) -> Rejection:
        return Rejection(repo, pull.number, reason_class, reason, dict(detail))

    if pull.merged_at is None:
        return reject("not_merged", "the pull request was closed without merging")
    created = pull.created_at
    if config.created_after and created and created < config.created_after:
        return reject("before_cutoff", f"created {created:%Y-%m-%d}, before {config.created_after:%Y-%m-%d}")
    if config.created_before and created and created >= config.created_before:
        return reject("after_cutoff", f"created {created:%Y-%m-%d}, on/after {config.created_before:%Y-%m-%d}")
    try:
        base, head = base_and_head(mirror, pull)
        merged_msgs = mirror.messages(f"{parents_range(mirror, head)}") if len(mirror.parents(head)) > 1 else mirror.messages(f"{head}^!")
    except MirrorError as exc:
        return reject(exc.reason_class, exc.problem)
    numbers, link = linked_issues(activity, pull, merged_msgs)
    issues = [activity.issues[n] for n in numbers if n in activity.issues]
    if not issues:
        why = f"references #{', #'.join(map(str, numbers))} but none is a known issue" if numbers else "no closing keyword and no timeline cross-reference"
        return reject("no_linked_issue", why)
    statement_len = sum(len((i.title + i.body).strip()) for i in issues)
    if statement_len < config.min_issue_chars:
        return reject("issue_too_short", f"issue text has {statement_len} characters, fewer than {config.min_issue_chars}")
    raw = mirror.diff(base, head)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject("non_utf8_diff", f"the diff is not UTF-8 (byte {exc.start}): it cannot be stored as SWE-bench text")
    split = split_diff(text, config.language)
    if split.binary_files:
        return reject("binary_patch", f"binary files changed: {', '.join(split.binary_files[:5])}")
    n_files = len(split.code_files) + len(split.test_files) + len(split.doc_files)
    if split.lines_changed > config.max_patch_lines or n_files > config.max_files:
        return reject("huge_diff", f"{split.lines_changed} lines in {n_files} files (limits {config.max_patch_lines} lines, {config.max_files} files)")
    if not split.code_files and not split.test_files:
        return reject("docs_only", "only documentation changed")
    if not split.test_files:
        return reject("no_test_changes", "the pull request changes no tests, so nothing can check the fix")
    if not split.code_files:
        return reject("no_code_changes", "only tests (and docs) changed: there is no fix to make")
    comments = [c for i in issues for c in activity.comments.get(i.number, [])]
    hints = hints_text(comments, hints_cutoff(mirror, pull)) if comments else ""
    return Candidate(repo, pull, issues, base, head, split, link, hints)


def parents_range(mirror: Mirror, merge: str) -> str:
    """Commits a true merge brought in: first parent (exclusive) to the merge (inclusive)."""
    first = mirror.parents(merge)[0]
    return f"{first}..{merge}"


def select_all(activity: RepoActivity, mirror: Mirror, config: FilterConfig, max_prs: int | None = None) -> list[Candidate | Rejection]:
    pulls = sorted(activity.pulls.values(), key=lambda p: p.number, reverse=True)[: max_prs or None]
    return [select(activity, pull, mirror, config) for pull in pulls]


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
