"""The foundation's main job: base image, one sandbox, one command, the run recorded in the store.

Later stages replace the body of `make demo` with the RL loop; this stays as `envfarm demo` to show the
core works end to end on a fresh machine.
"""

from __future__ import annotations

from rich.console import Console

from envfarm.config import settings
from envfarm.engine import connect
from envfarm.images.base import build_base, has_base
from envfarm.runs import run_scope, sandbox_event_recorder
from envfarm import sandbox as sandboxes
from envfarm.store.db import open_store, redact


def run_demo(command: str, console: Console) -> dict:
    client = connect()
    if not has_base(client):
        build_base(client=client, on_log=console.print)
    store = open_store()
    image = settings().base_image
    with run_scope(store, "demo", {"command": command, "image": image}) as run:
        # The foundation's demo is the local engine by definition (it builds the base image on it first).
        with sandboxes.open(image, run_id=run.id, backend="docker", client=client,
                            on_event=sandbox_event_recorder(store, run.id)) as sandbox:
            result = sandbox.exec(command, timeout=60)
        run.summary = {"sandbox": sandbox.id, "exit_code": result.exit_code, "seconds": round(result.duration, 3), "output": result.output[-2000:]}
    console.print(f"[bold]run[/] {run.id} recorded in {redact(store.url)}")
    console.print(f"[bold]sandbox[/] {sandbox.id} on {image}: exit {result.exit_code} in {result.duration:.2f}s")
    console.print(result.output.rstrip(), markup=False)
    return run.summary
