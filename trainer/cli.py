"""`envfarm train`: launch (or resume) an RL run from a YAML config plus key=value overrides."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup


class _OverridesGroup(TyperGroup):
    """`envfarm train` has no sub-commands: every leftover argument is a key=value override, which a
    plain group would try to resolve as a sub-command name."""

    allow_interspersed_args = True  # options may follow the overrides

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        rest = super().parse_args(ctx, args)
        ctx.args = [*ctx._protected_args, *ctx.args]  # noqa: SLF001 - click keeps the first leftover here
        ctx._protected_args = []  # noqa: SLF001
        return rest


app = typer.Typer(cls=_OverridesGroup, help="Launch an RL run (GRPO/MOPD on the reward stream, rollout workers on Ray).",
                  add_completion=False)
console = Console()


@app.callback(invoke_without_command=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    config: Path = typer.Option(Path("trainer/configs/demo.yaml"), "--config", "-c", help="run config (YAML)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override, e.g. --set train.steps=10 (repeatable)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and print the config, start nothing"),
) -> None:
    """Train. Extra arguments of the form key=value override the config (train.steps=10 algo.lr=1e-4)."""
    if ctx.invoked_subcommand is not None:
        return
    from envfarm.trainer.loop.config import load_config

    cfg = load_config(config, [*(set_ or []), *ctx.args])
    if dry_run:
        console.print_json(cfg.model_dump_json())
        return
    from envfarm.trainer.loop.run import train as run_train

    summary = run_train(cfg, console)
    console.print_json(data={k: v for k, v in summary.items() if k not in ("stream", "calls")})
