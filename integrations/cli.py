"""`envfarm serve`: envfarm tasks behind the protocols other stacks speak.

    envfarm serve openenv --tasks tasks.jsonl --port 8000 --max-sessions 8

`openenv` serves the tasks as an OpenEnv environment (openenv-core's server: HTTP, `/ws` sessions, schema,
state) until interrupted. The server registers itself as a run in the store, so `envfarm gc` keeps its
sandboxes while it lives and removes them if it was killed; on a normal stop every open session's sandbox is
closed. The third-party package is imported only when the command runs, so `envfarm --help` and the core
work without the extra.
"""

from __future__ import annotations

import uuid
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(help="Serve envfarm tasks to other stacks (OpenEnv).", add_completion=False, no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # the start line stays one line (logs, tests read the run id)


@app.callback()
def serve() -> None:
    """Serve envfarm tasks to other stacks."""


@app.command("openenv")
def openenv(
    tasks: List[str] = typer.Option(..., "--tasks", help="JSONL file of TaskSpec rows, or instance ids (comma separated) from the store; repeatable"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    max_sessions: int = typer.Option(8, "--max-sessions", min=1, help="concurrent WebSocket sessions (each holds one sandbox)"),
    idle_timeout: float = typer.Option(900.0, "--idle-timeout", min=1.0, help="seconds an episode keeps its sandbox without a call"),
    max_steps: int = typer.Option(30, "--max-steps", min=1, help="tool calls per episode"),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="wall clock per episode (default: no limit)"),
    command_timeout: float = typer.Option(120.0, "--command-timeout", help="seconds per tool command"),
    test_timeout: float = typer.Option(1800.0, "--test-timeout", help="seconds for the verifier's test run"),
    db: Optional[str] = typer.Option(None, "--db", help="store URL (instance ids, the server's run record); default ENVFARM_DB_URL"),
) -> None:
    """Serve the tasks as an OpenEnv environment: reset -> prompt + fresh sandbox, step(tool call) -> observation."""
    from envfarm.agent.episode import EpisodeLimits
    from envfarm.agent.task_source import load_tasks
    from envfarm.integrations.extras import require

    require("openenv")
    import uvicorn

    from envfarm import sandbox as sandboxes
    from envfarm.integrations.openenv.server import ServerConfig, build_app
    from envfarm.runs import run_scope
    from envfarm.store.db import open_store
    from envfarm.verifiers.swe import SweVerifier

    limits = EpisodeLimits(max_steps=max_steps, command_timeout=command_timeout, max_seconds=max_seconds)
    task_list = load_tasks(tasks, db)
    run_id = f"openenv-{uuid.uuid4().hex[:12]}"
    config = ServerConfig(task_list, lambda t: sandboxes.open(t.image, run_id=run_id, task_id=t.instance_id),
                          limits, SweVerifier(timeout=test_timeout), idle_timeout=idle_timeout)
    server_app = build_app(config, max_sessions=max_sessions)
    store = open_store(db)
    with run_scope(store, "openenv", {"tasks": len(task_list), "max_sessions": max_sessions, "port": port}, run_id=run_id):
        console.print(f"serving {len(task_list)} task(s) as OpenEnv on http://{host}:{port} (WebSocket /ws, "
                      f"{max_sessions} session(s) at most), run {run_id}", markup=False, highlight=False)
        try:
            uvicorn.run(server_app, host=host, port=port, log_level="warning")
        finally:
            config.close_all()
