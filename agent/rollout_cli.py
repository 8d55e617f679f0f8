"""`envfarm rollout`: K graded episodes per task from an external model, written as trajectories (pass@k).

    envfarm rollout --tasks tasks.jsonl --model http://localhost:8000/v1 --model-name Qwen/Qwen3-8B --n 4

Tasks come from the store by instance id (`--tasks owner__repo-1,owner__repo-2`) or from a JSONL file of
TaskSpec rows (`--tasks file.jsonl`); `--tasks` may repeat. Each episode runs the scaffold against the model
(`OpenAIChatPolicy`) in a sandbox from `envfarm.sandbox.open` (backend from ENVFARM_SANDBOX_BACKEND) and is
graded in a fresh one by `SweVerifier` (`swe_rollout`). Lines go to `--out` as they finish; a re-run skips
the (task, k) pairs already there. Episodes that failed for infrastructure reasons (model server down, a
sandbox that kept dying, a missing image) are reported and not written, so the next run retries them.

Why here, in the scaffold package `envfarm.agent`: it is the scaffold's own driver (episode, tools, SWE
rollout) with an external policy, and needs nothing from the trainer. It imports neither torch nor the
model, so `envfarm rollout` starts fast on a machine without a GPU.
"""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from envfarm.agent.task_source import load_tasks
from envfarm.errors import EnvfarmError
from envfarm.task import TaskSpec

app = typer.Typer(help="Run an external model on tasks: K graded episodes each, trajectories as JSONL.",
                  add_completion=False)
console = Console()


def base_url(model: str) -> str:
    """The server's /v1 base: `http://host:8000` and `http://host:8000/v1/` both give `http://host:8000/v1`."""
    url = model.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EnvfarmError(f"--model {model!r} is not an http(s) URL", "pass the server's base URL, e.g. --model http://localhost:8000/v1")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


