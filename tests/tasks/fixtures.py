"""Fixture repositories with real git history, recorded GitHub records, and an offline wheelhouse."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import os
import subprocess
import zipfile
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.com",
}


def git(repo: Path, *args: str, date: str = "2024-01-01T00:00:00Z") -> str:
    env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def write(repo: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def repack_installed(dist_name: str, out_dir: Path) -> Path:
    """Turn an installed pure-Python distribution back into a wheel (offline: no index needed)."""
    dist = md.distribution(dist_name)
    root = Path(dist.locate_file(""))
    name = dist.metadata["Name"].replace("-", "_")
    wheel = out_dir / f"{name}-{dist.version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in dist.files or []:
            rel_s = str(rel)
            if rel_s.startswith("..") or "__pycache__" in rel_s or rel_s.endswith(("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")):
                continue
            data = (root / rel).read_bytes()
            zf.writestr(zipfile.ZipInfo(rel_s, date_time=(2024, 1, 1, 0, 0, 0)), data)  # fixed time: same bytes, same image tag
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{rel_s},sha256={digest},{len(data)}")
        info = next(str(f).split("/")[0] for f in dist.files if str(f).endswith("METADATA"))
        records.append(f"{info}/RECORD,,")
        zf.writestr(zipfile.ZipInfo(f"{info}/RECORD", date_time=(2024, 1, 1, 0, 0, 0)), "\n".join(records) + "\n")
    return wheel


def build_wheelhouse(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for dist in ("pytest", "pluggy", "iniconfig", "packaging", "Pygments", "setuptools"):
        repack_installed(dist, out_dir)
    # `tinydep`: the fixture project's own dependency, built here from source.
    src = out_dir.parent / "tinydep-src"
    write(src, {
        "pyproject.toml": '[build-system]\nrequires=["setuptools>=61"]\nbuild-backend="setuptools.build_meta"\n[project]\nname="tinydep"\nversion="1.0"\n',
        "tinydep/__init__.py": "def double(x):\n    return 2 * x\n",
    })
    subprocess.run([os.environ.get("PYTHON", "python3"), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out_dir), str(src)],
                   check=True, capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1704067200"})
    return out_dir


CALC_V1 = '''from tinydep import double


def add(a, b):
    return a - b  # bug: issue #1


def twice(x):
    return double(x)


def sub(a, b):
    return a + b  # bug: issue #3
'''


def pr_record(number: int, title: str, body: str, merge_sha: str, base_sha: str, created: str, merged: bool = True) -> dict:
    return {"type": "pull", "data": {
        "number": number, "title": title, "body": body, "created_at": created,
        "merged_at": created if merged else None, "merge_commit_sha": merge_sha, "base": {"sha": base_sha, "ref": "main"},
        "head": {"sha": merge_sha}, "html_url": f"https://github.com/acme/calc/pull/{number}", "commits": 1}}


def issue_record(number: int, title: str, body: str, created: str) -> dict:
    return {"type": "issue", "data": {"number": number, "title": title, "body": body, "created_at": created, "state": "closed",
                                      "html_url": f"https://github.com/acme/calc/issues/{number}"}}


def merge_pr(repo: Path, branch: str, number: int, message: str, files: dict[str, str | bytes], date: str, delete: list[str] = ()) -> str:
    git(repo, "checkout", "-q", "-b", branch, "main", date=date)
    write(repo, files)
    for rel in delete:
        git(repo, "rm", "-q", rel, date=date)
    git(repo, "add", "-A", date=date)
    git(repo, "commit", "-q", "-m", message, date=date)
    git(repo, "checkout", "-q", "main", date=date)
    git(repo, "merge", "-q", "--no-ff", "-m", f"Merge pull request #{number} from dev/{branch}\n\n{message}", branch, date=date)
    return git(repo, "rev-parse", "HEAD")


def make_calc_repo(root: Path, salt: str = "") -> tuple[Path, Path]:
    """acme/calc: two issue-closing PRs (one adding a new test file), plus PRs every filter rejects.

    `salt` changes the first commit (hence every image tag): the benchmark uses it for a cold pass.
    Returns (offline dump dir, path of the dump's bare mirror)."""
    repo = root / "calc-work"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, {
        "pyproject.toml": '[build-system]\nrequires=["setuptools>=61"]\nbuild-backend="setuptools.build_meta"\n'
                          '[project]\nname="calc"\nversion="0.1.0"\nrequires-python=">=3.8"\ndependencies=["tinydep"]\n'
                          '[tool.setuptools]\npackages=["calc"]\n',
        "calc/__init__.py": CALC_V1,
        "tests/test_calc.py": "from calc import twice\n\n\ndef test_twice():\n    assert twice(2) == 4\n",
        "README.md": f"calc{salt}\n",
        ".gitignore": "*.egg-info/\n__pycache__/\nbuild/\n",
    })
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    base1 = git(repo, "rev-parse", "HEAD")
    m2 = merge_pr(repo, "fix-add", 2, "Fix add\n\nFixes #1", {
        "calc/__init__.py": CALC_V1.replace("return a - b  # bug: issue #1", "return a + b"),
        "tests/test_calc.py": "from calc import add, twice\n\n\ndef test_twice():\n    assert twice(2) == 4\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    }, "2024-02-01T00:00:00Z")
    base4 = git(repo, "rev-parse", "HEAD^1")
    m4 = merge_pr(repo, "fix-sub", 4, "Fix sub", {
        "calc/__init__.py": CALC_V1.replace("return a - b  # bug: issue #1", "return a + b").replace("return a + b  # bug: issue #3", "return a - b"),
        "tests/test_sub.py": "from calc import sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n\n\ndef test_sub_zero():\n    assert sub(0, 0) == 0\n",
    }, "2024-03-01T00:00:00Z")
    m5 = merge_pr(repo, "docs", 5, "Docs: explain add (closes #1)", {"README.md": "calc: add and sub\n"}, "2024-03-02T00:00:00Z")
    m6 = merge_pr(repo, "refactor", 6, "Refactor twice", {
        "calc/__init__.py": (repo / "calc/__init__.py").read_text().replace("return double(x)", "return double(x)  # tidy"),
        "tests/test_calc.py": (repo / "tests/test_calc.py").read_text() + "\n",
    }, "2024-03-03T00:00:00Z")
    m7 = merge_pr(repo, "logo", 7, "Add logo, fixes #3", {"calc/logo.png": bytes(range(256)), "tests/test_logo.py": "def test_logo():\n    pass\n"}, "2024-03-04T00:00:00Z")
    # A later commit the agent must never see from the instance of PR #2.
    git(repo, "tag", "v1.0", date="2024-03-05T00:00:00Z")
    dump_dir = root / "dump"
    dump_dir.mkdir()
    mirror = dump_dir / "acme__calc.git"
    subprocess.run(["git", "clone", "-q", "--mirror", str(repo), str(mirror)], check=True)
    statement1 = "add() subtracts instead of adding: add(2, 3) returns -1, expected 5."
    statement3 = "sub() adds instead of subtracting: sub(5, 3) returns 8 where 2 is expected."
    records = [
        issue_record(1, "add is broken", statement1, "2024-01-15T00:00:00Z"),
        issue_record(3, "sub is broken", statement3, "2024-02-15T00:00:00Z"),
        {"type": "issue", "data": {"number": 2, "title": "PR listed by the issues API", "pull_request": {"url": "x"}}},
        pr_record(2, "Fix add", "This fixes #1.", m2, base1, "2024-01-20T00:00:00Z"),
        pr_record(4, "Fix sub", "No keyword here; linked through the issue timeline.", m4, base4, "2024-02-20T00:00:00Z"),
        pr_record(5, "Docs", "closes #1", m5, m4, "2024-03-02T00:00:00Z"),
        pr_record(6, "Refactor", "cleanup", m6, m5, "2024-03-03T00:00:00Z"),
        pr_record(7, "Logo", "fixes #3", m7, m6, "2024-03-04T00:00:00Z"),
        {"type": "timeline", "issue_number": 3, "data": {"event": "cross-referenced", "source": {"issue": {"number": 4, "pull_request": {"url": "x"}}}}},
        # hints_text: a comment before the fix began is a hint; one written after it is not.
        {"type": "comment", "issue_number": 3, "data": {"body": "Seen for every pair of inputs.", "created_at": "2024-02-17T00:00:00Z", "user": {"login": "u"}}},
        {"type": "comment", "issue_number": 3, "data": {"body": "Thanks, fixed!", "created_at": "2099-01-01T00:00:00Z", "user": {"login": "u"}}},
    ]
    lines = [json.dumps(r) for r in records]
    lines.insert(3, "{not json")  # a malformed line: skipped with its line number, never fatal
    (dump_dir / "acme__calc.jsonl").write_text("\n".join(lines) + "\n")
    return dump_dir, mirror


def make_broken_repo(root: Path, dump_dir: Path) -> None:
    """acme/broken: a fine candidate whose environment cannot be built (its dependency exists nowhere)."""
    repo = root / "broken-work"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, {
        "pyproject.toml": '[build-system]\nrequires=["setuptools>=61"]\nbuild-backend="setuptools.build_meta"\n'
                          '[project]\nname="broken"\nversion="0.1.0"\ndependencies=["no-such-package-anywhere-xyz"]\n[tool.setuptools]\npackages=["broken"]\n',
        "broken/__init__.py": "def one():\n    return 2\n",
        "tests/test_one.py": "def test_import():\n    import broken\n",
    })
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    base = git(repo, "rev-parse", "HEAD")
    merge = merge_pr(repo, "fix", 2, "Fix one, fixes #1", {
        "broken/__init__.py": "def one():\n    return 1\n",
        "tests/test_one.py": "from broken import one\n\n\ndef test_one():\n    assert one() == 1\n",
    }, "2024-02-01T00:00:00Z")
    subprocess.run(["git", "clone", "-q", "--mirror", str(repo), str(dump_dir / "acme__broken.git")], check=True)
    records = [issue_record(1, "one() is wrong", "one() returns 2 but the docs promise it returns 1.", "2024-01-10T00:00:00Z"),
               pr_record(2, "Fix one", "fixes #1", merge, base, "2024-01-20T00:00:00Z")]
    (dump_dir / "acme__broken.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
