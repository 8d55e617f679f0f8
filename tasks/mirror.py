"""Bare git mirrors of the repositories we mine, fetched incrementally, read without a work tree.

Why bare mirrors: one copy per repository serves every candidate (diffs, file reads at any commit,
bundles for image builds) and a re-run only fetches what is new. Pull request heads are fetched too
(`refs/pull/*/head` on GitHub) so commits of merged-then-squashed PRs can still be read.
"""

from __future__ import annotations

import fcntl
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import git

from envfarm.errors import EnvfarmError


class MirrorError(EnvfarmError):
    def __init__(self, problem: str, fix: str = "", reason_class: str = "repo_unavailable") -> None:
        self.reason_class = reason_class
        super().__init__(problem, fix)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Mirror:
    """One bare repository; every method is a read except `update`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.repo = git.Repo(self.path)

    @classmethod
    def ensure(cls, root: str | Path, name: str, url: str, fetch: bool = True) -> "Mirror":
        """Clone `url` as a bare mirror under root (or fetch new objects into the existing one)."""
        path = Path(root) / f"{name.replace('/', '__')}.git"
        with _lock(path):
            try:
                if not (path / "HEAD").exists():
                    tmp = path.with_name(path.name + ".partial")
                    if tmp.exists():
                        subprocess.run(["rm", "-rf", str(tmp)], check=True)
                    git.Repo.clone_from(url, tmp, mirror=True, env={"GIT_TERMINAL_PROMPT": "0"})
                    tmp.rename(path)  # a killed clone leaves only the .partial directory
                elif fetch:
                    git.Repo(path).git.fetch("--prune", "--quiet", "origin", env={"GIT_TERMINAL_PROMPT": "0"})
            except git.GitCommandError as exc:
                detail = (exc.stderr or str(exc)).strip().splitlines()[-1:] or [""]
                raise MirrorError(
                    f"cannot mirror {name} from {url}: {detail[0][:300]}",
                    "check that the repository exists and is public (or that the credentials helper can read it)",
                ) from None
        return cls(path)

    def git(self, *args: str) -> str:
        return self.repo.git.execute(["git", *args], stdout_as_string=True, strip_newline_in_stdout=False)

    def git_bytes(self, *args: str) -> bytes:
        proc = subprocess.run(["git", "-C", str(self.path), *args], capture_output=True)
        if proc.returncode != 0:
            raise MirrorError(f"git {' '.join(args[:3])} failed in {self.path.name}: {proc.stderr.decode(errors='replace')[:300]}", "re-fetch the mirror", "git_error")
        return proc.stdout

    def has_commit(self, sha: str) -> bool:
        if not sha:
            return False
        return subprocess.run(["git", "-C", str(self.path), "cat-file", "-e", f"{sha}^{{commit}}"], capture_output=True).returncode == 0

    def parents(self, sha: str) -> list[str]:
        return self.git_bytes("rev-list", "--parents", "-n", "1", sha).decode().split()[1:]

    def merge_base(self, a: str, b: str) -> str:
        """The best common ancestor: where GitHub starts a pull request's diff."""
        out = self.git_bytes("merge-base", a, b).decode().strip()
        if not out:
            raise MirrorError(f"{a[:12]} and {b[:12]} share no history", "re-fetch the mirror", "commit_missing")
        return out

    def diff(self, base: str, head: str) -> bytes:
        """Raw bytes: the caller decides what a non-UTF-8 diff means."""
        return self.git_bytes("diff", "--no-color", "--no-ext-diff", "--no-renames", "--full-index", base, head)

    def messages(self, rev_range: str) -> list[str]:
        out = self.git_bytes("log", "--format=%B%x00", rev_range).decode("utf-8", errors="replace")
        return [m.strip() for m in out.split("\x00") if m.strip()]

    def read(self, commit: str, path: str) -> bytes | None:
        proc = subprocess.run(["git", "-C", str(self.path), "show", f"{commit}:{path}"], capture_output=True)
        return proc.stdout if proc.returncode == 0 else None

    def ls(self, commit: str) -> list[str]:
        return self.git_bytes("ls-tree", "-r", "--name-only", commit).decode("utf-8", errors="replace").splitlines()

    def commit_time(self, sha: str) -> int:
        return int(self.git_bytes("show", "-s", "--format=%ct", sha).decode().strip())

    def is_ancestor(self, older: str, newer: str) -> bool:
        return subprocess.run(["git", "-C", str(self.path), "merge-base", "--is-ancestor", older, newer], capture_output=True).returncode == 0

    def bundle(self, tip: str, exclude: str | None = None) -> bytes:
        """A git bundle of `tip`'s history (minus `exclude`'s), byte-stable for the same objects.

        Single-threaded packing keeps the bytes identical across runs, so the image recipe that
        carries the bundle hashes to the same tag and the build cache hits.
        """
        ref = f"refs/envfarm/{tip}"
        with _lock(self.path):
            self.git_bytes("update-ref", ref, tip)
            try:
                args = ["-c", "pack.threads=1", "bundle", "create", "-", ref]
                if exclude and exclude != tip:
                    args.append(f"^{exclude}")
                return self.git_bytes(*args)
            finally:
                self.git_bytes("update-ref", "-d", ref)
