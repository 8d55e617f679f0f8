"""hints_text from issue comments (REST, GraphQL, JSONL) and the GraphQL path's fallbacks, on recorded data."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from envfarm.tasks.candidates import Candidate, FilterConfig, select_all
from envfarm.tasks.mirror import Mirror
from envfarm.tasks.sources.github import GitHubClient
from envfarm.tasks.sources.jsonl import load_repo
from .test_github_client import FakeGitHub, server  # noqa: F401  (the recorded-JSON server fixture)


def mine(base: str, **kwargs):
    client = GitHubClient(token="good", base_url=base, sleep=lambda s: None, backoff=0.01, **kwargs)
    return client, client.repo_activity("acme/calc")


def summary(activity):
    refs = sorted((r.issue_number, r.pr_number) for r in activity.references)
    comments = {n: [(c.author, c.body) for c in cs] for n, cs in activity.comments.items()}
    return refs, comments


def test_rest_fetches_comments_of_linked_commented_issues(server):
    client, activity = mine(server)
    paths = [p.split("?")[0] for p, _, _ in FakeGitHub.seen]
    assert "/repos/acme/calc/issues/1/comments" in paths and "/repos/acme/calc/issues/3/comments" in paths
    assert [c.author for c in activity.comments[1]] == ["reporter", "maintainer"]
    assert activity.comments[3][0].created_at == datetime(2024, 2, 16, tzinfo=timezone.utc)
    assert client.stats["graphql"] == 0 and not FakeGitHub.queries


def test_graphql_gives_the_same_links_and_comments_with_fewer_calls(server):
    rest_client, rest = mine(server)
    rest_calls = len(FakeGitHub.seen)
    FakeGitHub.seen.clear()
    gql_client, gql = mine(server, graphql=True)
    gql_calls = len(FakeGitHub.seen)
    assert summary(gql)[1] == summary(rest)[1]
    # GraphQL also reports #1, which REST links by PR #2's keyword; other/lib#9 is not this repository's issue.
    assert summary(gql)[0] == [(1, 2), (3, 4)] and summary(rest)[0] == [(3, 4)]
    assert not any("/timeline" in p or "/comments" in p for p, _, _ in FakeGitHub.seen)
    assert gql_client.stats["graphql"] == 2 and gql_client.stats["graphql_cost"] == 3 and gql_client.graphql_remaining == 4997
    assert gql.pulls[2].first_commit_at == datetime(2024, 1, 19, tzinfo=timezone.utc)
    assert gql_calls < rest_calls == rest_client.stats["requests"]
    assert not gql.skipped


BAD_ANSWERS = {
    "errors array": (200, json.dumps({"data": None, "errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]}).encode()),
    "not json": (200, b"<html>oops</html>"),
    "a list": (200, b"[]"),
    "no repository": (200, json.dumps({"data": {"rateLimit": {"cost": 1, "remaining": 4000}}}).encode()),
    "nodes not a list": (200, json.dumps({"data": {"repository": {"pullRequests": {"pageInfo": {}, "nodes": {}}}}}).encode()),
    "number missing": (200, json.dumps({"data": {"repository": {"pullRequests": {"pageInfo": {}, "nodes": [{"commits": {"nodes": []}}]}}}}).encode()),
    "bad time": (200, json.dumps({"data": {"repository": {"pullRequests": {"pageInfo": {}, "nodes": [
        {"number": 2, "closingIssuesReferences": {"nodes": []}, "commits": {"nodes": [{"commit": {"authoredDate": "yesterday"}}]}}]}}}}).encode()),
    "http 400": (400, b'{"message": "Problems parsing JSON"}'),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_bad_graphql_answers_fall_back_to_rest_with_a_reason(server, case):
    _, rest = mine(server)
    FakeGitHub.seen.clear()
    FakeGitHub.graphql_script = [BAD_ANSWERS[case]]
    client, activity = mine(server, graphql=True)
    assert summary(activity) == summary(rest)
    assert any("/issues/3/timeline" in p for p, _, _ in FakeGitHub.seen)  # links came from REST
    assert client.stats["graphql_fallbacks"] == 1
    assert len(activity.skipped) == 1 and activity.skipped[0].startswith("graphql: closing references: ")
    assert activity.skipped[0].endswith("used REST instead")


def test_low_graphql_budget_is_not_spent(server):
    low = {"data": {"rateLimit": {"cost": 1, "remaining": 3, "resetAt": "2024-03-01T01:00:00Z"}}}
    recorded = json.loads((Path(__file__).parent / "recorded" / "graphql_pulls.json").read_text())
    recorded["data"]["rateLimit"] = low["data"]["rateLimit"]
    FakeGitHub.graphql_script = [(200, json.dumps(recorded).encode())]
    client, activity = mine(server, graphql=True)
    assert client.stats["graphql"] == 1  # the comments batch was not asked for: 3 points left is below the floor
    assert any("/issues/1/comments" in p for p, _, _ in FakeGitHub.seen)
    assert "budget low (3 points left until 2024-03-01T01:00:00Z)" in activity.skipped[0]
    assert [c.author for c in activity.comments[1]] == ["reporter", "maintainer"]


def test_graphql_needs_a_token_and_retries_server_errors(server):
    assert not GitHubClient(token="", base_url=server, graphql=True).graphql_enabled
    FakeGitHub.graphql_script = [(502, b"{}")]
    client, activity = mine(server, graphql=True)
    assert client.stats["graphql"] == 3 and client.stats["graphql_fallbacks"] == 0  # 502, then pulls, then comments
    assert not any("/timeline" in p for p, _, _ in FakeGitHub.seen)


def test_graphql_url_for_enterprise():
    assert GitHubClient(token="t", base_url="https://ghe.example.com/api/v3").graphql_url == "https://ghe.example.com/api/graphql"
    assert GitHubClient(token="t").graphql_url == "https://api.github.com/graphql"


def _dump_with(tmp_path, fixture_world, extra: list[dict]):
    """The calc fixture's dump plus extra records, beside the same bare mirror."""
    shutil.copy(fixture_world["dump"] / "acme__calc.jsonl", tmp_path / "acme__calc.jsonl")
    with (tmp_path / "acme__calc.jsonl").open("a") as handle:
        for record in extra:
            handle.write(json.dumps(record) + "\n")
    activity = load_repo(tmp_path, "acme/calc")
    mirror = Mirror.ensure(tmp_path / "mirrors", "acme/calc", str(fixture_world["calc_mirror"]))
    return activity, mirror


