"""`envfarm mine`: point it at a list of repositories and leave it running; `envfarm mine export`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from envfarm.errors import EnvfarmError
from envfarm.userfiles import read_text

if TYPE_CHECKING:
    from envfarm.store import Store

app = typer.Typer(help="Mine verifiable tasks from GitHub issues and pull requests.", no_args_is_help=False)
console = Console(stderr=True)


def _date(option: str, value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    except ValueError:
        raise EnvfarmError(f"{option} {value!r} is not a date", f"pass {option} as YYYY-MM-DD, e.g. {option} 2024-01-31") from None


def read_wheelhouse(directory: Optional[Path]) -> tuple[tuple[str, bytes], ...]:
    if directory is None:
        return ()
    if not directory.is_dir():
        raise EnvfarmError(f"wheelhouse {directory} is not a directory", "pass a directory of .whl / .tar.gz files")
    return tuple((p.name, p.read_bytes()) for p in sorted(directory.iterdir()) if p.suffix in (".whl", ".gz", ".zip"))


def read_repo_list(path: Path) -> list[tuple[str, str]]:
    """The --repos file as (repo, clone url) entries, or EnvfarmError naming the file, the line and the fix.

    Read before anything is opened or started, so a bad list leaves no run row and no partial mining."""
    from envfarm.tasks.pipeline import parse_repo_line

    text = read_text(path, "repository list", "pass --repos FILE: a UTF-8 text file with one owner/name [clone-url] per line")
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            entry = parse_repo_line(line)
        except EnvfarmError as exc:
            raise EnvfarmError(f"repository list {path}, line {number}: {exc.problem}", exc.fix) from None
        if entry:
            entries.append(entry)
    if not entries:
        raise EnvfarmError(f"repository list {path} names no repository", "write one owner/name [clone-url] per line (# starts a comment)")
    return entries


def check_output_path(option: str, path: Optional[Path], example: str = "tasks.jsonl") -> None:
    """An output file must not be a folder, nor sit under a file: say so before any work is done."""
    if path is None:
        return
    if path.is_dir():
        raise EnvfarmError(f"{option} {path} is a directory", f"pass a file path for {option}, e.g. {path / example}")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise EnvfarmError(f"{option} {path}: {parent} is a file, not a directory", f"pass a path under a directory for {option}")


def check_options(offline: Optional[Path], workers: int, max_prs: Optional[int], repeats: int, api_url: str) -> None:
    if offline is None and not api_url.startswith(("http://", "https://")):
        raise EnvfarmError(f"--api-url {api_url!r} is not an http(s) URL", "pass e.g. --api-url https://github.example.com/api/v3, or omit it for api.github.com")
    if offline is not None and not offline.is_dir():
        state = "does not exist" if not offline.exists() else "is not a directory"
        raise EnvfarmError(f"offline dump directory {offline} {state}", "pass --offline DIR holding <owner>__<name>.jsonl dumps, or drop --offline")
    if workers < 0:
        raise EnvfarmError(f"--workers {workers} is negative", "pass --workers 0 (no Ray, this process) or the number of Ray CPUs, e.g. --workers 2")
    if max_prs is not None and max_prs < 1:
        raise EnvfarmError(f"--max-prs {max_prs} would mine nothing", "pass --max-prs 1 or more, or omit it for every merged pull request")
    if repeats < 1:
        raise EnvfarmError(f"--repeats {repeats} would run no test", "pass --repeats 1 or more (default 3)")


def repo_scans(store: Store, repos: list[str]) -> dict[str, dict]:
    """Each repository's scan as the pipeline recorded it: status, reason class, problem, fix, skipped lines."""
    from sqlalchemy import select

    from envfarm.store.mining import MiningRepoRow

    with store.session(readonly=True) as session:
        rows = session.scalars(select(MiningRepoRow).where(MiningRepoRow.repo.in_(repos))).all()
        return {row.repo: {"status": row.status, "reason_class": row.reason_class, "reason": row.reason, **(row.detail or {})} for row in rows}


