"""envfarm tasks as an OpenEnv environment, served by openenv-core's own `create_app`.

openenv-core provides the HTTP routes (`/reset`, `/step`, `/state`, `/schema`, `/health`, `/metadata`), the
WebSocket session endpoint (`/ws`: one environment instance per connection), the per-server session limit
(`max_concurrent_envs`: a client over the limit gets openenv's CAPACITY_REACHED error) and the idle-session
reaper (`session_timeout`). envfarm provides the environment behind them:

- `reset(task_id=..., seed=...)` closes the session's previous episode, opens a fresh sandbox on the task's
  image (`envfarm.sandbox.open`, so Podman/Docker or Kubernetes by configuration) and returns the prompt and
  the tool definitions. Without `task_id`, `seed` picks `tasks[seed % n]`; without either, tasks rotate.
- `step(EnvfarmAction)` is one tool call through the scaffold's `ToolSession` (checked against the tool table,
  per-command timeout, clipped output, step and wall-clock limits). `finish`, or a limit, ends the episode:
  the patch is collected, the sandbox closed, the patch graded in a fresh sandbox by envfarm's SWE verifier,
  and the reward returned with `done=True`.
- `close()` (openenv calls it when a WebSocket closes or drops; uvicorn's pings find a peer that vanished)
  releases the sandbox. An episode idle for `idle_timeout` seconds (no call in flight, none for that long)
  loses its sandbox too; its next step says the episode is over. envfarm's own reaper does this rather than
  openenv-core's `session_timeout`, which counts a session as idle while a step runs, and a step here may be
  a grading test run of many minutes (measured: the calc task's finish took over 20 s on a loaded 2-core
  machine, and openenv's reaper closed the episode under it). Every sandbox a server opens is also closed
  when the server shuts down, and carries the server's run id label, so `envfarm gc` removes what a killed
  server left.

Plain HTTP `/reset` and `/step` are stateless in openenv-core (a new environment per request): a `/step`
without a session gets an error observation telling the client to use the WebSocket session.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import ConcurrencyConfig, EnvironmentMetadata

from envfarm.agent.episode import EpisodeLimits
from envfarm.agent.protocol import tool_schemas
from envfarm.agent.session import Outcome, ToolSession
from envfarm.agent.swe import SandboxFactory
from envfarm.errors import EnvfarmError
from envfarm.integrations.openenv.models import EnvfarmAction, EnvfarmObservation, EnvfarmState
from envfarm.task import TaskSpec
from envfarm.verifiers.swe import SweVerifier


@dataclass
class ServerConfig:
    """What every session of one server shares: the tasks, how sandboxes are opened, limits and verifier."""

    tasks: list[TaskSpec]
    make_sandbox: SandboxFactory
    limits: EpisodeLimits = field(default_factory=EpisodeLimits)
    verifier: SweVerifier = field(default_factory=SweVerifier)
    idle_timeout: float | None = 900.0  # seconds an episode keeps its sandbox without a call; None: forever
    live: set["EnvfarmEnvironment"] = field(default_factory=set)  # environments with an open session
    _rotation: Any = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise EnvfarmError("the OpenEnv server has no task to serve", "pass --tasks with a JSONL file or instance ids")
        self.by_id = {t.instance_id: t for t in self.tasks}

    def pick(self, task_id: str | None, seed: int | None) -> TaskSpec:
        if task_id:
            if task_id not in self.by_id:
                raise EnvfarmError(f"task {task_id!r} is not served here",
                                   f"reset with one of {sorted(self.by_id)[:5]} or no task_id")
            return self.by_id[task_id]
        if seed is not None:
            return self.tasks[seed % len(self.tasks)]
        with self._lock:
            return self.tasks[next(self._rotation) % len(self.tasks)]

    def reap_idle(self, now: float) -> int:
        """Close the episodes idle past `idle_timeout`; how many were closed."""
        if self.idle_timeout is None:
            return 0
        with self._lock:
            idle = [env for env in self.live if not env.busy and now - env.last_active > self.idle_timeout]
        for env in idle:
            env.close(f"idle for over {self.idle_timeout:.0f}s, its sandbox was released")
        return len(idle)

    def close_all(self) -> None:
        """Release every open session's sandbox (the server is shutting down)."""
        with self._lock:
            live, self.live = list(self.live), set()
        for env in live:
            env.close()


