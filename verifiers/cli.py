"""`envfarm verify`: run a verifier by hand, outside the RL loop, to see what it rewards and why.

`envfarm verify web APP SCRIPT` is the one implementation; `python -m envfarm.verifiers.web APP SCRIPT`
is an alias that runs this same command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Run verifiers on tasks and web apps.", no_args_is_help=True, add_completion=False)


@app.callback()
def verify() -> None:
    """Run verifiers on tasks and web apps."""  # a callback keeps `web` a sub-command (typer collapses a lone command)


@app.command()
def web(
    app_dir: Path = typer.Argument(..., metavar="APP", help="folder with index.html (or the app's root with --command)"),
    script: Path = typer.Argument(..., metavar="SCRIPT", help="interaction script (.yaml or .json)"),
    out: Optional[Path] = typer.Option(None, "--out", help="evidence folder (default: a new temp folder)"),
    command: Optional[str] = typer.Option(None, "--command", help="start command instead of static serving ({port} or $PORT)"),
    judge_weight: float = typer.Option(0.0, "--judge-weight", help="blend in the judge (needs ENVFARM_JUDGE_URL)"),
) -> None:
    """Verify one web app: serve it, drive it with the script, record and score it.

    Prints the reward as JSON on stdout and the HTML report's path on stderr; exits 0 if it passed, 1 if not.
    """
    from envfarm.errors import EnvfarmError
    from envfarm.verifiers.web.judge import JudgeClient
    from envfarm.verifiers.web.verifier import WebVerifier

    # Paths are checked before a browser starts, each naming the argument to change.
    if app_dir.exists() and not app_dir.is_dir():
        raise EnvfarmError(f"APP {app_dir} is a file, not a folder", "pass the folder holding index.html (or the app's root with --command)")
    if out is not None:
        existing = next((p for p in (out, *out.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise EnvfarmError(f"--out {out}: {existing} is a file, not a folder", "pass a new or existing folder for the evidence, or omit --out")
    served = {"root": str(app_dir), **({"command": command} if command else {})}
    reward = WebVerifier(judge=JudgeClient.from_env(), judge_weight=judge_weight).verify_app(served, script, out)
    sys.stdout.write(reward.to_json() + "\n")
    sys.stderr.write(f"report: {reward.evidence.get('report_html', '(none)')}\n")
    raise typer.Exit(0 if reward.passed else 1)