def report_scans(scans: dict[str, dict], repos: list[str]) -> None:
    """Say what was skipped or failed; EnvfarmError when no repository could be read at all."""
    failed = [r for r in repos if scans.get(r, {}).get("status") == "failed"]
    nothing_read = bool(failed) and len(failed) == len(repos)
    for repo in repos:
        scan = scans.get(repo, {})
        if scan.get("status") == "failed" and not (nothing_read and len(failed) == 1):  # else the error line says it
            console.print(f"warning: {repo}: scan failed ({scan.get('reason_class')}): {scan.get('reason')}", markup=False, highlight=False, soft_wrap=True)
        elif scan.get("status") != "failed" and scan.get("skipped_count"):
            first = "; ".join(scan.get("skipped_lines", [])[:3])
            console.print(f"warning: {repo}: skipped {scan['skipped_count']} unreadable line(s) of its source: {first}", markup=False, highlight=False, soft_wrap=True)
    if nothing_read:
        first = scans[failed[0]]
        problem = first.get("problem") or first.get("reason") or "no reason recorded"
        more = f" (and {len(failed) - 1} more, listed above)" if len(failed) > 1 else ""
        raise EnvfarmError(f"nothing could be read: every repository failed to scan; {failed[0]}: {first.get('reason_class')}: {problem}{more}",
                           first.get("fix") or "fix the source named above and rerun; `envfarm mine funnel` shows every repository's state")


@app.callback(invoke_without_command=True)
def mine(
    ctx: typer.Context,
    repos: Optional[Path] = typer.Option(None, "--repos", help="file with one owner/name [clone-url] per line"),
    offline: Optional[Path] = typer.Option(None, "--offline", help="directory of JSONL dumps (and optional bare mirrors) instead of the GitHub API"),
    out: Optional[Path] = typer.Option(None, "--out", help="also export validated tasks to this SWE-bench JSONL file"),
    workers: int = typer.Option(2, "--workers", help="Ray CPUs (0: run everything in this process, no Ray)"),
    max_prs: Optional[int] = typer.Option(None, "--max-prs", help="newest N merged pull requests per repository"),
    repeats: int = typer.Option(3, "--repeats", help="test runs per state; tests that change outcome are dropped as flaky"),
    wheelhouse: Optional[Path] = typer.Option(None, "--wheelhouse", help="directory of wheels copied into env images (--find-links)"),
    no_index: bool = typer.Option(False, "--no-index", help="install only from the wheelhouse (air-gapped clusters)"),
    no_time_cap: bool = typer.Option(False, "--no-time-cap", help="resolve with today's packages instead of as of the task's date"),
    since: Optional[str] = typer.Option(None, "--since", help="only pull requests created on/after this date"),
    until: Optional[str] = typer.Option(None, "--until", help="only pull requests created before this date"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="retry candidates whose env failed or were rejected"),
    api_url: str = typer.Option("https://api.github.com", "--api-url", help="GitHub API base URL (GitHub Enterprise, recorded fixtures)"),
    language: str = typer.Option("auto", "--language", help="auto (detect each repository's language from its files) or one of python, javascript, typescript, go, rust"),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if repos is None:
        raise EnvfarmError("--repos FILE is required", "pass --repos FILE with one owner/name [clone-url] per line")
    # Every input is checked before the store is opened or anything starts: bad input leaves no rows.
    entries = read_repo_list(repos)
    check_options(offline, workers, max_prs, repeats, api_url)
    check_output_path("--out", out)
    created_after, created_before = _date("--since", since), _date("--until", until)
    if created_after and created_before and created_after >= created_before:
        raise EnvfarmError(f"--since {since} is not before --until {until}", "pass a --since date earlier than --until")
    wheels = read_wheelhouse(wheelhouse)
    from envfarm.tasks.envsetup import known_languages

    if language != "auto" and language not in known_languages():
        raise EnvfarmError(f"--language {language!r} is not a language envfarm mines", f"pass --language auto or one of {', '.join(known_languages())}")
    from envfarm.runs import run_scope
    from envfarm.store import open_store
    from envfarm.tasks.candidates import FilterConfig
    from envfarm.tasks.envsetup.base import BuildOptions
    from envfarm.tasks.export import export_jsonl
    from envfarm.tasks.pipeline import MineConfig, run_inline, run_ray
    from envfarm.tasks.store import funnel

    names = [r for r, _ in entries]
    store = open_store()
    config = MineConfig(
        offline_dir=offline, api_url=api_url, max_prs=max_prs, repeats=repeats, retry_failed=retry_failed,
        filters=FilterConfig(created_after=created_after, created_before=created_before, language=language),
        options=BuildOptions(wheelhouse=wheels, offline=no_index, time_cap=not no_time_cap),
    )
    with run_scope(store, "mine", {"repos": names, "offline": str(offline or "")}) as run:
        config.run_id = run.id
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"), TimeElapsedColumn(), console=console) as progress:
            bars = {name: progress.add_task(label, total=None) for name, label in
                    (("repos", "repos scanned"), ("candidates", "candidates"), ("env_ok", "env ok"), ("validated", "validated"))}

            def tick(what: str, n: int = 1) -> None:
                progress.advance(bars[what], n)

            if workers == 0:
                run_inline(entries, config, store, tick)
            else:
                run_ray(entries, config, store.url, workers, tick)
        summary = funnel(store, names)
        run.summary = summary
        report_scans(repo_scans(store, names), names)
    print_funnel(summary)
    if out:
        n = export_jsonl(store, out)
        console.print(f"exported {n} validated task(s) to {out}")


def print_funnel(summary: dict) -> None:
    table = Table(title="mining funnel")
    table.add_column("stage")
    table.add_column("count", justify="right")
    for key in ("pull_requests", "candidates", "env_built", "validated"):
        table.add_row(key.replace("_", " "), str(summary[key]))
    console.print(table)
    if summary["reasons"]:
        reasons = Table(title="failure reasons")
        reasons.add_column("status:reason")
        reasons.add_column("count", justify="right")
        for key, n in summary["reasons"].items():
            if key != "env_failed:python_unavailable":
                reasons.add_row(key, str(n))
        console.print(reasons)
    unavailable = (summary.get("python_unavailable") or {}).get("candidates", 0)
    if unavailable:  # not the repository's failure: this machine has no such interpreter (`envfarm doctor` lists them)
        console.print(f"python_unavailable (apart): {unavailable} candidate(s) need an interpreter this machine cannot offer; "
                      f"env success on available interpreters: {summary.get('env_success_rate_available_interpreters')}")


@app.command()
def export(out: Path = typer.Option(Path("tasks.jsonl"), "--out"), repo: Optional[str] = typer.Option(None, "--repo")) -> None:
    """Write validated tasks from the store as SWE-bench-format JSONL."""
    check_output_path("--out", out)
    from envfarm.store import open_store
    from envfarm.tasks.export import export_jsonl

    n = export_jsonl(open_store(), out, repo)
    console.print(f"exported {n} task(s) to {out}")
    if n == 0:  # an empty file is a valid export, but say why it is empty
        console.print(f"warning: the store (ENVFARM_HOME / ENVFARM_DB_URL) holds no validated task{f' of {repo}' if repo else ''}: "
                      "`envfarm mine funnel` shows what was mined", markup=False, highlight=False, soft_wrap=True)


@app.command("funnel")
def show_funnel(json_out: Optional[Path] = typer.Option(None, "--json", help="also write the funnel as JSON here")) -> None:
    """Print the funnel of everything mined so far (per repository, with env success rate)."""
    import json

    from envfarm.store import open_store
    from envfarm.tasks.store import funnel

    check_output_path("--json", json_out, "funnel.json")
    summary = funnel(open_store())
    print_funnel(summary)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2) + "\n")


