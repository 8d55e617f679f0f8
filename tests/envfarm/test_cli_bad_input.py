"""Bad input at the command line, as a new user types it: each is one `envfarm: error:` line naming the
problem and the fix, exit code 2, no traceback, and nothing half-written in the store (issue #13, section 5).

Every case runs the real CLI in a subprocess with ENVFARM_HOME in a temporary folder, so the store it would
write is a SQLite file there that the test can open.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-P", "-m", "envfarm.cli"]


def run(home: Path, *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "ENVFARM_HOME": str(home), **(env or {})}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, env=full_env, cwd=cwd or REPO_ROOT)


def one_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single `envfarm: error:` line, after checking exit code 2, no traceback and every needle in it."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("envfarm: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    line = errors[0]
    assert "(fix: " in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def store_rows(home: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the store under `home` ({} when no store file was ever made)."""
    db = home / "envfarm.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        tables = [name for (name,) in conn.execute("select name from sqlite_master where type='table'")]
        return {t: conn.execute(f"select * from {t}").fetchall() for t in tables if t != "alembic_version"}


def nothing_written(home: Path) -> None:
    assert not any(store_rows(home).values()), store_rows(home)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    path = tmp_path / "repos.txt"
    path.write_text("acme/calc\n")
    return path


def dump_dir(tmp_path: Path, content: bytes, repo: str = "acme/calc") -> Path:
    folder = tmp_path / "dumps"
    folder.mkdir(exist_ok=True)
    (folder / f"{repo.replace('/', '__')}.jsonl").write_bytes(content)
    return folder


ISSUE = {"type": "issue", "data": {"number": 1, "title": "t", "body": "b", "created_at": "2024-01-01T00:00:00Z", "state": "closed"}}


# -- envfarm mine: the repository list and the options, refused before the store is opened ---------------

@pytest.mark.parametrize("content, needles", [
    (b"acme/calc\n\xff\xfe oops\n", ("not UTF-8", "line 2")),
    (b"", ("names no repository",)),
    (b"# nothing but comments\n\n", ("names no repository",)),
    (b"acme/calc\nnot-a-repo\n", ("line 2", "'not-a-repo' is not owner/name")),
], ids=["non-utf8", "empty", "comments-only", "bad-line"])
def test_a_bad_repository_list_is_one_line_and_writes_nothing(home: Path, tmp_path: Path, content: bytes, needles: tuple[str, ...]) -> None:
    path = tmp_path / "repos.txt"
    path.write_bytes(content)
    one_error(run(home, "mine", "--repos", path, "--workers", "0"), str(path), *needles)
    nothing_written(home)


def test_a_missing_or_folder_repository_list_says_which(home: Path, tmp_path: Path) -> None:
    one_error(run(home, "mine", "--repos", tmp_path / "nope.txt"), "does not exist")
    one_error(run(home, "mine", "--repos", tmp_path), "is not a file")
    one_error(run(home, "mine"), "--repos FILE is required")
    nothing_written(home)


@pytest.mark.parametrize("args, needles", [
    (["--workers", "-1"], ("--workers -1",)),
    (["--max-prs", "0"], ("--max-prs 0",)),
    (["--max-prs", "-3"], ("--max-prs -3",)),
    (["--repeats", "0"], ("--repeats 0",)),
    (["--since", "yesterday"], ("--since 'yesterday' is not a date", "YYYY-MM-DD")),
    (["--since", "2024-02-01", "--until", "2024-01-01"], ("is not before --until",)),
    (["--offline", "{tmp}/no-such-dir"], ("offline dump directory", "does not exist")),
    (["--offline", "{repos}"], ("offline dump directory", "is not a directory")),
    (["--out", "{tmp}"], ("--out", "is a directory")),
    (["--wheelhouse", "{repos}"], ("wheelhouse", "is not a directory")),
    (["--api-url", "api.github.com"], ("--api-url 'api.github.com' is not an http(s) URL",)),
], ids=["workers", "max-prs-0", "max-prs-neg", "repeats", "since", "crossed-dates", "offline-missing", "offline-file", "out-dir", "wheelhouse", "api-url"])
def test_bad_mine_options_are_refused_before_anything_runs(home: Path, tmp_path: Path, repos: Path, args: list[str], needles: tuple[str, ...]) -> None:
    filled = [a.format(tmp=tmp_path, repos=repos) for a in args]
    one_error(run(home, "mine", "--repos", repos, "--workers", "0", *filled), *needles)
    nothing_written(home)


# -- envfarm mine --offline: unreadable dumps are failed scans, and nothing readable is an error ----------

