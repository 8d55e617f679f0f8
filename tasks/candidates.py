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


@dataclass(frozen=True)
class DiffRange:
    """The commits a pull request's diff runs between, and how they were found.

    `how`: "pr_head" (the PR's own head commit, fetched as refs/pull/N/head), "true_merge", "squash" or
    "rebase" (read from the merge commit GitHub recorded when the head is not in the mirror).
    """

    base: str
    head: str
    how: str


def pr_diff_range(mirror: Mirror, pull: PullRequest) -> DiffRange:
    """GitHub's own definition of a PR's diff: from the merge base of its base and its head, to its head.

    Why not 'the merge commit's parent, or merge~commits when the PR has several commits': with the real
    commit counts GitHub records, that rule fired on 9 of 20 real squash-merged PRs and gave wrong bases
    (binary patches, a 3,168-line diff, unrelated commits absorbed, one task validated on another PR's fix).
    The three kinds of merge are told apart from the history itself:
    - the PR head is in the mirror (GitHub serves refs/pull/N/head; `git clone --mirror` fetches it):
      base = merge-base(PR base, head), exactly the 'Files changed' tab;
    - a true merge (two parents): base = merge-base(first parent, second parent), head = second parent;
    - one parent: a rebase merge when the PR's commits are replayed there (the same committer time on each,
      and the same messages when the source knows them), base = merge~commits; otherwise a squash merge,
      base = the merge commit's parent.
    """
    head = pull.head_sha
    if head and head != pull.merge_commit_sha and mirror.has_commit(head):
        tip = pull.base_sha if mirror.has_commit(pull.base_sha) else ""
        if not tip and mirror.has_commit(pull.merge_commit_sha):
            tip = mirror.parents(pull.merge_commit_sha)[0] if mirror.parents(pull.merge_commit_sha) else ""
        if tip:
            return DiffRange(mirror.merge_base(tip, head), head, "pr_head")
    merge = pull.merge_commit_sha
    if not mirror.has_commit(merge):
        raise MirrorError(f"merge commit {merge[:12]} of PR #{pull.number} is not in the mirror", "re-fetch the mirror", "commit_missing")
    parents = mirror.parents(merge)
    if not parents:
        raise MirrorError(f"merge commit {merge[:12]} has no parent", "", "commit_missing")
    if len(parents) > 1:
        return DiffRange(mirror.merge_base(parents[0], parents[1]), parents[1], "true_merge")
    if pull.commit_count > 1 and _replayed_by_rebase(mirror, pull, merge):
        return DiffRange(mirror.git_bytes("rev-parse", f"{merge}~{pull.commit_count}").decode().strip(), merge, "rebase")
    return DiffRange(parents[0], merge, "squash")


def _replayed_by_rebase(mirror: Mirror, pull: PullRequest, merge: str) -> bool:
    """Whether the last `commit_count` first-parent commits up to `merge` are the PR's commits, rebased.

    A rebase merge writes every replayed commit with one committer time (the merge's); a squash merge's
    parent is an earlier, unrelated commit of the base branch with its own. Messages decide when known.
    """
    n = pull.commit_count
    try:
        log = mirror.git_bytes("log", "--first-parent", f"-{n + 1}", "--format=%P%x1f%ct%x1f%B%x1e", merge).decode("utf-8", "replace")
    except MirrorError:
        return False
    entries = [e.strip("\n").split("\x1f") for e in log.split("\x1e") if e.strip()]
    replayed = entries[:n]
    if len(replayed) < n or any(len(e) < 3 or len(e[0].split()) != 1 for e in replayed):
        return False
    if len({e[1] for e in replayed}) != 1:
        return False
    if pull.commit_messages:
        wanted = [m.strip().splitlines()[0] if m.strip() else "" for m in pull.commit_messages]
        found = [e[2].strip().splitlines()[0] if e[2].strip() else "" for e in reversed(replayed)]
        return found == wanted[-n:] if len(wanted) >= n else False
    # Same committer second for the commit before them too: a batch of unrelated commits, not a replay.
    return len(entries) <= n or entries[n][1] != replayed[0][1]


def diff_disagreement(mirror: Mirror, rng: DiffRange, pull: PullRequest) -> str | None:
    """Why the computed diff is not the PR's own, from what the source says the PR changed; None if it agrees
    or the source said nothing. Renames count as GitHub counts them (one file, under its new path)."""
    if pull.files is None and pull.changed_files is None and pull.additions is None and pull.deletions is None:
        return None
    raw = mirror.git_bytes("diff", "--numstat", "-M", "-z", rng.base, rng.head).decode("utf-8", "replace")
    paths: list[str] = []
    added = deleted = 0
    fields = raw.split("\0")
    i = 0
    while i < len(fields):
        head = fields[i]
        if not head:
            i += 1
            continue
        add, sub, path = (head.split("\t", 2) + ["", ""])[:3]
        if path == "":  # a rename: the old and new paths follow as their own fields
            path = fields[i + 2] if i + 2 < len(fields) else ""
            i += 3
        else:
            i += 1
        paths.append(path)
        added += int(add) if add.isdigit() else 0
        deleted += int(sub) if sub.isdigit() else 0
    problems = []
    if pull.files is not None and sorted(set(pull.files)) != sorted(set(paths)):
        only_ours = sorted(set(paths) - set(pull.files))[:3]
        only_pr = sorted(set(pull.files) - set(paths))[:3]
        problems.append(f"files differ (only in the computed diff: {only_ours or '-'}; only in the PR: {only_pr or '-'})")
    elif pull.changed_files is not None and pull.changed_files != len(paths):
        problems.append(f"{len(paths)} files changed, the PR says {pull.changed_files}")
    if pull.additions is not None and pull.additions != added:
        problems.append(f"{added} lines added, the PR says {pull.additions}")
    if pull.deletions is not None and pull.deletions != deleted:
        problems.append(f"{deleted} lines deleted, the PR says {pull.deletions}")
    return "; ".join(problems) or None


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
        rng = pr_diff_range(mirror, pull)
        base, head = rng.base, rng.head
        merged_msgs = mirror.messages(f"{base}..{head}")
        if pull.merge_commit_sha and pull.merge_commit_sha != head and mirror.has_commit(pull.merge_commit_sha):
            merged_msgs += mirror.messages(f"{pull.merge_commit_sha}^!")
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
    mismatch = diff_disagreement(mirror, rng, pull)
    if mismatch:
        return reject("diff_mismatch", f"the computed diff ({rng.how}, {base[:12]}..{head[:12]}) is not the PR's own: {mismatch}")
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
    if split.mixed_files:
        return reject("tests_inside_fixed_source", f"tests and fix change the same source file ({', '.join(split.mixed_files[:3])}): "
                      "the verifier restores test files, which would erase the fix there")
    if not split.test_files:
        return reject("no_test_changes", "the pull request changes no tests, so nothing can check the fix")
    if not split.code_files:
        return reject("no_code_changes", "only tests (and docs) changed: there is no fix to make")
    comments = [c for i in issues for c in activity.comments.get(i.number, [])]
    hints = hints_text(comments, hints_cutoff(mirror, pull)) if comments else ""
    return Candidate(repo, pull, issues, base, head, split, link, hints)


def select_all(activity: RepoActivity, mirror: Mirror, config: FilterConfig, max_prs: int | None = None) -> list[Candidate | Rejection]:
    pulls = sorted(activity.pulls.values(), key=lambda p: p.number, reverse=True)[: max_prs or None]
    return [select(activity, pull, mirror, config) for pull in pulls]


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
