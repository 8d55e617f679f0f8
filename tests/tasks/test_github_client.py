"""GitHub REST client against recorded JSON served from 127.0.0.1 (no test reaches GitHub)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from envfarm.tasks.sources.github import GitHubClient
from envfarm.tasks.sources.records import SourceError

RECORDED = Path(__file__).parent / "recorded"


class FakeGitHub(BaseHTTPRequestHandler):
    """Serves the recordings; `script` maps a path to a queue of special answers (status, headers).

    POST /graphql answers from recorded GraphQL data; `graphql_script` queues raw answers
    (status, body bytes) served first, and `queries` keeps every query received."""

    script: dict[str, list[tuple[int, dict[str, str]]]] = {}
    seen: list[tuple[str, str | None, str | None]] = []
    graphql_script: list[tuple[int, bytes]] = []
    queries: list[str] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        self.seen.append((self.path, self.headers.get("If-None-Match"), self.headers.get("Authorization")))
        if self.headers.get("Authorization") == "Bearer bad":
            return self.answer(401, {"message": "Bad credentials"})
        queue = self.script.get(url.path)
        if queue:
            status, headers = queue.pop(0)
            return self.answer(status, {"message": "scripted"}, headers)
        routes = {
            "/repos/acme/calc": "repo.json",
            "/repos/acme/calc/issues": "issues.json",
            "/repos/acme/calc/issues/3/timeline": "timeline_3.json",
            "/repos/acme/calc/issues/1/comments": "comments_1.json",
            "/repos/acme/calc/issues/3/comments": "comments_3.json",
        }
        if url.path == "/repos/acme/calc/pulls":
            page = "2" if "page=2" in (url.query or "") else "1"
            headers = {"Link": f'<http://{self.headers["Host"]}/repos/acme/calc/pulls?state=closed&per_page=100&page=2>; rel="next"'} if page == "1" else {}
            return self.answer(200, json.loads((RECORDED / f"pulls_page{page}.json").read_text()), headers, etag=f'"pulls-{page}"')
        if url.path in routes:
            return self.answer(200, json.loads((RECORDED / routes[url.path]).read_text()), etag=f'"{routes[url.path]}"')
        return self.answer(404, {"message": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        self.seen.append((self.path, None, self.headers.get("Authorization")))
        query = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}").get("query", "")
        self.queries.append(query)
        if urlparse(self.path).path != "/graphql":
            return self.answer(404, {"message": "Not Found"})
        if self.graphql_script:
            status, raw = self.graphql_script.pop(0)
            return self.raw(status, raw)
        if "closingIssuesReferences" in query:
            return self.answer(200, json.loads((RECORDED / "graphql_pulls.json").read_text()))
        recorded = json.loads((RECORDED / "graphql_comments.json").read_text())
        aliases = {f"i{n}": recorded.get(f"i{n}") for n in re.findall(r"\bi(\d+): issue\(", query)}
        return self.answer(200, {"data": {"rateLimit": {"cost": 1, "remaining": 4997, "resetAt": "2024-03-01T01:00:00Z"}, "repository": aliases}})

    def raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer(self, status: int, body, headers: dict[str, str] | None = None, etag: str | None = None) -> None:
        if etag and self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if etag:
            self.send_header("ETag", etag)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    FakeGitHub.script, FakeGitHub.seen, FakeGitHub.graphql_script, FakeGitHub.queries = {}, [], [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_activity_with_pagination_timeline_and_etag_cache(server, tmp_path):
    client = GitHubClient(token="good", base_url=server, cache_dir=tmp_path)
    activity = client.repo_activity("acme/calc")
    assert sorted(activity.pulls) == [2, 4]  # #3 was closed without merging
    assert sorted(activity.issues) == [1, 3]  # the PR the issues API lists is not an issue
    assert [(r.issue_number, r.pr_number) for r in activity.references] == [(3, 4)]
    # Issue #1 is closed by PR #2's keyword: its timeline is not worth a request.
    assert not any("/issues/1/timeline" in path for path, _, _ in FakeGitHub.seen)
    assert activity.clone_url.endswith("acme/calc.git")
    assert client.stats["not_modified"] == 0
    assert all(auth == "Bearer good" for _, _, auth in FakeGitHub.seen)
    # Second pass: every page answers 304 from the on-disk ETag cache, same result.
    again = GitHubClient(token="good", base_url=server, cache_dir=tmp_path)
    assert sorted(again.repo_activity("acme/calc").pulls) == [2, 4]
    # repo, two pull pages, issues, #3's timeline, and the comments of #1 and #3 (both linked, both commented)
    assert again.stats["not_modified"] == again.stats["requests"] == 7
    assert not list(tmp_path.rglob("*.tmp"))
    assert not any("good" in p.read_text() for p in tmp_path.rglob("*.json"))  # the token is never stored


def test_bad_token_is_a_clear_error(server):
    with pytest.raises(SourceError) as err:
        GitHubClient(token="bad", base_url=server).repo_activity("acme/calc")
    assert err.value.reason_class == "bad_token" and "GITHUB_TOKEN" in err.value.fix


def test_missing_repository(server):
    with pytest.raises(SourceError) as err:
        GitHubClient(token="good", base_url=server).repo_activity("acme/nope")
    assert err.value.reason_class == "repo_not_found"


def test_primary_rate_limit_waits_for_reset_then_resumes(server):
    reset = str(int(time.time()) + 30)
    FakeGitHub.script["/repos/acme/calc/issues"] = [(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})]
    slept: list[float] = []
    client = GitHubClient(token="good", base_url=server, sleep=slept.append, max_wait=120)
    activity = client.repo_activity("acme/calc", timelines=False)
    assert sorted(activity.issues) == [1, 3]
    assert 25 <= slept[0] <= 32  # waited for x-ratelimit-reset (then tenacity's short backoff)
    assert client.stats["rate_limited"] == 1


def test_rate_limit_exhausted_beyond_max_wait_says_when_to_resume(server):
    reset = int(time.time()) + 3600
    FakeGitHub.script["/repos/acme/calc"] = [(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})]
    with pytest.raises(SourceError) as err:
        GitHubClient(token="good", base_url=server, sleep=lambda s: None, max_wait=60).repo_activity("acme/calc")
    assert err.value.reason_class == "rate_limited" and "re-run after the reset" in err.value.fix


def test_secondary_rate_limit_and_server_errors_are_retried(server):
    FakeGitHub.script["/repos/acme/calc"] = [(429, {"retry-after": "2"}), (502, {})]
    slept: list[float] = []
    client = GitHubClient(token="good", base_url=server, sleep=slept.append, backoff=0.5)
    meta, _ = client.get("/repos/acme/calc")
    assert meta["full_name"] == "acme/calc"
    assert slept[0] == 2.0 and len(slept) == 3  # Retry-After honoured, then two backoff waits (after 429, after 502)


def test_an_unreachable_api_is_a_source_error_after_the_retries():
    """Connection refused on every try: the batch records github_unreachable (not an internal error)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    slept: list[float] = []
    client = GitHubClient(token="good", base_url=f"http://127.0.0.1:{port}", sleep=slept.append, backoff=0.01)
    with pytest.raises(SourceError, match=r"GitHub did not answer .* after 6 tries") as info:
        client.repo_activity("acme/calc")
    assert info.value.reason_class == "github_unreachable" and "--api-url" in info.value.fix
    assert len(slept) == 5, "retried with backoff before giving up"
