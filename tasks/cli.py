"""`envfarm mine`: point it at a list of repositories and leave it running; `envfarm mine export`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from envfarm.errors import EnvfarmError

app = typer.Typer(help="Mine verifiable tasks from GitHub issues and pull requests.", no_args_is_help=False)
console = Console(stderr=True)


def _date(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (use YYYY-MM-DD)") from None


def read_wheelhouse(directory: Optional[Path]) -> tuple[tuple[str, bytes], ...]:
    if directory is None:
        return ()
    if not directory.is_dir():
        raise EnvfarmError(f"wheelhouse {directory} is not a directory", "pass a directory of .whl / .tar.gz files")
    return tuple((p.name, p.read_bytes()) for p in sorted(directory.iterdir()) if p.suffix in (".whl", ".gz", ".zip"))


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
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if repos is None:
        console.print("[red]--repos FILE is required[/red] (one owner/name per line)")
        raise typer.Exit(2)
    from envfarm.runs import run_scope
    from envfarm.store import open_store
    from envfarm.tasks.candidates import FilterConfig
    from envfarm.tasks.envsetup.base import BuildOptions
    from envfarm.tasks.export import export_jsonl
    from envfarm.tasks.pipeline import MineConfig, parse_repo_line, run_inline, run_ray
    from envfarm.tasks.store import funnel

    try:
        if not repos.is_file():
            raise EnvfarmError(f"repository list {repos} does not exist", "pass --repos FILE with one owner/name per line")
        entries = [e for e in (parse_repo_line(line) for line in repos.read_text().splitlines()) if e]
        store = open_store()
        config = MineConfig(
            offline_dir=offline, api_url=api_url, max_prs=max_prs, repeats=repeats, retry_failed=retry_failed,
            filters=FilterConfig(created_after=_date(since), created_before=_date(until)),
            options=BuildOptions(wheelhouse=read_wheelhouse(wheelhouse), offline=no_index, time_cap=not no_time_cap),
        )
        with run_scope(store, "mine", {"repos": [r for r, _ in entries], "offline": str(offline or "")}) as run:
            config.run_id = run.id
            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"), TimeElapsedColumn(), console=console) as progress:
                bars = {name: progress.add_task(label, total=None) for name, label in
                        (("repos", "repos scanned"), ("candidates", "candidates"), ("env_ok", "env ok"), ("validated", "validated"))}

                def tick(what: str, n: int = 1) -> None:
                    progress.advance(bars[what], n)

                if workers <= 0:
                    run_inline(entries, config, store, tick)
                else:
                    run_ray(entries, config, store.url, workers, tick)
            summary = funnel(store, [r for r, _ in entries])
            run.summary = summary
        print_funnel(summary)
        if out:
            n = export_jsonl(store, out)
            console.print(f"exported {n} validated task(s) to {out}")
    except EnvfarmError as exc:
        console.print(f"[red]error:[/red] {exc.line()}")
        raise typer.Exit(1)


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
            reasons.add_row(key, str(n))
        console.print(reasons)


@app.command()
def export(out: Path = typer.Option(Path("tasks.jsonl"), "--out"), repo: Optional[str] = typer.Option(None, "--repo")) -> None:
    """Write validated tasks from the store as SWE-bench-format JSONL."""
    from envfarm.store import open_store
    from envfarm.tasks.export import export_jsonl

    n = export_jsonl(open_store(), out, repo)
    console.print(f"exported {n} task(s) to {out}")


@app.command("funnel")
def show_funnel(json_out: Optional[Path] = typer.Option(None, "--json", help="also write the funnel as JSON here")) -> None:
    """Print the funnel of everything mined so far (per repository, with env success rate)."""
    import json

    from envfarm.store import open_store
    from envfarm.tasks.store import funnel

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
    from envfarm.tasks.sources.gitlog import dump_from_git

    path = dump_from_git(repo_dir, repo, out)
    console.print(f"wrote {path} ({sum(1 for _ in path.open())} records)")
