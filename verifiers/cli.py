"""`envfarm verify`: run a verifier by hand, outside the RL loop, to see what it rewards and why.

`envfarm verify web APP [SCRIPT]` is the one implementation (no SCRIPT: the page is explored); `python -m envfarm.verifiers.web APP SCRIPT`
is an alias that runs this same command. `envfarm verify cdn-prefetch PKG@RANGE ...` fills the offline
CDN shim's cache, for machines that cannot reach the npm registry while they verify.
"""

from __future__ import annotations

import json
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
    script: Optional[Path] = typer.Argument(None, metavar="[SCRIPT]", help="interaction script (.yaml or .json); without one the page is explored"),
    rubric: Optional[list[str]] = typer.Option(None, "--rubric", help="with no SCRIPT: a required behaviour in plain words (repeatable)"),
    out: Optional[Path] = typer.Option(None, "--out", help="evidence folder (default: a new temp folder)"),
    command: Optional[str] = typer.Option(None, "--command", help="start command instead of static serving ({port} or $PORT)"),
    judge_weight: float = typer.Option(0.0, "--judge-weight", help="blend in the judge (needs ENVFARM_JUDGE_URL)"),
    gate: str = typer.Option("render", "--gate", help="reward gate: render (0 when the page did not render) | executability | none"),
) -> None:
    """Verify one web app: serve it, drive it with the script (or, with none, explore it like a careful
    user: every control tried, errors, blank page, layout, animation, the --rubric's behaviours), record
    and score it.

    Prints the reward as JSON on stdout and the HTML report's path on stderr; exits 0 if it passed, 1 if not.
    """
    from envfarm.errors import EnvfarmError
    from envfarm.verifiers.web.blend import RewardBlend
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
    verifier = WebVerifier(judge=JudgeClient.from_env(), blend=RewardBlend(judge_weight, gate))
    if script is None:
        reward = verifier.explore_app(served, list(rubric or []), out)
    else:
        if rubric:
            raise EnvfarmError("--rubric is for exploring a page with no SCRIPT", "put the rubric in the script's `rubric:` field, or drop SCRIPT")
        reward = verifier.verify_app(served, script, out)
    sys.stdout.write(reward.to_json() + "\n")
    sys.stderr.write(f"report: {reward.evidence.get('report_html', '(none)')}\n")
    raise typer.Exit(0 if reward.passed else 1)


@app.command("cdn-prefetch")
def cdn_prefetch(
    packages: list[str] = typer.Argument(..., metavar="PKG@RANGE...", help="npm packages as a page names them: three, three@0.160.0, three@^0.160, @scope/pkg@latest"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="cache folder (default: ENVFARM_HOME/cdn, where verification looks)"),
    registry: Optional[str] = typer.Option(None, "--registry", help="npm registry (default: ENVFARM_NPM_REGISTRY, else the public one)"),
    deps: bool = typer.Option(False, "--deps", help="also fetch their dependencies (what esm.sh-style imports reach), recursively"),
) -> None:
    """Fetch npm packages into the offline CDN shim's cache, with the metadata that resolves them later.

    Copy the cache folder to machines without the registry; pages there import these packages from
    unpkg, jsDelivr, esm.sh, Skypack or cdnjs as if online. Prints one line per package fetched.
    """
    from envfarm.verifiers.web.npm import NpmCache, split_spec

    store = NpmCache(cache, registry)
    todo = [split_spec(p) for p in packages]
    seen: set[tuple[str, str]] = set()
    while todo:
        name, spec = todo.pop(0)
        if (name, spec) in seen:
            continue
        seen.add((name, spec))
        version, folder = store.prefetch(name, spec)
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        sys.stdout.write(f"{name}@{spec or 'latest'} -> {version} ({files} files) in {store.root}\n")
        if deps:
            manifest = folder / "package.json"
            wanted = json.loads(manifest.read_text()).get("dependencies", {}) if manifest.is_file() else {}
            todo += [(dep, rng) for dep, rng in sorted(wanted.items())]
