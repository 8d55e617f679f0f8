"""A pull request's base and patches equal GitHub's own diff for true merges, squash merges and rebase merges.

Each repository here is made the way GitHub makes it: the PR branch forks from main, main moves on with
unrelated commits (a code file and a test file, which a wrong base would absorb), then GitHub merges the PR
with a merge commit, squashes it into one commit titled "Title (#N)", or replays its commits with one
committer time. The PR record carries the real commit count (3), which made the old `merge~commits` rule
take the wrong base for every squash merge.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envfarm.tasks.candidates import Candidate, FilterConfig, Rejection, pr_diff_range, select
from envfarm.tasks.mirror import Mirror
from envfarm.tasks.sources.jsonl import read_lines
from envfarm.tasks.sources.records import PullRequest

from .fixtures import git, write

PR_FILES = ["calc/ops.py", "tests/test_ops.py"]
ISSUE = {"type": "issue", "data": {"number": 1, "title": "mul is wrong", "body": "mul(2, 3) returns 5 instead of 6, please fix it"}}


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "work"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, {"calc/ops.py": "def mul(a, b):\n    return a + b\n", "calc/other.py": "X = 1\n",
                 "tests/test_ops.py": "def test_placeholder():\n    pass\n", "tests/test_other.py": "def test_x():\n    pass\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial", date="2024-01-01T00:00:00Z")
    # The PR branch: three commits.
    git(repo, "checkout", "-q", "-b", "fix-mul")
    steps = [
        {"calc/ops.py": "def mul(a, b):\n    return a * b\n"},
        {"tests/test_ops.py": "from calc.ops import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"},
        {"tests/test_ops.py": "from calc.ops import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n    assert mul(0, 5) == 0\n"},
    ]
    for i, files in enumerate(steps):
        write(repo, files)
        git(repo, "commit", "-qam", f"step {i + 1}", date=f"2024-01-0{2 + i}T00:00:00Z")
    # main moves on: unrelated code and test changes.
    git(repo, "checkout", "-q", "main")
    write(repo, {"calc/other.py": "X = 2\n"})
    git(repo, "commit", "-qam", "bump X", date="2024-01-06T00:00:00Z")
    write(repo, {"tests/test_other.py": "def test_x():\n    assert True\n"})
    git(repo, "commit", "-qam", "tighten test_x", date="2024-01-07T00:00:00Z")
    return repo


def _merge(repo: Path, kind: str) -> str:
    """Merge fix-mul into main the way GitHub's button does; returns merge_commit_sha as GitHub records it."""
    when = "2024-01-10T00:00:00Z"
    if kind == "true_merge":
        git(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #2 from dev/fix-mul", "fix-mul", date=when)
    elif kind == "squash":
        git(repo, "merge", "-q", "--squash", "fix-mul", date=when)
        git(repo, "commit", "-q", "-m", "Fix mul (#2)\n\n* step 1\n* step 2\n* step 3", date=when)
    elif kind == "rebase":
        for sha in git(repo, "rev-list", "--reverse", "main..fix-mul").split():
            git(repo, "cherry-pick", sha, date=when)  # GitHub writes each replayed commit at the merge time
    else:
        raise ValueError(kind)
    return git(repo, "rev-parse", "HEAD")


def _world(tmp_path: Path, kind: str, *, pr_head_fetched: bool, **pr_extra: object):
    repo = _repo(tmp_path)
    branch_point = git(repo, "merge-base", "main", "fix-mul")
    head = git(repo, "rev-parse", "fix-mul")
    base_tip = git(repo, "rev-parse", "main")  # the PR record's base.sha: main's tip when the PR last changed
    merge = _merge(repo, kind)
    if pr_head_fetched:
        git(repo, "update-ref", "refs/pull/2/head", head)  # what GitHub serves and `git clone --mirror` fetches
    git(repo, "branch", "-q", "-D", "fix-mul")  # the branch is gone after merging; only refs/pull/2/head may keep it
    pr = {"number": 2, "title": "Fix mul", "body": "Fixes #1", "created_at": "2024-01-02T00:00:00Z", "merged_at": "2024-01-10T00:00:00Z",
          "merge_commit_sha": merge, "base": {"sha": base_tip, "ref": "main"}, "head": {"sha": head}, "commits": 3,
          "html_url": "https://github.com/acme/calc/pull/2", **pr_extra}
    activity = read_lines("acme/calc", [json.dumps(r).encode() for r in (ISSUE, {"type": "pull", "data": pr})], "mem")
    # file:// so the clone carries only reachable objects, as a clone from GitHub does (a plain local path
    # would hard-link every object, the deleted branch's commits included).
    mirror = Mirror.ensure(tmp_path / "mirrors", "acme/calc", f"file://{repo}")
    return activity, mirror, {"branch_point": branch_point, "head": head, "merge": merge, "work": repo}


@pytest.mark.parametrize("kind", ["true_merge", "squash", "rebase"])
@pytest.mark.parametrize("pr_head_fetched", [True, False], ids=["pr-head-in-mirror", "merge-commit-only"])
def test_patch_is_the_prs_own_diff_for_every_merge_kind(tmp_path, kind, pr_head_fetched):
    activity, mirror, shas = _world(tmp_path, kind, pr_head_fetched=pr_head_fetched,
                                    files=[{"filename": f} for f in PR_FILES], additions=7, deletions=3, changed_files=2)
    pull = activity.pulls[2]
    rng = pr_diff_range(mirror, pull)
    # A true merge keeps the PR head as its second parent, so the head is always there to start from.
    assert rng.how == ("pr_head" if pr_head_fetched or kind == "true_merge" else kind)
    result = select(activity, pull, mirror, FilterConfig())
    assert isinstance(result, Candidate), result
    assert result.split.code_files == ["calc/ops.py"] and result.split.test_files == ["tests/test_ops.py"]
    assert "X = 2" not in result.split.patch and "assert True" not in result.split.test_patch  # main's commits stay out
    # The patch applies on the base, and base + patch is the PR head's content for the PR's files.
    for path in PR_FILES:
        assert mirror.read(rng.head, path).decode() == git(shas["work"], "show", f"{shas['head']}:{path}") + "\n"
    if kind == "true_merge" or pr_head_fetched:
        assert result.base_commit == shas["branch_point"]
    else:
        # Squash and rebase rewrite the PR's commits on top of main: the base is main just before them.
        assert mirror.read(result.base_commit, "calc/other.py") == b"X = 2\n"
        assert mirror.read(result.base_commit, "calc/ops.py") == b"def mul(a, b):\n    return a + b\n"


def test_true_merge_without_a_known_head(tmp_path):
    activity, mirror, shas = _world(tmp_path, "true_merge", pr_head_fetched=False, head={})
    rng = pr_diff_range(mirror, activity.pulls[2])
    assert (rng.how, rng.base, rng.head) == ("true_merge", shas["branch_point"], shas["head"])


def test_old_rule_would_have_taken_main_commits_into_a_squash(tmp_path):
    """The bug this replaces: merge~commits on a squash merge lands 3 commits back on main."""
    activity, mirror, shas = _world(tmp_path, "squash", pr_head_fetched=False)
    wrong = mirror.git_bytes("rev-parse", f"{shas['merge']}~3").decode().strip()
    files = mirror.git_bytes("diff", "--name-only", wrong, shas["merge"]).decode().split()
    assert "calc/other.py" in files  # what the old rule's diff absorbed
    result = select(activity, activity.pulls[2], mirror, FilterConfig())
    assert isinstance(result, Candidate) and result.base_commit != wrong
    assert sorted(result.split.code_files + result.split.test_files) == PR_FILES


def test_rebase_needs_replayed_commits_not_just_a_count(tmp_path):
    """A single-parent merge with commits > 1 whose predecessors carry their own committer times is a squash."""
    activity, mirror, shas = _world(tmp_path, "squash", pr_head_fetched=False)
    assert pr_diff_range(mirror, activity.pulls[2]).how == "squash"
    # Messages, when the source knows them, decide: a rebase whose replayed messages differ is not one.
    rebased, rmirror, _ = _world(tmp_path / "r", "rebase", pr_head_fetched=False, commit_messages=["a", "b", "c"])
    assert pr_diff_range(rmirror, rebased.pulls[2]).how == "squash"
    rebased, rmirror, _ = _world(tmp_path / "r2", "rebase", pr_head_fetched=False, commit_messages=["step 1", "step 2", "step 3"])
    assert pr_diff_range(rmirror, rebased.pulls[2]).how == "rebase"


@pytest.mark.parametrize("extra, why", [
    ({"files": [{"filename": "calc/ops.py"}, {"filename": "tests/test_ops.py"}, {"filename": "calc/extra.py"}]}, "files differ"),
    ({"changed_files": 5}, "2 files changed, the PR says 5"),
    ({"additions": 50}, "7 lines added, the PR says 50"),
    ({"deletions": 9}, "3 lines deleted, the PR says 9"),
])
def test_candidate_whose_diff_disagrees_with_the_pr_is_refused(tmp_path, extra, why):
    activity, mirror, _ = _world(tmp_path, "squash", pr_head_fetched=False, **extra)
    result = select(activity, activity.pulls[2], mirror, FilterConfig())
    assert isinstance(result, Rejection) and result.reason_class == "diff_mismatch" and why in result.reason


def test_pr_file_list_forms():
    base = {"number": 1, "merge_commit_sha": "m", "base": {"sha": "b"}, "head": {"sha": "h"}}
    assert PullRequest.from_api({**base, "files": ["a.py", {"filename": "b.py"}, {"path": "c.py"}]}).files == ("a.py", "b.py", "c.py")
    assert PullRequest.from_api({**base, "files": "a.py"}).files is None  # not a list: unknown, never 'changed nothing'
    assert PullRequest.from_api({**base, "files": [{"sha": "x"}]}).files is None
    assert PullRequest.from_api({**base, "changed_files": True}).changed_files is None
