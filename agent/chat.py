"""The episode for chat-completions policies: structured messages, native tool calls, results as tool messages.

`run_episode` hands a policy with a `chat` method to `run_chat_episode`. The policy answers each turn with
a `ChatTurn`: the assistant message (kept verbatim in the conversation, so the next request carries the
model's own tool calls back) and its native tool calls. Each call is checked against the same tool table as
the text protocol (`validate_call`) and answered with a `tool` message carrying its `tool_call_id`. A turn
without native calls is read with the text protocol (`<tool_call>...</tool_call>` in the content) and its
result comes back as a user message in `<tool_response>` tags: servers without tool calling, and models
that write calls as text, still drive the same three tools.

Malformed calls (arguments that are not JSON, unknown tools, wrong arguments) cost a step and come back
as an error observation, as in the text protocol. A model server that stays unreachable after its retries
(`ModelServerError`) ends the episode with finish_reason "model_error": an infrastructure failure, not the
policy's doing, so `swe_rollout` does not grade it. A conversation that outgrew the model's context
(`ContextExceeded`) ends it with "max_context", a limit like max_tokens: graded as it stands.

Part of the scaffold package `envfarm.agent` (DESIGN.md: one package that serves the trainer, the
integrations and external agents); it imports neither torch nor the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from envfarm.errors import EnvfarmError, SandboxError
from envfarm.sandbox.protocol import Sandbox
from envfarm.task import TaskSpec
from envfarm.agent.episode import EpisodeLimits, Transcript, carry_out
from envfarm.agent.protocol import CALL_CLOSE, CALL_OPEN, ToolCall, ToolCallError, call_from, parse_tool_call
from envfarm.agent.tools import collect_patch

ToolMode = Literal["native", "text"]

CHAT_SYSTEM_PROMPT = (
    "You fix bugs in the repository at {workdir}. Call exactly one tool per turn. Tools: "
    "bash(command) runs a shell command; "
    "str_replace(path, old, new) replaces the unique exact occurrence of old in path with new; "
    "finish() submits your changes."
)
# Appended to the system prompt when the server has no tool calling: the scaffold's text protocol.
TEXT_PROTOCOL_HINT = (
    f' Call a tool by writing {CALL_OPEN}{{"name": ..., "arguments": {{...}}}}{CALL_CLOSE}; '
    "its output comes back between <tool_response> and </tool_response>."
)


class ModelServerError(EnvfarmError):
    """The model server failed in a way retries did not fix (unreachable, 5xx/429 throughout, bad answers)."""


class ContextExceeded(EnvfarmError):
    """The conversation no longer fits the model's context: the policy's limit, like max_tokens, so it is graded."""


@dataclass
class NativeCall:
    """One native tool call as the server sent it: `arguments` is the raw JSON text, checked by the episode."""

    id: str
    name: str
    arguments: str


@dataclass
class ChatTurn:
    message: dict[str, Any]  # the assistant message, appended to the conversation as is
    calls: list[NativeCall] = field(default_factory=list)
    mode: ToolMode = "native"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # requests repeated after a 429/5xx or a dropped connection
    finish_reason: str = ""


class ChatAgentPolicy(Protocol):
    def chat(self, messages: list[dict[str, Any]], max_tokens: int) -> ChatTurn:
        """The assistant's next turn for the conversation, generating at most `max_tokens` tokens.

        May append the text-protocol hint to the system message (messages[0]) when it falls back to text."""
        ...


def parse_native_call(call: NativeCall) -> ToolCall:
    """A native call checked against the tool table; its arguments must be a JSON object (or empty)."""
    return call_from(call.name, call.arguments)


def _tool_response(text: str) -> dict[str, Any]:
    return {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}


class _Steps:
    """Carries out calls and records each in `Transcript.calls` (a refused call keeps the raw name and arguments)."""

    def __init__(self, t: Transcript, sandbox: Sandbox, task: TaskSpec, limits: EpisodeLimits) -> None:
        self.t, self.sandbox, self.task, self.limits = t, sandbox, task, limits

    def run(self, call: ToolCall | ToolCallError, record: dict[str, Any]) -> tuple[str, bool]:
        """(observation, finished?) for one parsed call or the reason it could not be parsed."""
        if isinstance(call, ToolCallError):
            self.t.tool_errors += 1
            self.t.calls.append({**record, "observation": f"error: {call}", "error": True})
            return f"error: {call}", False
        if call.name == "finish":
            self.t.calls.append({**record, "name": "finish", "arguments": {}, "observation": "submitted", "error": False})
            return "submitted", True
        obs, failed = carry_out(self.sandbox, call, self.task.workdir, self.limits)
        self.t.tool_errors += int(failed and call.name == "str_replace")
        self.t.calls.append({**record, "name": call.name, "arguments": call.arguments, "observation": obs, "error": failed})
        return obs, False


def run_chat_episode(policy: ChatAgentPolicy, task: TaskSpec, sandbox: Sandbox,
                     limits: EpisodeLimits = EpisodeLimits()) -> Transcript:
    """Run until finish or a limit (steps, generated tokens, wall clock); same transcript as `run_episode`."""
    started = time.monotonic()
    t = Transcript(task.instance_id, [{"role": "system", "content": CHAT_SYSTEM_PROMPT.format(workdir=task.workdir)},
                                      {"role": "user", "content": task.problem_statement}],
                   usage={"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "retries": 0, "mode": ""})
    steps = _Steps(t, sandbox, task, limits)
    try:
        while True:
            t.finish_reason = limits.reached(t.steps, t.tokens, started)
            if t.finish_reason:
                break
            try:
                turn = policy.chat(t.messages, max_tokens=limits.max_tokens - t.tokens)
            except ModelServerError as exc:
                t.finish_reason, t.error = "model_error", exc.line()
                break
            except ContextExceeded as exc:
                t.finish_reason, t.error = "max_context", exc.line()
                break
            t.steps += 1
            t.tokens += turn.completion_tokens
            t.usage["prompt_tokens"] += turn.prompt_tokens
            t.usage["completion_tokens"] += turn.completion_tokens
            t.usage["requests"] += 1 + turn.retries
            t.usage["retries"] += turn.retries
            t.usage["mode"] = turn.mode
            t.messages.append(turn.message)
            if _play(turn, steps, t.steps):
                t.finish_reason = "finish"
                break
        t.patch = collect_patch(sandbox, task.workdir)
    except SandboxError as exc:
        t.finish_reason, t.error = "sandbox_error", exc.line()
    t.seconds = round(time.monotonic() - started, 3)
    return t


def _play(turn: ChatTurn, steps: _Steps, step: int) -> bool:
    """Answer every native call of the turn with a tool message (or its text call with a user message)."""
    if not turn.calls:
        try:
            call: ToolCall | ToolCallError = parse_tool_call(turn.message.get("content") or "")
        except ToolCallError as exc:
            if turn.mode == "native":
                exc = ToolCallError(f"no tool call: call one of the tools bash, str_replace, finish ({exc})")
            call = exc
        obs, done = steps.run(call, {"step": step, "id": "", "name": "", "arguments": ""})
        if not done:
            steps.t.messages.append(_tool_response(obs))
        return done
    for native in turn.calls:
        try:
            call = parse_native_call(native)
        except ToolCallError as exc:
            call = exc
        obs, done = steps.run(call, {"step": step, "id": native.id, "name": native.name, "arguments": native.arguments})
        if done:
            return True
        steps.t.messages.append({"role": "tool", "tool_call_id": native.id, "content": obs})
    return False
