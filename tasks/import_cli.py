"""`envfarm tasks import|build|validate`: bring SWE-bench-family datasets into the store, give their
tasks environments, and check that each grades its gold patch as resolved and an empty one as not.
(`envfarm eval` grades predictions on them: tasks/eval_cli.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

app = typer.Typer(help="Import tasks from SWE-bench-family datasets.", no_args_is_help=True)
console = Console(stderr=True)

if TYPE_CHECKING:
    from envfarm.task import TaskSpec
    from envfarm.tasks.importers.images import EnvSources

MIRRORS_HELP = "folder of bare repository mirrors named <owner>__<name>.git (default: ENVFARM_HOME/mirrors, the miner's)"
REGISTRY_HELP = "registry holding the images rows name (http://HOST:PORT for plain HTTP); default: as the names say"


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


def env_sources(mirrors: Optional[Path], registry: str, wheelhouse: Optional[Path], no_index: bool) -> "EnvSources":
    """Where environments may come from, from the command's options (checked before anything runs)."""
    from envfarm.config import settings
    from envfarm.errors import EnvfarmError
    from envfarm.tasks.cli import read_wheelhouse
    from envfarm.tasks.envsetup.base import BuildOptions
    from envfarm.tasks.importers.images import EnvSources

    if mirrors is not None and not mirrors.is_dir():
        raise EnvfarmError(f"--mirrors {mirrors} is not a directory", "pass a folder holding <owner>__<name>.git bare mirrors (git clone --mirror URL)")
    if registry and any(c.isspace() for c in registry):
        raise EnvfarmError(f"--registry {registry!r} has spaces", "pass a registry as HOST[:PORT][/PREFIX], or http://HOST:PORT for plain HTTP")
    if no_index and wheelhouse is None:
        raise EnvfarmError("--no-index installs only from a wheelhouse, and none was given", "pass --wheelhouse DIR with it")
    options = BuildOptions(wheelhouse=read_wheelhouse(wheelhouse), offline=no_index)
    return EnvSources(mirrors=mirrors or settings().home / "mirrors", registry=registry, options=options)


MirrorsOpt = typer.Option(None, "--mirrors", help=MIRRORS_HELP)
RegistryOpt = typer.Option("", "--registry", envvar="ENVFARM_IMAGE_REGISTRY", help=REGISTRY_HELP)
WheelhouseOpt = typer.Option(None, "--wheelhouse", help="wheels copied into recipe builds (pip --find-links)")
NoIndexOpt = typer.Option(False, "--no-index", help="recipe builds install only from --wheelhouse (air-gapped)")


def _imported(ids: list[str]) -> dict[str, "TaskSpec"]:
    from envfarm.errors import EnvfarmError
    from envfarm.tasks.harness_eval import load_tasks

    tasks, _ = load_tasks(None, "auto", ids or None)
    missing = [i for i in ids if i not in tasks]
    if missing:
        raise EnvfarmError(f"instance {missing[0]!r} is not in the store" + (f" (nor {len(missing) - 1} more)" if missing[1:] else ""),
                           "import its dataset first: envfarm tasks import FILE")
    if not tasks:
        raise EnvfarmError("the store holds no SWE task", "import a dataset first: envfarm tasks import FILE")
    return tasks


