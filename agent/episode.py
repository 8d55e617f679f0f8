"""One agent episode: prompt -> (assistant text -> tool call -> observation)* -> finish or a limit.

Limits are per episode (steps, generated tokens, seconds per command, characters per observation) so a
looping policy costs a bounded amount of sandbox time. The transcript keeps every turn, the reason the
episode ended and the submitted patch; it is saved as JSON per rollout.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from envfarm.errors import EnvfarmError, SandboxError
from envfarm.sandbox.protocol import Sandbox
from envfarm.task import TaskSpec
from envfarm.agent.protocol import SYSTEM_PROMPT, ToolCall, ToolCallError, parse_tool_call, render_prompt
from envfarm.agent.tools import collect_patch, run_tool


class AgentPolicy(Protocol):
    def act(self, prompt: str) -> tuple[str, int]:
        """The assistant's next turn for the flattened conversation, and how many tokens it cost."""
        ...


@dataclass
class EpisodeLimits:
    max_steps: int = 30
    max_tokens: int = 16_384  # generated tokens over the whole episode
    command_timeout: float = 120.0
    observation_chars: int = 4_000
    max_seconds: float | None = None  # wall clock over the whole episode, checked between steps; None: no limit

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_tokens", "command_timeout", "observation_chars"):
            if getattr(self, name) <= 0:
                raise EnvfarmError(f"agent.{name}={getattr(self, name)} must be positive", f"set agent.{name} to a value > 0")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise EnvfarmError(f"agent.max_seconds={self.max_seconds} must be positive", "set agent.max_seconds > 0, or leave it unset")

    def reached(self, steps: int, tokens: int, started: float) -> str:
        """The limit an episode has reached before its next turn ("" for none): the finish reason it ends with."""
        if steps >= self.max_steps:
            return "max_steps"
        if tokens >= self.max_tokens:
            return "max_tokens"
        if self.max_seconds is not None and time.monotonic() - started >= self.max_seconds:
            return "max_seconds"
        return ""


@dataclass
class Transcript:
    task_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    tool_errors: int = 0
    finish_reason: str = ""  # finish | max_steps | max_tokens | max_seconds | max_context | sandbox_error | model_error
    patch: str = ""
    error: str = ""
    seconds: float = 0.0
    # Chat episodes (envfarm.agent.chat) also fill these: one entry per tool call (name, arguments,
    # observation, error) and the model server's token accounting (prompt/completion tokens, requests, retries).
    calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: str | Path, rollout_id: str) -> Path:
        path = Path(folder) / f"{rollout_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


def carry_out(sandbox: Sandbox, call: ToolCall, workdir: str, limits: EpisodeLimits) -> tuple[str, bool]:
    """Run a bash or str_replace call within the episode's limits: (observation clipped for the policy, error?).

    The one way every driver of the scaffold (the text and chat loops, `session.ToolSession` behind the
    integrations) carries out a tool call; infrastructure failures raise SandboxError."""
    obs, failed = run_tool(sandbox, call, workdir, limits.command_timeout, limits.observation_chars * 4)
    return _clip(obs, limits.observation_chars), failed


def run_episode(policy: AgentPolicy, task: TaskSpec, sandbox: Sandbox, limits: EpisodeLimits = EpisodeLimits()) -> Transcript:
    """Run until finish or a limit; a dead sandbox ends the episode with finish_reason 'sandbox_error'.

    A policy with a `chat` method (a chat-completions model: native tool calls, structured messages) runs
    the chat loop of `envfarm.agent.chat` instead; the limits and the transcript are the same."""
    if hasattr(policy, "chat"):
        from envfarm.agent.chat import run_chat_episode

        return run_chat_episode(policy, task, sandbox, limits)  # type: ignore[arg-type]  # checked by hasattr
    started = time.monotonic()
    t = Transcript(task.instance_id, [{"role": "system", "content": SYSTEM_PROMPT.format(workdir=task.workdir)},
                                      {"role": "user", "content": task.problem_statement}])
    try:
        while True:
            t.finish_reason = limits.reached(t.steps, t.tokens, started)
            if t.finish_reason:
                break
            text, used = policy.act(render_prompt(t.messages))
            t.steps += 1
            t.tokens += used
            t.messages.append({"role": "assistant", "content": text})
            try:
                call = parse_tool_call(text)
            except ToolCallError as exc:
                t.tool_errors += 1
                t.messages.append({"role": "tool", "content": f"error: {exc}"})
                continue
            if call.name == "finish":
                t.finish_reason = "finish"
                break
            obs, failed = carry_out(sandbox, call, task.workdir, limits)
            t.tool_errors += int(failed and call.name == "str_replace")
            t.messages.append({"role": "tool", "content": obs})
        t.patch = collect_patch(sandbox, task.workdir)
    except SandboxError as exc:
        t.finish_reason, t.error = "sandbox_error", exc.line()
    t.seconds = round(time.monotonic() - started, 3)
    return t
