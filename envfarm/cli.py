"""The `envfarm` command line. Every error is one line that names the fix; exit code 2 for user errors."""

from __future__ import annotations

import importlib
import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from envfarm.errors import EnvfarmError


@dataclass(frozen=True)
class Mount:
    """A stage's own sub-command app (`module.app`, a typer app), imported when that sub-command is used."""

    module: str
    help: str


# Every stage that brings sub-commands is listed here and must import: a mount that cannot load is an
# error naming the import failure when it is used, and "unavailable" in `envfarm --help`, never a
# silently missing command. Importing on first use keeps `envfarm gc` from loading the trainer.
MOUNTS: dict[str, Mount] = {
    "mine": Mount("envfarm.tasks.cli", "Mine verifiable tasks from GitHub issues and pull requests."),
    "train": Mount("envfarm.trainer.cli", "Launch an RL run."),
    "fleet": Mount("envfarm.fleet.cli", "Kubernetes fleet controller and tools."),
    "verify": Mount("envfarm.verifiers.cli", "Run verifiers on tasks and web apps."),
    "tasks": Mount("envfarm.tasks.import_cli", "Import tasks from SWE-bench-family datasets (SWE-bench, SWE-rebench, SWE-smith, ...), build and validate them."),
    "eval": Mount("envfarm.tasks.eval_cli", "Evaluate SWE-bench predictions: the harness's per-instance reports and run summary."),
    "rollout": Mount("envfarm.agent.rollout_cli", "Run an external model (OpenAI-compatible server) on tasks: K graded episodes each, trajectories as JSONL, pass@k."),
    "serve": Mount("envfarm.integrations.cli", "Serve tasks to other stacks: an OpenEnv environment server (needs the openenv extra)."),
}
_LOADED: dict[str, TyperCommand | TyperGroup] = {}


def load_mount(name: str, mount: Mount) -> TyperCommand | TyperGroup:
    """The mounted app as a click command, or EnvfarmError saying why it cannot be loaded."""
    try:
        module = importlib.import_module(mount.module)
    except Exception as exc:  # noqa: BLE001 - any import failure (missing dependency, syntax, bug) is reported the same way
        raise EnvfarmError(
            f"`envfarm {name}` is unavailable: importing {mount.module} failed ({type(exc).__name__}: {' '.join(str(exc).split())})",
            f"install what it needs (pip install -e .), or run python -c 'import {mount.module}' to see the traceback",
        ) from exc
    sub = getattr(module, "app", None)
    if not isinstance(sub, typer.Typer):
        raise EnvfarmError(
            f"`envfarm {name}` is unavailable: {mount.module} has no typer app named `app`",
            f"define `app = typer.Typer(...)` in {mount.module}",
        )
    command: TyperCommand | TyperGroup = typer.main.get_command(sub)  # type: ignore[assignment]  # typer builds only these
    command.name = name
    command.help = mount.help
    return command


class _RootGroup(TyperGroup):
    """The root command: its own commands plus the mounts, each loaded the first time it is asked for."""

    _listing = False

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return [*super().list_commands(ctx), *(n for n in MOUNTS if n not in self.commands)]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:  # type: ignore[override]
        mount = MOUNTS.get(cmd_name)
        if mount is None or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        if cmd_name not in _LOADED:
            try:
                _LOADED[cmd_name] = load_mount(cmd_name, mount)
            except EnvfarmError as exc:
                if not self._listing:
                    raise
                # Help still lists it, saying why it cannot run; running it raises the error above.
                return TyperCommand(cmd_name, help=exc.problem)
        return _LOADED[cmd_name]

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:  # type: ignore[override]
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(cls=_RootGroup, help="envfarm: real software work as RL environments.", no_args_is_help=True, add_completion=False)
images_app = typer.Typer(help="Base, env and instance images.", no_args_is_help=True)
app.add_typer(images_app, name="images")
console = Console()
err = Console(stderr=True)


def _client():  # type: ignore[no-untyped-def]
    from envfarm.engine import connect

    return connect()


@app.command()
def doctor() -> None:
    """Check engine, images, store, browser, Ray and tools; print what is missing and how to fix it."""
    from envfarm.doctor import run_checks

    checks = run_checks()
    table = Table("check", "status", "detail", "fix")
    for check in checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]missing[/]", check.detail, check.fix)
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@images_app.command("ls")
def images_ls() -> None:
    """List envfarm images (base, env, instance) in the engine."""
    client = _client()
    table = Table("tag", "kind", "name", "size MiB", "created")
    for image in client.images.list(filters={"label": "envfarm.io/kind"}):
        labels = image.labels or {}
        for tag in image.tags or ["<untagged>"]:
            table.add_row(tag, labels.get("envfarm.io/kind", ""), labels.get("envfarm.io/name", ""),
                          f"{(image.attrs.get('Size') or 0) / 2**20:.0f}", str(image.attrs.get("Created", ""))[:19])
    console.print(table)


