"""`envfarm eval --predictions preds.jsonl [--tasks FILE] [--workers N] [--backend docker|kubernetes]`:
grade a model's SWE-bench predictions and write the harness's reports (tasks/harness_eval.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from envfarm.tasks.import_cli import MirrorsOpt, NoIndexOpt, RegistryOpt, WheelhouseOpt, env_sources

app = typer.Typer(help="Evaluate SWE-bench predictions.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def eval_(
    predictions: Path = typer.Option(..., "--predictions", help="SWE-bench predictions: JSON Lines (or a JSON list / sb-cli object) of instance_id, model_name_or_path, model_patch"),
    tasks_file: Optional[Path] = typer.Option(None, "--tasks", help="a dataset file or folder (read as `tasks import` reads it); default: the tasks in the store"),
    fmt: str = typer.Option("auto", "--format", help="format of --tasks (as for `tasks import`)"),
    run_id: str = typer.Option("envfarm", "--run-id", help="names the run's folder and summary, as the harness's --run_id; rerun with the same id to resume"),
    out: Path = typer.Option(Path("."), "--out", help="where logs/run_evaluation/... and MODEL.RUN_ID.json are written"),
    workers: int = typer.Option(1, "--workers", help="instances graded at once (each in its own sandbox)"),
    backend: Optional[str] = typer.Option(None, "--backend", help="docker | kubernetes (default: the configured one)"),
    timeout: float = typer.Option(1800.0, "--timeout", help="seconds per test run"),
    mirrors: Optional[Path] = MirrorsOpt, registry: str = RegistryOpt,
    wheelhouse: Optional[Path] = WheelhouseOpt, no_index: bool = NoIndexOpt,
) -> None:
    """Run each prediction's patch through run_tests in the task's environment; write the harness's reports."""
    from envfarm.errors import EnvfarmError
    from envfarm.tasks.harness_eval import TaskImages, check_predictions, evaluate, load_tasks, read_predictions, sandbox_runner

    if workers < 1:
        raise EnvfarmError(f"--workers {workers} would grade nothing", "pass --workers 1 or more")
    if backend not in (None, "docker", "kubernetes"):
        raise EnvfarmError(f"--backend {backend!r} is not a sandbox backend", "pass --backend docker or --backend kubernetes")
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise EnvfarmError(f"--run-id {run_id!r} cannot name a folder", "pass a plain name, e.g. --run-id my-run")
    if out.exists() and not out.is_dir():
        raise EnvfarmError(f"--out {out} is a file", "pass a folder for the run's reports")
    preds = read_predictions(predictions)
    sources = env_sources(mirrors, registry, wheelhouse, no_index)
    tasks, source = load_tasks(tasks_file, fmt)
    check_predictions(tasks, preds, source)  # before anything is built or written
    run = sandbox_runner(timeout, backend=backend, prepare=TaskImages(sources, backend).prepare, run_id=f"eval-{run_id}")
    out.mkdir(parents=True, exist_ok=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(f"eval {run_id}", total=len(preds))

        def tick(instance_id: str, outcome: str) -> None:
            progress.advance(bar)
            progress.console.print(f"{instance_id}: {outcome}", markup=False, highlight=False, soft_wrap=True)

        summary = evaluate(tasks, preds, out, run_id, run, workers=workers, source=source, on_progress=tick)
    console.print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_ids") and k != "failure_reasons"}), markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {out / (preds[0].model + '.' + run_id + '.json')}", markup=False, highlight=False, soft_wrap=True)
