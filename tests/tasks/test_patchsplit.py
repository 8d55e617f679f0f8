"""Patch split: every diff block lands whole in patch or test_patch, classified by path and language."""

import subprocess
from pathlib import Path

import pytest

from envfarm.tasks.patchsplit import classify_path, split_blocks, split_diff
from .fixtures import git, write


@pytest.mark.parametrize(
    ("path", "language", "expected"),
    [
        ("tests/test_x.py", "python", "test"),
        ("pkg/test_utils.py", "python", "test"),
        ("pkg/utils_test.py", "python", "test"),
        ("conftest.py", "python", "test"),
        ("pkg/testing/helpers.py", "python", "test"),
        ("pkg/contest.py", "python", "code"),
        ("pkg/latest.py", "python", "code"),
        ("server/handler_test.go", "go", "test"),
        ("server/testdata/in.json", "go", "test"),
        ("src/__tests__/app.js", "javascript", "test"),
        ("src/app.spec.ts", "typescript", "test"),
        ("spec/models/user_spec.rb", "ruby", "test"),
        ("src/test/java/FooTest.java", "java", "test"),
        ("docs/index.rst", "python", "docs"),
        ("CHANGELOG.md", "python", "docs"),
        ("setup.py", "python", "code"),
    ],
)
def test_classify_path(path, language, expected):
    assert classify_path(path, language) == expected


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    write(tmp_path, {"pkg/core.py": "x = 1\n" * 20, "tests/test_old.py": "def test_a():\n    pass\n", "README.md": "hi\n"})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    return tmp_path


def diff_after(repo: Path, change) -> str:
    base = git(repo, "rev-parse", "HEAD")
    change(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    return subprocess.run(["git", "-C", str(repo), "diff", "--no-renames", "--full-index", base, "HEAD"], capture_output=True, text=True, check=True).stdout


def test_new_test_file_and_code_change_split_apart(repo):
    def change(r):
        write(r, {"pkg/core.py": "x = 2\n" + "x = 1\n" * 19, "tests/test_new.py": "def test_new():\n    assert True\n", "README.md": "hello\n"})

    split = split_diff(diff_after(repo, change))
    assert split.test_files == ["tests/test_new.py"]
    assert sorted(split.code_files) == ["pkg/core.py"] and split.doc_files == ["README.md"]
    assert "new file mode" in split.test_patch and "tests/test_new.py" not in split.patch
    assert "pkg/core.py" in split.patch and "README.md" in split.patch  # docs travel with the fix


def test_rename_becomes_delete_plus_add_on_each_side(repo):
    def change(r):
        git(r, "mv", "tests/test_old.py", "tests/test_renamed.py")
        git(r, "mv", "pkg/core.py", "pkg/engine.py")

    split = split_diff(diff_after(repo, change))
    assert sorted(split.test_files) == ["tests/test_old.py", "tests/test_renamed.py"]
    assert sorted(split.code_files) == ["pkg/core.py", "pkg/engine.py"]
    assert "deleted file mode" in split.test_patch and "new file mode" in split.test_patch


def test_patches_apply_to_the_base(repo, tmp_path_factory):
    base = git(repo, "rev-parse", "HEAD")

    def change(r):
        git(r, "mv", "pkg/core.py", "pkg/engine.py")
        write(r, {"tests/test_new.py": "def test_new():\n    pass\n"})

    split = split_diff(diff_after(repo, change))
    clone = tmp_path_factory.mktemp("clone")
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "checkout", "-q", base)
    for part in (split.test_patch, split.patch):
        subprocess.run(["git", "-C", str(clone), "apply", "-"], input=part, text=True, check=True)
    assert (clone / "pkg/engine.py").exists() and not (clone / "pkg/core.py").exists() and (clone / "tests/test_new.py").exists()


def test_binary_files_are_flagged(repo):
    def change(r):
        write(r, {"pkg/logo.png": bytes(range(256)), "tests/data.bin": b"\x00\x01\xff"})

    split = split_diff(diff_after(repo, change))
    assert sorted(split.binary_files) == ["pkg/logo.png", "tests/data.bin"]


def test_text_before_first_header_is_ignored_and_blocks_are_kept_whole():
    diff = "garbage\ndiff --git a/a.py b/a.py\nindex 1..2 100644\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-a\n+b\n"
    blocks = split_blocks(diff)
    assert len(blocks) == 1 and blocks[0].added == 1 and blocks[0].removed == 1
    assert blocks[0].text.startswith("diff --git")
