"""GitHub REST client for mining: token, pagination, rate limits, and ETag-conditional requests.

Why conditional requests: a 304 answer costs no rate limit, so re-running a batch over the same
repositories (resume, incremental mining) re-reads everything from the on-disk cache nearly for free.
Primary limits (403/429 with x-ratelimit-remaining: 0) wait until x-ratelimit-reset when that is within
`max_wait`, otherwise raise a SourceError naming the reset time so the batch records a skip and a later
run resumes. Secondary limits (Retry-After) and 5xx/transport errors back off with tenacity.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from tasks.sources.jsonl import add_record
from tasks.sources.records import RepoActivity, SourceError

API_URL = "https://api.github.com"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


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
    ) -> None:
        self.token = token if token is not None else os.environ.get("GITHUB_TOKEN", "")
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "envfarm-miner"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_wait = max_wait
        self.sleep = sleep
        self.stats = {"requests": 0, "not_modified": 0, "rate_limited": 0}
        self._retrying = Retrying(
            retry=retry_if_exception_type(_Transient), wait=wait_exponential(multiplier=backoff, max=60),
            stop=stop_after_attempt(6), sleep=sleep, reraise=True,
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
        return self._retrying(self._get_once, full)

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
    def repo_activity(self, repo: str, max_prs: int | None = None, timelines: bool = True) -> RepoActivity:
        """Merged PRs, closed issues, and the cross-references on those issues' timelines."""
        owner_name = repo.strip("/")
        meta, _ = self.get(f"/repos/{owner_name}")
        activity = RepoActivity(repo=owner_name, clone_url=meta.get("clone_url", "") if isinstance(meta, dict) else "")
        for doc in self.paginate(f"/repos/{owner_name}/pulls", {"state": "closed", "per_page": 100}, max_prs):
            if doc.get("merged_at"):
                add_record(activity, "pull", doc)
        for doc in self.paginate(f"/repos/{owner_name}/issues", {"state": "closed", "per_page": 100}):
            add_record(activity, "issue", doc)
        if timelines:
            # Timelines cost one call per issue: ask only for issues no merged PR already closes by keyword.
            from tasks.candidates import closing_refs

            linked = {n for p in activity.pulls.values() for n in closing_refs(f"{p.title}\n{p.body}", owner_name)}
            for number in sorted(set(activity.issues) - linked):
                for event in self.paginate(f"/repos/{owner_name}/issues/{number}/timeline", {"per_page": 100}):
                    add_record(activity, "timeline", event, number)
        return activity

    def close(self) -> None:
        self.http.close()
