"""Offline JSONL source: same records as the API, bad lines skipped with their reason."""

import json

import pytest

from envfarm.tasks.sources.jsonl import load_repo, write_dump
from envfarm.tasks.sources.records import SourceError


def test_reads_issues_pulls_and_timeline_and_skips_bad_lines(tmp_path):
    lines = [
        json.dumps({"type": "issue", "data": {"number": 1, "title": "t", "body": "b", "created_at": "2024-01-01T00:00:00Z"}}),
        json.dumps({"type": "issue", "data": {"number": 9, "title": "a PR", "pull_request": {}}}),
        "{broken",
        json.dumps({"type": "pull", "data": {"number": 2, "merged_at": "2024-01-02T00:00:00Z", "merge_commit_sha": "abc", "base": {"sha": "def"}}}),
        json.dumps({"type": "timeline", "issue_number": 1, "data": {"event": "cross-referenced", "source": {"issue": {"number": 2, "pull_request": {}}}}}),
        json.dumps({"type": "timeline", "data": {"event": "cross-referenced"}}),
        json.dumps({"type": "comment", "data": {}}),
        json.dumps([1, 2]),
    ]
    path = tmp_path / "o__r.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe{bad utf8}\n")
    activity = load_repo(tmp_path, "o/r")
    assert sorted(activity.issues) == [1]
    assert activity.pulls[2].base_sha == "def" and activity.pulls[2].merged_at is not None
    assert [(r.issue_number, r.pr_number) for r in activity.references] == [(1, 2)]
    assert [s.split(":")[1] for s in activity.skipped] == ["3", "6", "7", "8", "9"]
    assert "comment record without issue_number" in activity.skipped[2]


def test_missing_dump_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError) as err:
        load_repo(tmp_path, "nobody/nothing")
    assert err.value.reason_class == "repo_not_found" and "nobody__nothing.jsonl" in err.value.problem


def test_write_dump_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "o__r.jsonl"
    write_dump(path, [{"type": "issue", "data": {"number": 5, "title": "x", "body": "y"}}])
    assert not list(tmp_path.glob("*.tmp"))
    assert 5 in load_repo(tmp_path, "o/r").issues
