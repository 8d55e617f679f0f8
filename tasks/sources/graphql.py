"""GraphQL queries that save REST calls, and strict parsing of their answers.

Why GraphQL at all: REST needs one timeline call per unlinked issue to find which PR closed it, and one
comments call per linked issue. GraphQL answers `closingIssuesReferences` for 100 merged PRs per call
and comments for 50 issues per call (aliases), at 1-3 points of the 5,000-point hourly budget each.
Anything unexpected in an answer raises GraphQLUnavailable with a reason; the client then uses REST.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from envfarm.tasks.sources.records import parse_time

Post = Callable[[str, dict[str, Any]], dict[str, Any]]
COMMENT_BATCH = 50

PULLS_QUERY = """
query($owner: String!, $name: String!, $after: String) {
  rateLimit { cost remaining resetAt }
  repository(owner: $owner, name: $name) {
    pullRequests(states: MERGED, first: 100, after: $after, orderBy: {field: CREATED_AT, direction: DESC}) {
      pageInfo { hasNextPage endCursor }
      nodes {
        number
        closingIssuesReferences(first: 10) { nodes { number repository { nameWithOwner } } }
        commits(first: 1) { nodes { commit { authoredDate } } }
        changedFiles additions deletions
        files(first: 100) { nodes { path } }
      }
    }
  }
}
"""


class GraphQLUnavailable(Exception):
    """GraphQL could not answer usefully (HTTP error, `errors` array, malformed or missing fields)."""


def parse_graphql_body(body: Any) -> dict[str, Any]:
    """The `data` object of an answer; an `errors` array fails the whole call (partial data is not trusted)."""
    if not isinstance(body, dict):
        raise GraphQLUnavailable(f"GraphQL answer is a {type(body).__name__}, not an object")
    errors = body.get("errors")
    if errors:
        messages = [str(e.get("type") or e.get("message") or e) if isinstance(e, dict) else str(e) for e in errors] if isinstance(errors, list) else [str(errors)]
        raise GraphQLUnavailable(f"GraphQL errors: {'; '.join(messages)[:300]}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise GraphQLUnavailable("GraphQL answer has no data object")
    return data


def _field(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]..., or GraphQLUnavailable naming the first missing field."""
    for i, key in enumerate(path):
        if not isinstance(obj, dict) or key not in obj:
            raise GraphQLUnavailable(f"GraphQL answer lacks {'.'.join(path[: i + 1])}")
        obj = obj[key]
    return obj


def _nodes(obj: Any, *path: str) -> list[Any]:
    nodes = _field(obj, *path, "nodes")
    if not isinstance(nodes, list):
        raise GraphQLUnavailable(f"GraphQL {'.'.join(path)}.nodes is not a list")
    return nodes


@dataclass(frozen=True)
class PullFacts:
    """What GraphQL adds to a REST pull record: closing references, first-commit time, what the PR changed."""

    issues: list[int]
    first_commit: datetime | None
    files: tuple[str, ...] | None = None  # None when GitHub did not list every file (over 100) or left it out
    changed_files: int | None = None
    additions: int | None = None
    deletions: int | None = None


def _count(node: Any, key: str) -> int | None:
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _changed_paths(node: Any, changed: int | None) -> tuple[str, ...] | None:
    """The PR's file list, only when it is complete: a partial list would refuse every large PR."""
    files = node.get("files") if isinstance(node, dict) else None
    nodes = files.get("nodes") if isinstance(files, dict) else None
    if not isinstance(nodes, list) or changed is None:
        return None
    paths = tuple(n["path"] for n in nodes if isinstance(n, dict) and isinstance(n.get("path"), str))
    return paths if len(paths) == len(nodes) == changed else None


def _pull_links(node: Any, repo: str) -> tuple[int, PullFacts]:
    """One PR node: its number, the same-repository issues it closes, its first commit's author time and
    the files, additions and deletions GitHub counts for it (each optional: older answers lack them)."""
    number = _field(node, "number")
    if not isinstance(number, int):
        raise GraphQLUnavailable("GraphQL pull request number is not an integer")
    issues = []
    for ref in _nodes(node, "closingIssuesReferences"):
        owner = (_field(ref, "repository") or {}).get("nameWithOwner", "")
        if isinstance(_field(ref, "number"), int) and str(owner).lower() == repo.lower():
            issues.append(ref["number"])
    commits = _nodes(node, "commits")
    try:
        first = parse_time(_field(commits[0], "commit", "authoredDate")) if commits else None
    except ValueError as exc:
        raise GraphQLUnavailable(f"GraphQL authoredDate of PR #{number} is not a time: {exc}") from exc
    changed = _count(node, "changedFiles")
    return number, PullFacts(issues, first, _changed_paths(node, changed), changed, _count(node, "additions"), _count(node, "deletions"))


def closing_links(post: Post, repo: str, wanted: set[int]) -> dict[int, PullFacts]:
    """Merged PRs, newest first, page by page until every PR in `wanted` was seen (or none are left)."""
    owner, name = repo.split("/", 1)
    links: dict[int, PullFacts] = {}
    after: str | None = None
    while True:
        data = post(PULLS_QUERY, {"owner": owner, "name": name, "after": after})
        connection = _field(data, "repository", "pullRequests")
        for node in _nodes(data, "repository", "pullRequests"):
            number, facts = _pull_links(node, repo)
            links[number] = facts
        page = _field(connection, "pageInfo")
        if wanted <= set(links) or not page.get("hasNextPage") or not page.get("endCursor"):
            return links
        after = str(page["endCursor"])


def comments_query(numbers: list[int]) -> str:
    """One aliased `issue(number:)` per issue; numbers are ints, so inlining them cannot inject."""
    parts = [
        f"i{int(n)}: issue(number: {int(n)}) {{ comments(first: 100) {{ pageInfo {{ hasNextPage }} nodes {{ body createdAt author {{ login }} }} }} }}"
        for n in numbers
    ]
    return "query($owner: String!, $name: String!) {\n  rateLimit { cost remaining resetAt }\n  repository(owner: $owner, name: $name) {\n    " + "\n    ".join(parts) + "\n  }\n}"


def _rest_comment(node: Any) -> dict[str, Any]:
    """A GraphQL comment in REST field names, so the JSONL and REST parsers read it alike."""
    if not isinstance(node, dict):
        raise GraphQLUnavailable("GraphQL comment node is not an object")
    author = node.get("author") if isinstance(node.get("author"), dict) else {}
    return {"body": node.get("body") or "", "created_at": _field(node, "createdAt"), "user": {"login": author.get("login") or ""}}


def issue_comments(post: Post, repo: str, numbers: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Comments of each issue that fit in one page; issues with more (or missing) are left to REST."""
    owner, name = repo.split("/", 1)
    found: dict[int, list[dict[str, Any]]] = {}
    for start in range(0, len(numbers), COMMENT_BATCH):
        batch = numbers[start : start + COMMENT_BATCH]
        repository = _field(post(comments_query(batch), {"owner": owner, "name": name}), "repository")
        for number in batch:
            issue = repository.get(f"i{number}") if isinstance(repository, dict) else None
            if not isinstance(issue, dict):
                continue
            if _field(issue, "comments", "pageInfo").get("hasNextPage"):
                continue
            found[number] = [_rest_comment(node) for node in _nodes(issue, "comments")]
    return found
