"""GitHub REST client for mining: token, pagination, rate limits, and ETag-conditional requests.

Why conditional requests: a 304 answer costs no rate limit, so re-running a batch over the same
repositories (resume, incremental mining) re-reads everything from the on-disk cache nearly for free.
Primary limits (403/429 with x-ratelimit-remaining: 0) wait until x-ratelimit-reset when that is within
`max_wait`, otherwise raise a SourceError naming the reset time so the batch records a skip and a later
run resumes. Secondary limits (Retry-After) and 5xx/transport errors back off with tenacity.

Issue comments (SWE-bench's `hints_text`) are fetched only for issues a merged PR links to and whose
REST `comments` count is not 0. The optional GraphQL path (`graphql=True` or ENVFARM_GITHUB_GRAPHQL=1,
needs a token) replaces one timeline call per issue with one call per 100 merged PRs
(`closingIssuesReferences`, plus each PR's first commit time) and one comments call per issue with one
call per 50 issues; any GraphQL failure falls back to REST and is noted in `RepoActivity.skipped`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from envfarm.tasks.sources.jsonl import add_record
from envfarm.tasks.sources.graphql import GraphQLUnavailable, closing_links, issue_comments, parse_graphql_body
from envfarm.tasks.sources.records import CrossReference, RepoActivity, SourceError

API_URL = "https://api.github.com"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


ATTEMPTS = 6  # tries per request before a transient failure becomes the caller's SourceError


class _Transient(Exception):
    """A response worth retrying (5xx, secondary rate limit, connection error)."""


class GitHubClient:
    def __init__(
        self,
        token: str | None = None,
        base_url: str = API_URL,
        cache_dir: str | Path | None = None,
        max_wait: float = 900.0,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 30.0,
        backoff: float = 1.0,
        graphql: bool | None = None,
        graphql_min_remaining: int = 50,
    ) -> None:
        self.token = token if token is not None else os.environ.get("GITHUB_TOKEN", "")
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "envfarm-miner"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_wait = max_wait
        self.sleep = sleep
        self.stats = {"requests": 0, "not_modified": 0, "rate_limited": 0, "graphql": 0, "graphql_cost": 0, "graphql_fallbacks": 0}
        if graphql is None:
            graphql = os.environ.get("ENVFARM_GITHUB_GRAPHQL", "") == "1"
        self.graphql_enabled = bool(graphql and self.token)  # GitHub answers anonymous GraphQL with 401
        self.graphql_url = _graphql_url(base_url)
        self.graphql_min_remaining = graphql_min_remaining
        self.graphql_remaining: int | None = None  # from the last answer's rateLimit field
        self.graphql_reset = ""
        self._retrying = Retrying(
            retry=retry_if_exception_type(_Transient), wait=wait_exponential(multiplier=backoff, max=60),
            stop=stop_after_attempt(ATTEMPTS), sleep=sleep, reraise=True,
        )

    # -- the ETag cache ---------------------------------------------------------------------------
    def _cache_file(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        # The token is part of the key: another identity may see other data; it is hashed, never stored.
        key = hashlib.sha256(f"{hashlib.sha256(self.token.encode()).hexdigest()}|{url}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cached(self, url: str) -> dict[str, Any] | None:
        path = self._cache_file(url)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _store(self, url: str, etag: str, body: Any, next_url: str | None) -> None:
        path = self._cache_file(url)
        if path is None or not etag:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"etag": etag, "body": body, "next": next_url}))
        tmp.replace(path)

    # -- one request ------------------------------------------------------------------------------
    def get(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, str | None]:
        """GET one page: (decoded JSON, next page URL or None)."""
        full = str(self.http.build_request("GET", url, params=params).url)
        try:
            return self._retrying(self._get_once, full)
        except _Transient as exc:  # retries spent: the API is down or unreachable from here
            raise SourceError(f"GitHub did not answer {full} after {ATTEMPTS} tries ({exc})",
                              "check the network and --api-url, then re-run: mined work resumes where it stopped",
                              reason_class="github_unreachable") from None

    def _get_once(self, url: str) -> tuple[Any, str | None]:
        cached = self._cached(url)
        headers = {"If-None-Match": cached["etag"]} if cached else {}
        self.stats["requests"] += 1
        try:
            response = self.http.get(url, headers=headers)
        except httpx.TransportError as exc:
            raise _Transient(str(exc)) from exc
        if response.status_code == 304 and cached:
            self.stats["not_modified"] += 1
            return cached["body"], cached.get("next")
        if response.status_code == 401:
            raise SourceError(
                "GitHub rejected the token (401 Bad credentials)",
                "set GITHUB_TOKEN to a valid token (classic or fine-grained with read access), or unset it",
                reason_class="bad_token",
            )
        if response.status_code in (403, 429):
            self._rate_limited(response)
        if response.status_code == 404:
            raise SourceError(f"GitHub has no {url} (404)", "check the repository name (owner/name) and that the token can read it", reason_class="repo_not_found")
        if response.status_code >= 500:
            raise _Transient(f"{response.status_code} from {url}")
        if response.status_code >= 400:
            raise SourceError(f"GitHub answered {response.status_code} for {url}: {response.text[:200]}", "check the request", reason_class="source_error")
        body = response.json()
        match = _NEXT.search(response.headers.get("link", ""))
        next_url = match.group(1) if match else None
        self._store(url, response.headers.get("etag", ""), body, next_url)
        return body, next_url

    def _rate_limited(self, response: httpx.Response) -> None:
        self.stats["rate_limited"] += 1
        retry_after = response.headers.get("retry-after")
        if retry_after is not None:  # secondary rate limit
            self.sleep(min(float(retry_after), self.max_wait))
            raise _Transient("secondary rate limit")
        if response.headers.get("x-ratelimit-remaining") == "0":
            reset = float(response.headers.get("x-ratelimit-reset", "0"))
            wait = max(0.0, reset - time.time()) + 1
            if wait <= self.max_wait:
                self.sleep(wait)
                raise _Transient("primary rate limit")
            when = datetime.fromtimestamp(reset, timezone.utc).isoformat()
            raise SourceError(
                f"GitHub rate limit exhausted until {when} ({wait:.0f}s away, more than --max-wait {self.max_wait:.0f}s)",
                "re-run after the reset: finished repositories are skipped and cached pages answer 304 for free",
                reason_class="rate_limited",
            )
        raise SourceError(f"GitHub refused {response.request.url} (403): {response.text[:200]}", "check the token's permissions", reason_class="forbidden")

    # -- GraphQL ----------------------------------------------------------------------------------
    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST one query: its `data`, or GraphQLUnavailable (the caller falls back to REST).

        Transport errors, 5xx and HTTP rate limits behave as in REST (GraphQL sends the same headers);
        a GraphQL budget below `graphql_min_remaining` points is not spent: REST has its own budget.
        """
        if self.graphql_remaining is not None and self.graphql_remaining < self.graphql_min_remaining:
            raise GraphQLUnavailable(f"GraphQL budget low ({self.graphql_remaining} points left until {self.graphql_reset or 'reset'})")
        try:
            data = self._retrying(self._post_graphql_once, query, variables or {})
        except _Transient as exc:
            raise GraphQLUnavailable(f"GraphQL did not answer after {ATTEMPTS} tries ({exc})") from None
        limit = data.get("rateLimit")
        if isinstance(limit, dict):
            self._note_graphql_budget(limit)
        return data

    def _post_graphql_once(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        self.stats["requests"] += 1
        self.stats["graphql"] += 1
        try:
            response = self.http.post(self.graphql_url, json={"query": query, "variables": variables})
        except httpx.TransportError as exc:
            raise _Transient(str(exc)) from exc
        if response.status_code == 401:
            raise SourceError("GitHub rejected the token (401 Bad credentials)", "set GITHUB_TOKEN to a valid token, or unset it", reason_class="bad_token")
        if response.status_code in (403, 429) and (response.headers.get("retry-after") is not None or response.headers.get("x-ratelimit-remaining") == "0"):
            self._rate_limited(response)
        if response.status_code >= 500:
            raise _Transient(f"{response.status_code} from {self.graphql_url}")
        if response.status_code >= 400:
            raise GraphQLUnavailable(f"GraphQL answered {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise GraphQLUnavailable(f"GraphQL answer is not JSON: {response.text[:100]!r}") from exc
        return parse_graphql_body(body)

    def _note_graphql_budget(self, limit: dict[str, Any]) -> None:
        cost, remaining = limit.get("cost"), limit.get("remaining")
        if isinstance(cost, int):
            self.stats["graphql_cost"] += cost
        if isinstance(remaining, int):
            self.graphql_remaining = remaining
            self.graphql_reset = str(limit.get("resetAt") or "")

    def paginate(self, url: str, params: dict[str, Any] | None = None, max_items: int | None = None) -> Iterator[dict[str, Any]]:
        seen = 0
        page, next_url = self.get(url, params)
        while True:
            for item in page if isinstance(page, list) else []:
                yield item
                seen += 1
                if max_items is not None and seen >= max_items:
                    return
            if not next_url:
                return
            page, next_url = self.get(next_url)

    # -- what the miner needs ---------------------------------------------------------------------
    def repo_activity(self, repo: str, max_prs: int | None = None, timelines: bool = True, comments: bool = True) -> RepoActivity:
        """Merged PRs, closed issues, the links between them (timelines or GraphQL), and linked issues' comments."""
        owner_name = repo.strip("/")
        meta, _ = self.get(f"/repos/{owner_name}")
        activity = RepoActivity(repo=owner_name, clone_url=meta.get("clone_url", "") if isinstance(meta, dict) else "")
        for doc in self.paginate(f"/repos/{owner_name}/pulls", {"state": "closed", "per_page": 100}, max_prs):
            if doc.get("merged_at"):
                add_record(activity, "pull", doc)
        for doc in self.paginate(f"/repos/{owner_name}/issues", {"state": "closed", "per_page": 100}):
            add_record(activity, "issue", doc)
        linked_by_graphql = timelines and self.graphql_enabled and self._graphql_links(activity, owner_name)
        if timelines and not linked_by_graphql:
            # Timelines cost one call per issue: ask only for issues no merged PR already closes by keyword.
            for number in sorted(set(activity.issues) - _keyword_linked(activity)):
                for event in self.paginate(f"/repos/{owner_name}/issues/{number}/timeline", {"per_page": 100}):
                    add_record(activity, "timeline", event, number)
        if comments:
            self._comments(activity, owner_name)
        return activity

    def _graphql_links(self, activity: RepoActivity, repo: str) -> bool:
        """Closing references (and first-commit times) of merged PRs from GraphQL; False means use REST."""
        try:
            links = closing_links(self.graphql, repo, set(activity.pulls))
        except GraphQLUnavailable as exc:
            self._fell_back(activity, f"closing references: {exc}")
            return False
        for number, facts in links.items():
            activity.references.extend(CrossReference(issue, number) for issue in facts.issues)
            pull = activity.pulls.get(number)
            if pull is not None:
                activity.pulls[number] = replace(
                    pull, first_commit_at=facts.first_commit or pull.first_commit_at, files=facts.files or pull.files,
                    changed_files=_first_known(facts.changed_files, pull.changed_files),
                    additions=_first_known(facts.additions, pull.additions), deletions=_first_known(facts.deletions, pull.deletions))
        return True

    def _comments(self, activity: RepoActivity, repo: str) -> None:
        """Comments of linked issues that have any: GraphQL in batches when enabled, REST for the rest."""
        wanted = sorted(n for n in _linked_issues(activity) if activity.issues[n].comment_count != 0)
        if self.graphql_enabled and wanted:
            try:
                for number, docs in issue_comments(self.graphql, repo, wanted).items():
                    for doc in docs:
                        add_record(activity, "comment", doc, number)
                    wanted.remove(number)
            except GraphQLUnavailable as exc:
                self._fell_back(activity, f"issue comments: {exc}")
        for number in wanted:
            for doc in self.paginate(f"/repos/{repo}/issues/{number}/comments", {"per_page": 100}):
                add_record(activity, "comment", doc, number)

    def _fell_back(self, activity: RepoActivity, why: str) -> None:
        self.stats["graphql_fallbacks"] += 1
        activity.skipped.append(f"graphql: {why[:300]}; used REST instead")

    def close(self) -> None:
        self.http.close()


def _first_known(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _graphql_url(base_url: str) -> str:
    """api.github.com/graphql; GitHub Enterprise serves REST at /api/v3 and GraphQL at /api/graphql."""
    base = base_url.rstrip("/")
    return base[: -len("/v3")] + "/graphql" if base.endswith("/api/v3") else base + "/graphql"


def _keyword_linked(activity: RepoActivity) -> set[int]:
    from envfarm.tasks.candidates import closing_refs

    texts = (f"{p.title}\n{p.body}\n" + "\n".join(p.commit_messages) for p in activity.pulls.values())
    return {n for text in texts for n in closing_refs(text, activity.repo)}


def _linked_issues(activity: RepoActivity) -> set[int]:
    """Known issues some merged PR closes by keyword or reference: the only ones whose comments can become hints."""
    return (_keyword_linked(activity) | {r.issue_number for r in activity.references}) & set(activity.issues)