@pytest.mark.parametrize("content, reason_class, needles", [
    (json.dumps(ISSUE).encode("utf-16") + b"\n", "dump_encoding", ("is UTF-16", "write UTF-8 JSONL")),
    ("\n".join(json.dumps(ISSUE) for _ in range(3)).encode("utf-16-le"), "dump_encoding", ("is UTF-16", "write UTF-8 JSONL")),
    (b'{"type": "issue", "data": {"title": "caf\xe9"}}\n\xe9\n', "dump_encoding", ("is not UTF-8",)),
    (b"not json\n{\"type\": \"issue\"}\n", "dump_unreadable", ("no readable record", "all 2 line(s) skipped", "acme__calc.jsonl:1")),
    (b"", "dump_empty", ("is empty",)),
], ids=["utf16-bom", "utf16-no-bom", "latin1", "malformed", "empty"])
def test_an_unreadable_dump_is_a_failed_scan_and_an_error(home: Path, tmp_path: Path, repos: Path, content: bytes,
                                                          reason_class: str, needles: tuple[str, ...]) -> None:
    result = run(home, "mine", "--repos", repos, "--offline", dump_dir(tmp_path, content), "--workers", "0")
    one_error(result, "nothing could be read", f"acme/calc: {reason_class}", *needles)
    rows = store_rows(home)
    assert [(r[0], r[1], r[2]) for r in rows["mining_repos"]] == [("acme/calc", "failed", reason_class)]
    assert rows["mining_candidates"] == [] and rows["tasks"] == []
    (run_status,) = {r[0] for r in sqlite3.connect(home / "envfarm.db").execute("select status from runs where kind='mine'")}
    assert run_status == "failed"  # the run says it failed too, not "finished"


def test_a_malformed_dump_records_its_first_skipped_lines(home: Path, tmp_path: Path, repos: Path) -> None:
    run(home, "mine", "--repos", repos, "--offline", dump_dir(tmp_path, b"nope\n[1]\n"), "--workers", "0")
    with sqlite3.connect(home / "envfarm.db") as conn:
        (detail,) = conn.execute("select detail from mining_repos").fetchone()
    detail = json.loads(detail)
    assert detail["skipped_count"] == 2 and detail["skipped_lines"][0].startswith("acme__calc.jsonl:1: JSONDecodeError")
    assert "write one JSON object per line" in detail["fix"]


def test_one_readable_repository_is_success_and_the_other_is_named(home: Path, tmp_path: Path) -> None:
    """One dump with a readable record and a bad line (with its bare mirror), one UTF-16 dump: exit 0,
    both problems printed as warnings naming the repository."""
    source = tmp_path / "src"
    subprocess.run(["git", "init", "-q", str(source)], check=True)
    # A manifest, so the language is detected (an empty tree is a failure of its own: language_undetected).
    (source / "pyproject.toml").write_text('[project]\nname = "calc"\nversion = "0.1"\n')
    subprocess.run(["git", "-C", str(source), "add", "pyproject.toml"], check=True)
    subprocess.run(["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one"], check=True)
    folder = dump_dir(tmp_path, (json.dumps(ISSUE) + "\n{broken\n").encode())
    subprocess.run(["git", "clone", "-q", "--mirror", str(source), str(folder / "acme__calc.git")], check=True)
    (folder / "acme__wide.jsonl").write_bytes(json.dumps(ISSUE).encode("utf-16"))
    listing = tmp_path / "two.txt"
    listing.write_text("acme/calc\nacme/wide\n")
    result = run(home, "mine", "--repos", listing, "--offline", folder, "--workers", "0")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "envfarm: error:" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any(w.startswith("warning: acme/calc: skipped 1 unreadable line(s)") and "acme__calc.jsonl:2" in w for w in warnings), warnings
    assert any(w.startswith("warning: acme/wide: scan failed (dump_encoding)") for w in warnings), warnings
    statuses = {r[0]: r[1] for r in store_rows(home)["mining_repos"]}
    assert statuses == {"acme/calc": "scanned", "acme/wide": "failed"}


# -- the other mine sub-commands --------------------------------------------------------------------------

def test_an_empty_export_says_why(home: Path, tmp_path: Path) -> None:
    result = run(home, "mine", "export", "--repo", "acme/none", "--out", tmp_path / "t.jsonl")
    assert result.returncode == 0 and (tmp_path / "t.jsonl").read_text() == ""
    assert "warning: the store (ENVFARM_HOME / ENVFARM_DB_URL) holds no validated task of acme/none" in result.stderr


