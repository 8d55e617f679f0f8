"""Candidate selection on a real fixture repository: linking, filters and their recorded reasons."""

from datetime import datetime, timezone

import pytest

from envfarm.tasks.candidates import Candidate, FilterConfig, Rejection, closing_refs, select_all
from envfarm.tasks.mirror import Mirror, MirrorError
from envfarm.tasks.sources.jsonl import load_repo
from .fixtures import git, merge_pr, pr_record, write


@pytest.fixture()
def calc(fixture_world, tmp_path):
    activity = load_repo(fixture_world["dump"], "acme/calc")
    mirror = Mirror.ensure(tmp_path / "mirrors", "acme/calc", activity.clone_url)
    return activity, mirror


def by_pr(results):
    return {r.pull.number if isinstance(r, Candidate) else r.pr_number: r for r in results}


def test_closing_keywords():
    text = "Fixes #12, closes acme/calc#13 and resolved https://github.com/acme/calc/issues/14; see #15; fixes other/repo#16"
    assert closing_refs(text, "acme/calc") == [12, 13, 14]


def test_funnel_reasons_on_fixture_repo(calc):
    activity, mirror = calc
    results = by_pr(select_all(activity, mirror, FilterConfig()))
    assert isinstance(results[2], Candidate) and results[2].link == "keyword"
    assert isinstance(results[4], Candidate) and results[4].link == "timeline"
    assert results[2].split.test_files == ["tests/test_calc.py"] and results[2].split.code_files == ["calc/__init__.py"]
    assert results[4].split.test_files == ["tests/test_sub.py"]
    assert results[2].base_commit == mirror.parents(results[2].head_commit)[0]
    assert "add() subtracts" in results[2].problem_statement
    reasons = {n: r.reason_class for n, r in results.items() if isinstance(r, Rejection)}
    assert reasons == {5: "docs_only", 6: "no_linked_issue", 7: "binary_patch"}
    assert len(activity.skipped) == 1 and activity.skipped[0].startswith("acme__calc.jsonl:4:")


def test_cutoff_dates_and_short_issue(calc):
    activity, mirror = calc
    late = by_pr(select_all(activity, mirror, FilterConfig(created_after=datetime(2024, 2, 1, tzinfo=timezone.utc))))
    assert late[2].reason_class == "before_cutoff" and isinstance(late[4], Candidate)
    early = by_pr(select_all(activity, mirror, FilterConfig(created_before=datetime(2024, 2, 1, tzinfo=timezone.utc))))
    assert isinstance(early[2], Candidate) and early[4].reason_class == "after_cutoff"
    strict = by_pr(select_all(activity, mirror, FilterConfig(min_issue_chars=500)))
    assert strict[2].reason_class == "issue_too_short"
    tiny = by_pr(select_all(activity, mirror, FilterConfig(max_patch_lines=2)))
    assert tiny[2].reason_class == "huge_diff"


def test_non_utf8_diff_and_missing_commit_are_recorded_skips(tmp_path):
    repo = tmp_path / "w"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, {"pkg/a.py": "x = 1\n", "tests/test_a.py": "def test():\n    pass\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")
    merge = merge_pr(repo, "latin", 2, "fixes #1", {"pkg/a.py": b"x = '\xe9t\xe9'\n", "tests/test_a.py": "def test():\n    assert 1\n"}, "2024-02-01T00:00:00Z")
    from envfarm.tasks.sources.jsonl import read_lines
    import json

    records = [{"type": "issue", "data": {"number": 1, "title": "accents", "body": "the value should carry accents " * 3}},
               pr_record(2, "latin-1", "fixes #1", merge, base, "2024-02-01T00:00:00Z"),
               pr_record(3, "gone", "fixes #1", "f" * 40, base, "2024-02-02T00:00:00Z")]
    activity = read_lines("acme/latin", [json.dumps(r).encode() for r in records], "mem")
    mirror = Mirror.ensure(tmp_path / "m", "acme/latin", str(repo))
    results = by_pr(select_all(activity, mirror, FilterConfig()))
    assert results[2].reason_class == "non_utf8_diff"
    assert results[3].reason_class == "commit_missing"


def test_repository_that_does_not_exist(tmp_path):
    with pytest.raises(MirrorError) as err:
        Mirror.ensure(tmp_path, "acme/ghost", str(tmp_path / "no-such-repo"))
    assert err.value.reason_class == "repo_unavailable" and not list(tmp_path.glob("*.git"))
