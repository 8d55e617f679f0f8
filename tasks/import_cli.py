"""`envfarm tasks import FILE|DIR --format ...`: bring SWE-bench-family datasets into the store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Import tasks from SWE-bench-family datasets.", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def tasks() -> None:
    """Tasks from datasets: `envfarm tasks import FILE|DIR`."""


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="a .jsonl, .json or .parquet file, or a folder of them"),
    fmt: str = typer.Option("auto", "--format", help="auto | swebench | swe-rebench | swe-smith | r2e-gym | multi-swe-bench | swe-gym"),
    dry_run: bool = typer.Option(False, "--dry-run", help="read and check every row, write nothing"),
) -> None:
    """Read every row, check it against the format's fields, and store all of them in one transaction."""
    from envfarm.store import open_store
    from envfarm.tasks.importers import FORMATS, import_path, read_tasks

    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not a known format (use one of: {', '.join(FORMATS)})", param_hint="--format")
    if dry_run:
        name, found = read_tasks(path, fmt)
        console.print(f"{len(found)} {name} row(s) read and checked; nothing written (--dry-run)")
        return
    result = import_path(open_store(), path, fmt)
    console.print(f"{result.rows} {result.format} row(s): {len(result.inserted)} new, {len(result.updated)} updated, "
                  f"{len(result.unchanged)} unchanged")