def comment(issue: int, body: str, when: str | None) -> dict:
    return {"type": "comment", "issue_number": issue, "data": {"body": body, "created_at": when, "user": {"login": "u"}}}


def test_hints_are_comments_before_the_first_commit(fixture_world, tmp_path):
    # PR #2 was opened 2024-01-20; its only commit (a true merge's side branch) was authored 2024-02-01.
    activity, mirror = _dump_with(tmp_path, fixture_world, [
        comment(1, "Second: maybe the sign is flipped.", "2024-01-25T00:00:00Z"),
        comment(1, "First: happens for all inputs.", "2024-01-16T00:00:00Z"),
        comment(1, "Merged the fix, closing.", "2024-02-02T00:00:00Z"),
        comment(1, "undated", None),
        comment(3, "sub: operands swapped", "2024-02-16T00:00:00Z"),
        {"type": "comment", "data": {"body": "orphan"}},
    ])
    assert activity.skipped[-1].endswith("comment record without issue_number")
    results = {r.pull.number: r for r in select_all(activity, mirror, FilterConfig()) if isinstance(r, Candidate)}
    assert results[2].hints_text == "First: happens for all inputs.\nSecond: maybe the sign is flipped."
    assert results[4].hints_text == "sub: operands swapped\nSeen for every pair of inputs."  # + the shared fixture's comment


def test_known_first_commit_time_wins_and_no_comments_means_no_hints(fixture_world, tmp_path):
    lines = (fixture_world["dump"] / "acme__calc.jsonl").read_text().splitlines()
    patched = []
    for line in lines:
        if '"type": "comment"' in line:
            continue  # this test brings its own comments: issue #3 must have none
        if '"type": "pull"' in line and '"number": 2,' in line:
            doc = json.loads(line)
            doc["data"]["first_commit_at"] = "2024-01-20T00:00:00Z"
            line = json.dumps(doc)
        patched.append(line)
    (tmp_path / "acme__calc.jsonl").write_text("\n".join(patched) + "\n")
    with (tmp_path / "acme__calc.jsonl").open("a") as handle:
        handle.write(json.dumps(comment(1, "early", "2024-01-16T00:00:00Z")) + "\n")
        handle.write(json.dumps(comment(1, "after the first commit", "2024-01-25T00:00:00Z")) + "\n")
    activity = load_repo(tmp_path, "acme/calc")
    mirror = Mirror.ensure(tmp_path / "mirrors", "acme/calc", str(fixture_world["calc_mirror"]))
    results = {r.pull.number: r for r in select_all(activity, mirror, FilterConfig()) if isinstance(r, Candidate)}
    assert results[2].hints_text == "early"
    assert results[4].hints_text == ""
