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


@app.command("eval")
def eval_(
    predictions: Path = typer.Option(..., "--predictions", help="SWE-bench predictions: JSON list or JSON Lines of instance_id, model_name_or_path, model_patch"),
    tasks_file: Path = typer.Option(None, "--tasks", help="a dataset file or folder (read as `tasks import` reads it); default: the tasks in the store"),
    fmt: str = typer.Option("auto", "--format", help="format of --tasks (as for `tasks import`)"),
    run_id: str = typer.Option("envfarm", "--run-id", help="names the run's folder and summary, as the harness's --run_id"),
    out: Path = typer.Option(Path("."), "--out", help="where logs/run_evaluation/... and MODEL.RUN_ID.json are written"),
    timeout: float = typer.Option(1800.0, "--timeout", help="seconds per test run"),
) -> None:
    """Run each prediction's patch through run_tests in the task's image and write the harness's reports."""
    import json

    from envfarm.tasks.harness_eval import evaluate, read_predictions, sandbox_runner

    preds = read_predictions(predictions)
    if tasks_file is not None:
        from envfarm.tasks.importers import read_tasks

        tasks = {t.instance_id: t for t in read_tasks(tasks_file, fmt)[1]}
    else:
        from sqlalchemy import select

        from envfarm.store import TaskRow, open_store
        from envfarm.task import TaskSpec

        wanted = [p.instance_id for p in preds]
        with open_store().session(readonly=True) as session:
            rows = session.execute(select(TaskRow).where(TaskRow.instance_id.in_(wanted))).scalars().all()
            tasks = {r.instance_id: TaskSpec.model_validate(r.spec) for r in rows}
    summary = evaluate(tasks, preds, out, run_id, sandbox_runner(timeout))
    console.print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_ids")}))