def test_mine_sub_commands_check_their_paths(home: Path, tmp_path: Path) -> None:
    one_error(run(home, "mine", "export", "--out", tmp_path), "--out", "is a directory")
    one_error(run(home, "mine", "funnel", "--json", tmp_path), "--json", "is a directory")
    one_error(run(home, "mine", "dump-from-git", tmp_path / "none", "acme/calc"), "does not exist")
    one_error(run(home, "mine", "dump-from-git", tmp_path, "acme/calc"), "is not a git repository")
    one_error(run(home, "mine", "dump-from-git", REPO_ROOT, "calc"), "REPO 'calc' is not owner/name")


# -- ENVFARM_* settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("variable, value, example", [
    ("ENVFARM_SANDBOX_PIDS", "-1", "ENVFARM_SANDBOX_PIDS=512"),
    ("ENVFARM_SANDBOX_PIDS", "0", "ENVFARM_SANDBOX_PIDS=512"),
    ("ENVFARM_SANDBOX_PIDS", "many", "ENVFARM_SANDBOX_PIDS=512"),
    ("ENVFARM_SANDBOX_MEMORY", "lots", "ENVFARM_SANDBOX_MEMORY=2g"),
    ("ENVFARM_SANDBOX_MEMORY", "0", "ENVFARM_SANDBOX_MEMORY=2g"),
    ("ENVFARM_SANDBOX_MEMORY", "1k", "ENVFARM_SANDBOX_MEMORY=2g"),
    ("ENVFARM_SANDBOX_CPUS", "0", "ENVFARM_SANDBOX_CPUS=1"),
    ("ENVFARM_SANDBOX_CPUS", "nan", "ENVFARM_SANDBOX_CPUS=1"),
    ("ENVFARM_SANDBOX_CPUS", "-2", "ENVFARM_SANDBOX_CPUS=1"),
    ("ENVFARM_BASE_IMAGE", "envfarm/base bookworm", "ENVFARM_BASE_IMAGE=envfarm/base:bookworm"),
])
def test_a_bad_setting_names_the_variable_and_a_good_value(home: Path, variable: str, value: str, example: str) -> None:
    """Refused before any container exists: the engine would read pids -1 and memory or CPUs 0 as no limit."""
    line = one_error(run(home, "exec", "envfarm/base:bookworm", "true", env={variable: value}), f"{variable}={value!r}", example)
    assert "envfarm doctor" not in line


def test_settings_accept_good_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from envfarm.config import Settings

    for variable, value in {"ENVFARM_SANDBOX_PIDS": "64", "ENVFARM_SANDBOX_MEMORY": "512M", "ENVFARM_SANDBOX_CPUS": "0.5"}.items():
        monkeypatch.setenv(variable, value)
    got = Settings.from_env()
    assert (got.sandbox_pids, got.sandbox_memory, got.sandbox_cpus) == (64, "512m", 0.5)


def test_envfarm_home_that_is_a_file_is_named(tmp_path: Path, repos: Path) -> None:
    one_error(run(repos, "gc", "--dry-run"), "ENVFARM_HOME=", "is a file")


# -- envfarm exec: the timeout is checked before a sandbox starts (the engine is not needed to refuse) -----

@pytest.mark.parametrize("timeout", ["nan", "inf", "1e12", "0", "-5"])
def test_exec_refuses_a_bad_timeout_without_an_engine(home: Path, tmp_path: Path, timeout: str) -> None:
    """With DOCKER_HOST at a socket nobody serves, reaching the engine would be a different error: the
    timeout's line proves the CLI refused before it tried to start anything."""
    result = run(home, "exec", "envfarm/base:bookworm", "true", f"--timeout={timeout}", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    one_error(result, "--timeout", "--timeout 60")


def test_exec_refuses_an_empty_command(home: Path, tmp_path: Path) -> None:
    one_error(run(home, "exec", "envfarm/base:bookworm", "  ", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}), "empty")


@pytest.mark.parametrize("image", ["Bad Image!!", "UPPER/x", "a:b:c", ""])
def test_exec_refuses_what_is_not_an_image_name(home: Path, tmp_path: Path, image: str) -> None:
    """The engine answers these with a 500 that reads like an engine fault ("run envfarm doctor")."""
    line = one_error(run(home, "exec", image, "true", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}), f"IMAGE {image!r} is not an image name")
    assert "doctor" not in line


