"""Offline dump from git history alone: PRs from merge/squash/closing commits, issues marked synthesized."""

import subprocess

from envfarm.tasks.candidates import Candidate, FilterConfig, select_all
from envfarm.tasks.mirror import Mirror
from envfarm.tasks.sources.gitlog import dump_from_git
from envfarm.tasks.sources.jsonl import load_repo
from .fixtures import git, write


def test_dump_from_fixture_history(fixture_world, tmp_path):
    path = dump_from_git(fixture_world["root"] / "calc-work", "acme/calc", tmp_path)
    activity = load_repo(tmp_path, "acme/calc")
    assert sorted(activity.pulls) == [2, 4, 5, 6, 7] and not activity.skipped
    assert sorted(activity.issues) == [1, 3]
    assert '"synthesized": true' in path.read_text()
    mirror = Mirror.ensure(tmp_path / "m", "acme/calc", activity.clone_url)
    found = {r.pull.number for r in select_all(activity, mirror, FilterConfig()) if isinstance(r, Candidate)}
    assert found == {2}  # PR #4 was linked only through the issue timeline, which git does not hold


def test_squash_and_direct_closing_commits(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i, message in enumerate(["initial", "Speed up parser (#12)", "Fix #7: handle empty input", "unrelated"]):
        write(repo, {f"f{i}.py": "x\n"})
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", message)
    dump_from_git(repo, "o/r", tmp_path / "out")
    activity = load_repo(tmp_path / "out", "o/r")
    assert sorted(activity.pulls) == [7, 12] and sorted(activity.issues) == [7]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD~1"], capture_output=True, text=True).stdout.strip()
    assert activity.pulls[7].merge_commit_sha == head