@app.command("dump-from-git")
def dump_from_git_cmd(
    repo_dir: Path = typer.Argument(..., help="a git repository (bare or not) holding the project's history"),
    repo: str = typer.Argument(..., help="owner/name"),
    out: Path = typer.Option(Path("work-repos/dumps"), "--out", help="directory for <owner>__<name>.jsonl and its mirror"),
) -> None:
    """Make an offline dump from git history alone (issue text is synthesized from commit messages)."""
    import subprocess

    from envfarm.tasks.pipeline import parse_repo_line
    from envfarm.tasks.sources.gitlog import dump_from_git

    if not repo_dir.is_dir():
        raise EnvfarmError(f"REPO_DIR {repo_dir} {'is not a directory' if repo_dir.exists() else 'does not exist'}",
                           "pass the folder of a git repository (a clone or a bare mirror)")
    probe = subprocess.run(["git", "-C", str(repo_dir), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise EnvfarmError(f"REPO_DIR {repo_dir} is not a git repository with a commit", "pass a clone or bare mirror of the project (git clone --mirror URL)")
    try:
        named = (parse_repo_line(repo) or ("", ""))[0]
    except EnvfarmError:
        named = ""
    if named != repo:
        raise EnvfarmError(f"REPO {repo!r} is not owner/name", "pass the repository as owner/name, e.g. acme/calc")
    if out.exists() and not out.is_dir():
        raise EnvfarmError(f"--out {out} is a file, not a directory", "pass a directory for the dump and its mirror")
    try:
        path = dump_from_git(repo_dir, repo, out)
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise EnvfarmError(f"git failed reading {repo_dir}: {' '.join(stderr.split())[:300] or f'exit {exc.returncode}'}",
                           "check the repository with git -C REPO_DIR log") from None
    console.print(f"wrote {path} ({sum(1 for _ in path.open())} records)")