@images_app.command("build")
def images_build(
    what: str = typer.Argument(..., help="'base', 'tooling' (a language's layer over a base), or a path to a recipe YAML file (kind, name, parent, steps, ...)"),
    suite: Optional[str] = typer.Option(None, help="Debian suite for the base image (bookworm, bullseye, trixie)"),
    language: str = typer.Option("javascript", help="for 'tooling': the language whose tooling layer to build (e.g. javascript: Debian's Node and npm)"),
) -> None:
    """Build an image unless its recipe hash is already built (a cache hit)."""
    if what == "base":
        from envfarm.images.base import build_base

        build_base(suite=suite, client=_client(), on_log=lambda line: console.print(line))
        return
    from envfarm.images.build import ensure_image

    if what == "tooling":
        from envfarm.config import base_image_for, settings
        from envfarm.tasks.envsetup import recipes_for

        recipe = recipes_for(language).tooling(base_image_for(suite or settings().debian_suite))
        result = ensure_image(recipe, _client(), on_log=lambda line: console.print(line, markup=False))
        console.print(f"{result.tag} ({'cache hit' if result.cached else f'built in {result.seconds:.1f}s'})")
        return
    from envfarm.images.loader import load_recipe

    result = ensure_image(load_recipe(what), _client(), on_log=lambda line: console.print(line, markup=False))
    console.print(f"{result.tag} ({'cache hit' if result.cached else f'built in {result.seconds:.1f}s'})")


@images_app.command("has-base")
def images_has_base() -> None:
    """Exit 0 if the base image for the configured suite exists (used by make setup)."""
    from envfarm.images.base import has_base

    raise typer.Exit(0 if has_base(_client()) else 1)


@images_app.command("prune")
def images_prune(
    all_: bool = typer.Option(False, "--all", help="also remove images still referenced by tasks and the base"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    name: str = typer.Option("", "--name", help="only images whose recipe name starts with this (e.g. a repository slug)"),
) -> None:
    """Remove envfarm env/instance images that no task in the store references (base images stay unless --all)."""
    from envfarm.images.prune import prune

    removed = prune(_client(), _store(), remove_all=all_, dry_run=dry_run, name_prefix=name)
    for tag in removed:
        console.print(("would remove " if dry_run else "removed ") + tag)
    console.print(f"{len(removed)} image(s) {'to remove' if dry_run else 'removed'}")


def _store():  # type: ignore[no-untyped-def]
    from envfarm.store.db import open_store

    return open_store()


@app.command()
def gc(
    all_: bool = typer.Option(False, "--all", help="remove every envfarm container, owned or not"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only list what would be removed"),
) -> None:
    """Remove containers whose run is finished, failed, or whose owner process is dead."""
    from envfarm.sandbox.gc import collect

    report = collect(_client(), None if all_ else _store(), remove_all=all_, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    console.print(f"examined {report.examined} container(s), {verb} {len(report.removed)}, kept {report.kept}")


# The Docker reference grammar ([registry[:port]/]path[:tag][@digest], lowercase path components), or an id.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"(?:sha256:)?[0-9a-f]{{12,64}}"
    rf"|(?:(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::[0-9]+)?/|[A-Za-z0-9-]+:[0-9]+/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)


@app.command("exec")
def exec_(
    image: str = typer.Argument(..., help="image to start, e.g. envfarm/base:bookworm"),
    command: str = typer.Argument(..., help="shell command to run in the sandbox"),
    timeout: float = typer.Option(60.0, help="seconds before the command's process tree is killed"),
) -> None:
    """Run one command in a fresh sandbox and print its output (exit code is the command's)."""
    from envfarm import sandbox as sandboxes
    from envfarm.sandbox.protocol import MAX_TIMEOUT

    # Checked before a container exists: the sandbox's own check would refuse it only after starting one.
    if not math.isfinite(timeout) or timeout <= 0 or timeout > MAX_TIMEOUT:
        raise EnvfarmError(f"--timeout {timeout:g} is not a number of seconds in (0, {MAX_TIMEOUT:g}]",
                           "pass a finite positive timeout, e.g. --timeout 60")
    if not command.strip():
        raise EnvfarmError("the command to run is empty", "pass a shell command, e.g. envfarm exec IMAGE 'echo hi'")
    if not IMAGE_REFERENCE.fullmatch(image):
        # The engine's answer to this is a 500 that reads like an engine fault.
        raise EnvfarmError(f"IMAGE {image!r} is not an image name", "pass a name like envfarm/base:bookworm or an image id (envfarm images ls)")
    with sandboxes.open(image, run_id="adhoc") as sandbox:
        result = sandbox.exec(command, timeout=timeout)
    sys.stdout.write(result.output)
    raise typer.Exit(result.exit_code)


@app.command()
def demo(command: str = typer.Option("python3 -c 'import platform; print(platform.platform())'", help="command to run")) -> None:
    """The main job on the embedded defaults."""
    from envfarm.demo import run_demo

    run_demo(command, console)


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run the CLI on `argv` (default: the process's arguments); exits with the command's code."""
    try:
        # Without standalone mode click returns a command's exit code instead of exiting with it.
        code = app(args=argv, prog_name=prog_name, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except EnvfarmError as exc:
        sys.stderr.write(f"envfarm: error: {exc.line()}\n")  # one unwrapped line, for people and for grep
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (typer's own click): its message, without a traceback
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            sys.stderr.write(f"envfarm: error: {exc.format_message()}\n")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