class EnvfarmEnvironment(Environment[EnvfarmAction, EnvfarmObservation, EnvfarmState]):
    """One OpenEnv session: at most one episode (one sandbox) at a time, nothing shared with other sessions."""

    SUPPORTS_CONCURRENT_SESSIONS = True  # every session has its own ToolSession and sandbox

    def __init__(self, config: ServerConfig) -> None:
        super().__init__()
        self.config = config
        self.session: ToolSession | None = None
        self._state = EnvfarmState()
        self.ended = ""  # why the last episode was closed before it finished
        self.busy = False  # a step is running (never reaped then)
        self.last_active = time.monotonic()

    def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None, task_id: Optional[str] = None,
              **kwargs: Any) -> EnvfarmObservation:
        self.close()
        self.ended = ""
        task = self.config.pick(task_id, seed)
        self.session = ToolSession(task, self.config.make_sandbox, self.config.limits, self.config.verifier)
        self.last_active = time.monotonic()  # from when the sandbox is up: starting one can take long on a busy engine
        with self.config._lock:
            self.config.live.add(self)
        self._state = EnvfarmState(episode_id=episode_id or uuid.uuid4().hex, step_count=0, task_id=task.instance_id)
        return EnvfarmObservation(task_id=task.instance_id, prompt=task.problem_statement, workdir=task.workdir,
                                  tools=tool_schemas(), done=False, reward=None)

    def step(self, action: EnvfarmAction, timeout_s: Optional[float] = None, **kwargs: Any) -> EnvfarmObservation:
        if self.session is None:
            if self.ended:
                return EnvfarmObservation(output=f"error: the episode ended ({self.ended}); reset to start a new one",
                                          error=True, done=True, finish_reason="closed")
            return EnvfarmObservation(output="error: no episode: reset first, in a WebSocket session (/ws) "
                                             "(plain HTTP /step is stateless in OpenEnv)", error=True, done=False)
        session = self.session
        self.busy = True
        try:
            outcome: Outcome = session.call(action.tool_name, action.arguments)
        finally:
            self.busy, self.last_active = False, time.monotonic()
        self._state.step_count = session.transcript.steps
        obs = EnvfarmObservation(output=outcome.observation, error=outcome.error, task_id=session.task.instance_id,
                                 done=outcome.done, reward=0.0)
        if outcome.reward is not None:
            obs.reward = outcome.reward.value
            obs.grade = outcome.reward.to_dict()
            obs.finish_reason = session.transcript.finish_reason
            self._state.finish_reason, self._state.reward = obs.finish_reason, outcome.reward.value
            self._forget()
        return obs

    @property
    def state(self) -> EnvfarmState:
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(name="envfarm", version="0.1.0",
                                   description=f"envfarm SWE tasks ({len(self.config.tasks)}) with bash, str_replace and "
                                               "finish in a fresh sandbox per episode; reward from envfarm's verifier")

    def close(self, why: str = "") -> None:
        """Release the sandbox of an unfinished episode (no grade: nobody is left to read it)."""
        session, self.session = self.session, None
        if session is not None:
            self.ended = why if not session.done else ""
            session.close()
        self._forget()

    def _forget(self) -> None:
        with self.config._lock:
            self.config.live.discard(self)


def build_app(config: ServerConfig, max_sessions: int = 8):  # type: ignore[no-untyped-def]
    """The FastAPI app from openenv-core's `create_app`, with envfarm's environment behind it, its idle reaper
    started with the app and every open sandbox closed when the app shuts down."""
    app = create_app(functools.partial(EnvfarmEnvironment, config), EnvfarmAction, EnvfarmObservation, env_name="envfarm",
                     concurrency_config=ConcurrencyConfig(max_concurrent_envs=max_sessions, session_timeout=None))
    tasks: list[asyncio.Task] = []

    async def reap() -> None:
        interval = max(1.0, (config.idle_timeout or 60.0) / 4)
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(config.reap_idle, time.monotonic())

    async def start() -> None:
        if config.idle_timeout is not None:
            tasks.append(asyncio.create_task(reap()))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.to_thread(config.close_all)

    app.router.on_startup.append(start)
    app.router.on_shutdown.append(stop)
    app.add_middleware(_QuietClientClose)
    return app


class _QuietClientClose:
    """openenv-core 0.3.0's /ws handler calls `websocket.close()` after the client already closed, which raises
    WebSocketDisconnect and makes uvicorn log a traceback for every normal session end. That one case is dropped;
    everything else propagates."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        from starlette.websockets import WebSocketDisconnect

        try:
            await self.app(scope, receive, send)
        except WebSocketDisconnect:
            if scope.get("type") != "websocket":
                raise
