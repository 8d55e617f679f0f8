"""What the integrations cost: the OpenEnv server against calling the sandbox directly, and the tool-calling driver.

    make bench-ecosystem          # -> bench/results/ecosystem.json

1. OpenEnv (`envfarm serve openenv`'s app, uvicorn in this process on loopback, openenv-core's own client):
   an episode is reset (a fresh sandbox) + STEPS bash calls + the session closed (sandbox released); the same
   episode run directly is `envfarm.sandbox.open` + STEPS `exec` + `close`. With 1 and 8 concurrent sessions:
   episodes/minute each way, and the median per-step overhead = median step time through the server minus the
   median direct `exec` time of the same command measured in the same run. Grading is left out of both (it is
   the same verifier run either way and would hide the server's cost).
2. Tool-calling driver: `OpenAIChatPolicy` + the chat episode loop against the scripted OpenAI-compatible server
   on 127.0.0.1 (the tests' server: it answers at once, so what is measured is envfarm's side: request building,
   HTTP, parsing, validation, bookkeeping), per turn, minus the direct `exec` time of the turn's command.

Timings are medians; the machine's load is measured at the start and the end (bench.common).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

from bench.common import machine_load, machine_notes, write_results

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5
COMMAND = "true"


def _calc_task():  # type: ignore[no-untyped-def]
    """The scaffold tests' calc task on its image (built once, cached by recipe hash)."""
    sys.path.insert(0, str(ROOT / "tests" / "trainer" / "rl"))
    from test_rl_agent import BASE_FILES, GOLD_PATCH, TEST_PATCH

    from envfarm.config import settings
    from envfarm.engine import connect
    from envfarm.images.build import ensure_image
    from envfarm.images.recipe import ImageRecipe
    from envfarm.task import InstallConfig, TaskSpec

    client = connect()
    files = tuple((f"/testbed/{p}", c.encode()) for p, c in BASE_FILES.items())
    recipe = ImageRecipe(kind="instance", name="envfarm-rl-calc", parent=settings().base_image, files=files,
                         steps=("cd /testbed && git init -q && git add -A && git -c user.email=t@e -c user.name=t "
                                "commit -qm base && chown -R 1000:1000 /testbed",), workdir="/testbed", user="1000")
    image = ensure_image(recipe, client).tag
    return TaskSpec(instance_id="envfarm__calc-1", repo="envfarm/calc", patch=GOLD_PATCH, test_patch=TEST_PATCH,
                    problem_statement="add(2, 3) returns -1 instead of 5.", image=image,
                    FAIL_TO_PASS=["test_add (tests.test_calc.TestCalc)"], PASS_TO_PASS=["test_mul (tests.test_calc.TestCalc)"],
                    install=InstallConfig(test_cmd="python3 -m unittest -v tests.test_calc", log_parser="unittest"))


def direct_episodes(task, sessions: int, run_id: str) -> dict:  # type: ignore[no-untyped-def]
    from envfarm import sandbox as sandboxes

    steps: list[float] = []

    def episode() -> None:
        with sandboxes.open(task.image, run_id=run_id, task_id=task.instance_id) as box:
            for _ in range(STEPS):
                t0 = time.perf_counter()
                box.exec(COMMAND, timeout=60, workdir=task.workdir)
                steps.append(time.perf_counter() - t0)

    started = time.perf_counter()
    threads = [threading.Thread(target=episode) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"sessions": sessions, "episodes": sessions, "wall_s": round(wall, 3),
            "episodes_per_minute": round(60 * sessions / wall, 2), "median_step_ms": round(1000 * statistics.median(steps), 2)}


def openenv_episodes(url: str, sessions: int) -> dict:
    from envfarm.integrations.openenv.client import EnvfarmAction, EnvfarmEnv

    steps: list[float] = []

    async def episode() -> None:
        async with EnvfarmEnv(base_url=url, message_timeout_s=600) as env:
            await env.reset(seed=0)
            for _ in range(STEPS):
                t0 = time.perf_counter()
                await env.step(EnvfarmAction(tool_name="bash", arguments={"command": COMMAND}))
                steps.append(time.perf_counter() - t0)

    async def all_sessions() -> None:
        await asyncio.gather(*(episode() for _ in range(sessions)))

    started = time.perf_counter()
    asyncio.run(all_sessions())
    wall = time.perf_counter() - started
    return {"sessions": sessions, "episodes": sessions, "wall_s": round(wall, 3),
            "episodes_per_minute": round(60 * sessions / wall, 2), "median_step_ms": round(1000 * statistics.median(steps), 2)}


def serve(task, run_id: str, sessions: int):  # type: ignore[no-untyped-def]
    import socket

    import uvicorn

    from envfarm import sandbox as sandboxes
    from envfarm.integrations.openenv.server import ServerConfig, build_app

    config = ServerConfig([task], lambda t: sandboxes.open(t.image, run_id=run_id, task_id=t.instance_id))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(config, max_sessions=sessions), host="127.0.0.1", port=port,
                                           log_level="warning", ws_ping_interval=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def driver_overhead(task, run_id: str, turns: int = 10) -> dict:  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "tests" / "agent"))
    from scripted_openai_server import ScriptedOpenAIServer

    from envfarm import sandbox as sandboxes
    from envfarm.agent.chat import run_chat_episode
    from envfarm.agent.episode import EpisodeLimits
    from envfarm.agent.openai_chat import OpenAIChatPolicy

    with ScriptedOpenAIServer({"loop": [[("bash", {"command": COMMAND})]]}) as server, \
            sandboxes.open(task.image, run_id=run_id, task_id=task.instance_id) as box:
        direct = []
        for _ in range(turns):
            t0 = time.perf_counter()
            box.exec(COMMAND, timeout=60, workdir=task.workdir)
            direct.append(time.perf_counter() - t0)
        policy = OpenAIChatPolicy(server.url, "loop", backoff_s=0)
        t0 = time.perf_counter()
        transcript = run_chat_episode(policy, task, box, EpisodeLimits(max_steps=turns))
        per_turn = (time.perf_counter() - t0) / max(transcript.steps, 1)  # includes the final patch collection once
    return {"turns": transcript.steps, "per_turn_ms": round(1000 * per_turn, 2),
            "direct_exec_median_ms": round(1000 * statistics.median(direct), 2),
            "driver_overhead_per_turn_ms": round(1000 * (per_turn - statistics.median(direct)), 2)}


def main() -> None:
    load_at_start = machine_load()
    task = _calc_task()
    run_id = f"bench-ecosystem-{int(time.time())}"
    direct_episodes(task, 1, run_id)  # warm-up, not counted: the first sandbox of an image probes it once
    openenv_rows = []
    for sessions in (1, 8):
        direct = direct_episodes(task, sessions, run_id)
        server, thread, url = serve(task, run_id, sessions)
        try:
            through = openenv_episodes(url, sessions)
        finally:
            server.should_exit = True
            thread.join(60)
        openenv_rows.append({"sessions": sessions, "direct": direct, "openenv": through,
                             "median_step_overhead_ms": round(through["median_step_ms"] - direct["median_step_ms"], 2),
                             "episodes_per_minute_ratio": round(through["episodes_per_minute"] / direct["episodes_per_minute"], 3)})
        print(openenv_rows[-1], flush=True)
    driver = driver_overhead(task, run_id)
    print(driver, flush=True)
    path = write_results("ecosystem", {
        "episode": f"reset (fresh sandbox) + {STEPS} x bash {COMMAND!r} + close; no grading",
        "openenv": openenv_rows, "tool_calling_driver": driver, "machine": machine_notes(load_at_start)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
