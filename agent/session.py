"""A tool session on one task: the scaffold driven one call at a time by someone else's agent loop.

The OpenEnv server's steps, the `verifiers` environment's tools and mini-swe-agent's environment all need
the same thing: a fresh sandbox on the task's image; calls checked against the one tool table
(`protocol.validate_call`) and carried out within the episode's limits (`episode.carry_out`); and, on
`finish` or a limit, the patch collected, the sandbox closed and the patch graded in a fresh sandbox
(`swe.grade`). Every call is recorded in a `Transcript` as in the scaffold's own episodes.

Bad calls cost a step and come back as an error observation, as in the scaffold's loops: an external agent
optimizes against the reward too, so nothing it sends (unknown tools, wrong arguments, calls after the end)
raises or reaches the sandbox unchecked. A dead sandbox ends the episode with a zero classified as
infrastructure (`swe.failure_of`), never a silent success.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from envfarm.agent.episode import EpisodeLimits, Transcript, carry_out
from envfarm.agent.protocol import ToolCallError, call_from
from envfarm.agent.swe import SandboxFactory, failure_of, grade
from envfarm.agent.tools import collect_patch
from envfarm.errors import SandboxError
from envfarm.task import TaskSpec
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.swe import SweVerifier


@dataclass
class Outcome:
    """What one call produced: the observation for the agent, whether the call failed, and the episode's end."""

    observation: str
    error: bool = False
    done: bool = False
    reward: Reward | None = None  # set once the episode is over and graded


class ToolSession:
    """One episode on `task`: its sandbox is opened here and always closed by `finish` or `close`."""

    def __init__(self, task: TaskSpec, make_sandbox: SandboxFactory, limits: EpisodeLimits | None = None,
                 verifier: SweVerifier | None = None) -> None:
        self.task, self.make_sandbox = task, make_sandbox
        self.limits = limits or EpisodeLimits()
        self.verifier = verifier
        self.transcript = Transcript(task.instance_id, [{"role": "user", "content": task.problem_statement}])
        self.started = time.monotonic()
        self.reward: Reward | None = None
        self._lock = threading.Lock()  # one call at a time: a session is one agent's episode
        self.sandbox = make_sandbox(task)

    @property
    def done(self) -> bool:
        return self.reward is not None

    def call(self, name: str, arguments: Any = None) -> Outcome:
        """Carry out one tool call (arguments a dict, or its JSON text as a model wrote it)."""
        with self._lock:
            if self.reward is not None:
                return Outcome("error: the episode is over; reset to start a new one", True, True, self.reward)
            t = self.transcript
            t.steps += 1
            record: dict[str, Any] = {"step": t.steps, "name": name, "arguments": arguments}
            try:
                call = call_from(name, arguments)
            except ToolCallError as exc:
                t.tool_errors += 1
                t.calls.append({**record, "observation": f"error: {exc}", "error": True})
                return self._after_step(Outcome(f"error: {exc}", True))
            if call.name == "finish":
                t.calls.append({**record, "arguments": {}, "observation": "submitted", "error": False})
                return self._end("finish", "submitted")
            try:
                obs, failed = carry_out(self.sandbox, call, self.task.workdir, self.limits)
            except SandboxError as exc:
                t.error = exc.line()
                return self._end("sandbox_error", f"error: the sandbox failed ({exc.problem})", failure=exc)
            t.tool_errors += int(failed and call.name == "str_replace")
            t.calls.append({**record, "arguments": call.arguments, "observation": obs, "error": failed})
            return self._after_step(Outcome(obs, failed))

    def finish(self, reason: str = "finish") -> Reward:
        """End the episode now (the agent submitted, or its driver stopped it) and grade what is there."""
        with self._lock:
            if self.reward is None:
                self._end(reason, "submitted")
            assert self.reward is not None
            return self.reward

    def close(self) -> None:
        """Release the sandbox without grading (a client that went away); safe to call twice."""
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.close()

    def _after_step(self, outcome: Outcome) -> Outcome:
        limit = self.limits.reached(self.transcript.steps, self.transcript.tokens, self.started)
        if not limit:
            return outcome
        ended = self._end(limit, f"{outcome.observation}\n[episode ended: {limit}]")
        ended.error = outcome.error
        return ended

    def _end(self, reason: str, observation: str, failure: BaseException | None = None) -> Outcome:
        t = self.transcript
        t.finish_reason = reason
        if failure is None and self.sandbox is not None:
            try:
                t.patch = collect_patch(self.sandbox, self.task.workdir)
            except SandboxError as exc:
                failure, t.error = exc, exc.line()
        self.close()
        t.seconds = round(time.monotonic() - self.started, 3)
        self.reward = failure_of("episode", failure) if failure is not None else \
            grade(self.task, t.patch, self.make_sandbox, self.verifier)
        return Outcome(observation, failure is not None, True, self.reward)