@app.command("build")
def build(
    ids: list[str] = typer.Argument(None, help="instance ids (default: every task in the store)"),
    mirrors: Optional[Path] = MirrorsOpt, registry: str = RegistryOpt,
    wheelhouse: Optional[Path] = WheelhouseOpt, no_index: bool = NoIndexOpt,
) -> None:
    """Give each task its environment: the dataset's recipe, else the row's image, else envfarm's setup."""
    from envfarm.engine import connect
    from envfarm.errors import EnvfarmError
    from envfarm.store import TaskRow, open_store
    from envfarm.tasks.importers.base import with_environment
    from envfarm.tasks.importers.images import TaskEnvError, ensure_env

    sources = env_sources(mirrors, registry, wheelhouse, no_index)
    tasks = _imported(list(ids or []))
    store, client, failed = open_store(), connect(), []
    for n, task in enumerate(tasks.values(), 1):
        try:
            env = ensure_env(task, sources, client)
        except TaskEnvError as exc:
            failed.append(task.instance_id)
            console.print(f"[{n}/{len(tasks)}] {task.instance_id}: failed: {exc.problem}", markup=False, highlight=False, soft_wrap=True)
            continue
        built = with_environment(task, env.image, env.source)
        with store.session() as session:  # one transaction per task: a kill keeps every task built so far
            row = session.get(TaskRow, task.instance_id)
            if row is not None:
                row.spec, row.image = built.model_dump(mode="json"), env.image
        console.print(f"[{n}/{len(tasks)}] {task.instance_id}: {env.image} ({env.source})", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise EnvfarmError(f"{len(failed)} of {len(tasks)} task(s) have no environment: {', '.join(failed[:5])}",
                           "see each task's line above for what every source lacked")


@app.command("validate")
def validate(
    ids: list[str] = typer.Argument(None, help="instance ids (default: every task in the store, or in --tasks)"),
    tasks_file: Optional[Path] = typer.Option(None, "--tasks", help="a dataset file or folder instead of the store"),
    fmt: str = typer.Option("auto", "--format", help="format of --tasks (as for `tasks import`)"),
    runs: int = typer.Option(1, "--runs", help="runs per patch (gold and empty); flaky gold patches show with 2 or more"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the validation report here (JSON)"),
    timeout: float = typer.Option(1800.0, "--timeout", help="seconds per test run"),
    backend: Optional[str] = typer.Option(None, "--backend", help="docker | kubernetes (default: the configured one)"),
    mirrors: Optional[Path] = MirrorsOpt, registry: str = RegistryOpt,
    wheelhouse: Optional[Path] = WheelhouseOpt, no_index: bool = NoIndexOpt,
) -> None:
    """Gold patch -> resolved, empty patch -> not, over --runs runs; infrastructure failures apart."""
    import json

    from envfarm.errors import EnvfarmError
    from envfarm.tasks.cli import check_output_path
    from envfarm.tasks.harness_eval import TaskImages, load_tasks, sandbox_runner
    from envfarm.tasks.harness_validate import GOLD_FAILS, INFRASTRUCTURE, validate_tasks, validation_report

    if runs < 1:
        raise EnvfarmError(f"--runs {runs} would run nothing", "pass --runs 1 or more")
    if backend not in (None, "docker", "kubernetes"):
        raise EnvfarmError(f"--backend {backend!r} is not a sandbox backend", "pass --backend docker or --backend kubernetes")
    check_output_path("--out", out, "validation.json")
    sources = env_sources(mirrors, registry, wheelhouse, no_index)
    if tasks_file is not None:
        tasks, _ = load_tasks(tasks_file, fmt)
        tasks = {k: v for k, v in tasks.items() if not ids or k in ids}
    else:
        tasks = _imported(list(ids or []))
    run = sandbox_runner(timeout, backend=backend, prepare=TaskImages(sources, backend).prepare, run_id="validate")

    def show(result) -> None:  # type: ignore[no-untyped-def]
        console.print(f"{result.instance_id}: {result.status} (gold {'/'.join(result.gold)}; empty {'/'.join(result.empty)})"
                      + (f": {result.reasons[0]}" if result.reasons and result.status != "valid" else ""), markup=False, highlight=False, soft_wrap=True)

    results = validate_tasks(tasks.values(), run, runs, on_progress=show)
    report = validation_report(results, runs)
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    counts = report["counts"]
    console.print(", ".join(f"{n} {k}" for k, n in counts.items()) + (f"; report: {out}" if out else ""), markup=False, highlight=False)
    if report["gold_patch_fails_ids"]:
        console.print("gold patch fails: " + " ".join(report["gold_patch_fails_ids"]), markup=False, highlight=False, soft_wrap=True)
    if counts[GOLD_FAILS] or counts[INFRASTRUCTURE] or counts["empty_passes"] or counts["gold_flaky"]:
        raise typer.Exit(1)