def _extra_body(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        value = exc
    if not isinstance(value, dict):
        raise EnvfarmError(f"--extra-body {text!r} is not a JSON object", """pass e.g. --extra-body '{"top_p": 0.95}'""")
    reserved = sorted({"model", "messages", "tools", "tool_choice"} & set(value))
    if reserved:
        raise EnvfarmError(f"--extra-body sets {', '.join(reserved)}, which envfarm rollout sends itself",
                           "use --model-name / --tool-mode instead")
    return value


@app.command()
def rollout(
    tasks: List[str] = typer.Option(..., "--tasks", help="JSONL file of TaskSpec rows, or instance ids (comma separated) from the store; repeatable"),
    model: str = typer.Option(..., "--model", help="base URL of an OpenAI-compatible server, e.g. http://localhost:8000/v1"),
    model_name: str = typer.Option(..., "--model-name", help="model name the server serves (the request's `model`)"),
    n: int = typer.Option(1, "--n", min=1, help="episodes per task (pass@k up to k=n)"),
    out: Path = typer.Option(Path("trajectories.jsonl"), "--out", help="trajectory file (JSONL); appended to, resumed from"),
    parallel: int = typer.Option(1, "--parallel", min=1, max=256, help="episodes run at once"),
    tool_mode: str = typer.Option("auto", "--tool-mode", help="native (function calling), text (<tool_call> protocol), or auto"),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    max_steps: int = typer.Option(30, "--max-steps", min=1, help="model turns per episode"),
    max_tokens: int = typer.Option(16_384, "--max-tokens", min=1, help="generated tokens per episode"),
    max_tokens_per_turn: int = typer.Option(4096, "--max-tokens-per-turn", min=1),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="wall clock per episode (default: no limit)"),
    command_timeout: float = typer.Option(120.0, "--command-timeout", help="seconds per tool command"),
    test_timeout: float = typer.Option(1800.0, "--test-timeout", help="seconds for the verifier's test run"),
    retries: int = typer.Option(6, "--retries", min=0, help="repeats of a request after 429/5xx or a dropped connection"),
    request_timeout: float = typer.Option(600.0, "--request-timeout", help="seconds per model request"),
    db: Optional[str] = typer.Option(None, "--db", help="store URL for instance ids (default ENVFARM_DB_URL)"),
    extra_body: str = typer.Option("{}", "--extra-body", help='JSON object merged into every request, e.g. \'{"top_p": 0.95}\''),
) -> None:
    """Run K episodes per task against the model, grade them, and write trajectories; prints pass@k."""
    import httpx

    from envfarm import sandbox as sandboxes
    from envfarm.agent.episode import EpisodeLimits
    from envfarm.agent.openai_chat import OpenAIChatPolicy
    from envfarm.agent.swe import swe_rollout
    from envfarm.agent.trajectories import TrajectoryFile, summarize, trajectory_row
    from envfarm.verifiers.swe import SweVerifier

    url = base_url(model)
    extra = _extra_body(extra_body)
    if tool_mode not in ("auto", "native", "text"):
        raise EnvfarmError(f"--tool-mode {tool_mode!r} is not auto, native or text", "pass --tool-mode auto")
    limits = EpisodeLimits(max_steps=max_steps, max_tokens=max_tokens, command_timeout=command_timeout, max_seconds=max_seconds)
    task_list = load_tasks(tasks, db)
    file = TrajectoryFile(out)
    opened = file.open()
    if opened.dropped_bytes:
        console.print(f"[yellow]dropped a partial last line ({opened.dropped_bytes} bytes) from {out}: that episode runs again[/]")
    if opened.unreadable_lines:
        console.print(f"[yellow]{opened.unreadable_lines} line(s) of {out} are not trajectories; ignored[/]")
    others = sorted({str(r.get("model")) for r in file.rows()} - {model_name})
    if others:  # resume keys on (task, k): another model's lines would be taken for this one's
        raise EnvfarmError(f"{out} holds trajectories of another model ({', '.join(others[:3])})",
                           "pass a new --out for each model (or the same --model-name to resume that run)")
    todo = [(t, k) for t in task_list for k in range(n) if (t.instance_id, k) not in opened.done]
    console.print(f"{len(task_list)} task(s) x {n}: {len(task_list) * n - len(todo)} already in {out}, {len(todo)} to run")

    api_key = os.environ.get("OPENAI_API_KEY") or None  # read from the environment only: never an argument, never logged
    client = httpx.Client(timeout=request_timeout, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    verifier = SweVerifier(timeout=test_timeout)
    run_id = f"rollout-{uuid.uuid4().hex[:12]}"
    failed: list[str] = []

    def one(task: TaskSpec, k: int) -> dict[str, Any] | None:
        policy = lambda: OpenAIChatPolicy(url, model_name, tool_mode=tool_mode, temperature=temperature,  # noqa: E731 - a factory per episode
                                          max_tokens_per_turn=max_tokens_per_turn, retries=retries, client=client,
                                          extra_body=extra)
        make_sandbox = lambda t: sandboxes.open(t.image, run_id=run_id, task_id=t.instance_id)  # noqa: E731 - as above
        transcript, reward = swe_rollout(task, policy, make_sandbox, limits=limits, verifier=verifier)
        if reward.details.get("failure_class") == "infrastructure":
            failed.append(f"{task.instance_id} k={k}: {reward.details.get('reason', '')}"[:300])
            return None
        row = trajectory_row(task.instance_id, k, uuid.uuid4().hex, model_name, transcript, reward)
        file.append(row)
        return row

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"))
    passed = 0
    try:
        with Progress(*columns, console=console) as progress, ThreadPoolExecutor(max_workers=parallel) as pool:
            bar = progress.add_task("episodes", total=len(todo), stats="")
            futures: list[Future] = [pool.submit(one, t, k) for t, k in todo]
            try:
                for future in futures:
                    row = future.result()
                    passed += int(bool(row and row["passed"]))
                    progress.update(bar, advance=1, stats=f"passed {passed}, infrastructure failures {len(failed)}")
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                console.print("[yellow]interrupted: waiting for running episodes to close their sandboxes; re-run to resume[/]")
                raise
    finally:
        client.close()
    summary = summarize(file.rows(), [t.instance_id for t in task_list], n)
    table = Table("tasks", "complete", "samples", *(k for k in summary if k.startswith("pass@")))
    table.add_row(str(summary["tasks"]), str(summary["complete_tasks"]), str(summary["samples"]),
                  *(f"{v:.3f}" for k, v in summary.items() if k.startswith("pass@")))
    console.print(table)
    if failed:
        for line in failed[:10]:
            console.print(f"not written: {line}", markup=False, highlight=False)
        console.print(f"{len(failed)} episode(s) failed for infrastructure reasons and were not written; re-run to retry them")
        raise typer.Exit(1)