def test_exec_image_names_the_engine_knows_pass_the_check() -> None:
    from envfarm.cli import IMAGE_REFERENCE

    for image in ("envfarm/base:bookworm", "docker.io/envfarm/base:bookworm", "localhost:5000/a/b:1.0", "python:3.11-slim",
                  "envfarm/env.calc:91d11c6613dae4ab", "sha256:" + "a" * 64, "abcdef123456", "quay.io/o/i@sha256:" + "b" * 64):
        assert IMAGE_REFERENCE.fullmatch(image), image


# -- envfarm verify web: scripts and paths -----------------------------------------------------------------

@pytest.mark.parametrize("name, content, needles", [
    ("s.yaml", b"steps: [\n", ("neither JSON nor YAML", "line 2")),
    ("s.json", b'{"steps": [', ("not valid JSON", "line 1")),
    ("s.yaml", b"steps:\n  - goto: caf\xe9\n", ("not UTF-8",)),
    ("s.json", '{"steps": [{"goto": "/"}]}'.encode("utf-16"), ("UTF-16",)),
    ("s.yaml", b"", ("invalid interaction script",)),
], ids=["yaml", "json", "latin1", "utf16", "empty"])
def test_a_bad_interaction_script_is_one_line(home: Path, tmp_path: Path, name: str, content: bytes, needles: tuple[str, ...]) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "index.html").write_text("<p>hi</p>")
    script = tmp_path / name
    script.write_bytes(content)
    result = run(home, "verify", "web", app, script)
    one_error(result, str(script), *needles)
    assert result.stdout == ""


def test_verify_web_refuses_files_where_folders_go(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "s.yaml"
    script.write_text("steps: [{goto: /}]\n")
    one_error(run(home, "verify", "web", script, script), "APP", "is a file")
    one_error(run(home, "verify", "web", tmp_path, script, "--out", script), "--out", "is a file")
    one_error(run(home, "verify", "web", tmp_path, script, "--out", script / "sub"), "--out", "is a file")


def test_the_verifier_api_raises_one_envfarm_error(tmp_path: Path) -> None:
    from envfarm.errors import EnvfarmError
    from envfarm.verifiers.web.script import load_script

    bad = tmp_path / "s.yaml"
    bad.write_bytes(b"steps: [{goto: /}\n")
    with pytest.raises(EnvfarmError, match="neither JSON nor YAML"):
        load_script(bad)
    with pytest.raises(EnvfarmError, match="neither JSON nor YAML"):
        load_script("steps: [goto: /\n  - {")
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(EnvfarmError, match="UTF-16"):
        load_script(bad)


# -- envfarm train --config and envfarm images build RECIPE -------------------------------------------------

@pytest.mark.parametrize("content, needles", [
    (b"train: [\n", ("not valid YAML", "line 2")),
    (b"train:\n  steps: caf\xe9\n", ("not UTF-8",)),
    (b"", ("is empty",)),
    (b"train:\n  bogus_key: 1\n", ("train.bogus_key", "unknown field")),
    (b"- a\n- b\n", ("must be a mapping",)),
], ids=["yaml", "latin1", "empty", "unknown-key", "list"])
def test_a_bad_train_config_is_one_line(home: Path, tmp_path: Path, content: bytes, needles: tuple[str, ...]) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes(content)
    one_error(run(home, "train", "--config", config, "--dry-run"), *needles)


def test_train_config_paths_and_overrides(home: Path, tmp_path: Path) -> None:
    demo = REPO_ROOT / "trainer" / "configs" / "demo.yaml"
    one_error(run(home, "train", "--config", tmp_path, "--dry-run"), "is not a file")
    one_error(run(home, "train", "--config", demo, "--dry-run", "train.steps=["), "override 'train.steps=['", "not valid YAML")
    one_error(run(home, "train", "--config", demo, "--dry-run", "=3"), "empty key")
    one_error(run(home, "train", "--config", demo, "--dry-run", "train..steps=3"), "empty key")


@pytest.mark.parametrize("content, needles", [
    (b"kind: [\n", ("not valid YAML", "line 2")),
    (b"kind: env\nname: caf\xe9\n", ("not UTF-8",)),
    (b"", ("is empty",)),
    (b"kind: env\nname: x\nbogus: 1\n", ("invalid at bogus",)),
], ids=["yaml", "latin1", "empty", "unknown-key"])
def test_a_bad_recipe_is_one_line(home: Path, tmp_path: Path, content: bytes, needles: tuple[str, ...]) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content)
    one_error(run(home, "images", "build", recipe), str(recipe), *needles)


def test_a_recipe_folder_is_not_called_missing(home: Path, tmp_path: Path) -> None:
    one_error(run(home, "images", "build", tmp_path), "is not a file")
