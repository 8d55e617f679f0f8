"""An agent policy for any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, hosted APIs).

The scaffold's three tools go as native function definitions (`tools=`). `tool_mode="auto"` falls back to
the text protocol for the episode when the server refuses tool definitions (vLLM without
`--enable-auto-tool-choice` answers 400): the system prompt then teaches `<tool_call>` and results come back
as user messages (see `envfarm.agent.chat`). 429, 5xx and dropped or timed-out connections are
retried with exponential backoff (tenacity; a `Retry-After` header is honoured up to the backoff cap);
anything else, or retries spent, is a `ModelServerError`.

httpx, not the `openai` client: it is already a dependency, the request is one POST, and an extra client
would sit in the import path of every `envfarm rollout`. Part of the scaffold package `envfarm.agent` it
drives (DESIGN.md: one scaffold package for the trainer and external agents); no torch import.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from envfarm.agent.chat import TEXT_PROTOCOL_HINT, ChatTurn, ContextExceeded, ModelServerError, NativeCall, ToolMode
from envfarm.agent.protocol import CALL_CLOSE, CALL_OPEN, tool_schemas

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# How vLLM, SGLang and OpenAI say a request does not fit the context window (a 400).
CONTEXT_LENGTH = re.compile(r"context length|context window|maximum context|too many tokens|prompt is too long|"
                            r"context_length_exceeded", re.I)


class _Transient(Exception):
    """A failure worth repeating the request for; `retry_after` is the server's hint in seconds, if any."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


class OpenAIChatPolicy:
    """One per episode (it counts that episode's retries); share `client` between episodes."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, tool_mode: ToolMode | str = "auto",
                 temperature: float = 0.0, max_tokens_per_turn: int = 4096, timeout: float = 600.0, retries: int = 6,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, extra_body: dict[str, Any] | None = None,
                 client: httpx.Client | None = None) -> None:
        if tool_mode not in ("auto", "native", "text"):
            raise ModelServerError(f"tool mode {tool_mode!r} is not auto, native or text", "pass --tool-mode auto|native|text")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.tool_mode = model, tool_mode
        self.temperature, self.max_tokens_per_turn, self.extra_body = temperature, max_tokens_per_turn, extra_body or {}
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout, headers=headers)
        self.fallback = ""  # why auto mode chose the text protocol, once it has
        self.answered = False  # a turn came back: the mode is settled for this episode

    @property
    def mode(self) -> ToolMode:
        return "text" if self.tool_mode == "text" or self.fallback else "native"

    def chat(self, messages: list[dict[str, Any]], max_tokens: int) -> ChatTurn:
        while True:
            if self.mode == "text" and messages and messages[0].get("role") == "system" \
                    and TEXT_PROTOCOL_HINT not in messages[0]["content"]:
                messages[0]["content"] += TEXT_PROTOCOL_HINT
            body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                    "max_tokens": max(1, min(self.max_tokens_per_turn, max_tokens)), **self.extra_body}
            if self.mode == "native":
                body["tools"], body["tool_choice"] = tool_schemas(), "auto"
            else:
                body["stop"] = [CALL_CLOSE]
            response, retries = self._post(body)
            if response.status_code == 200:
                return self._turn(response, retries)
            refused = f"{response.status_code}: {' '.join(response.text.split())[:300]}"
            if response.status_code == 400 and CONTEXT_LENGTH.search(response.text):
                raise ContextExceeded(f"model server at {self.url} refused the conversation as too long ({refused})",
                                      "raise the server's context length or lower --max-tokens-per-turn / --max-steps")
            if self.mode == "native" and self.tool_mode == "auto" and not self.answered \
                    and response.status_code in (400, 404, 422):
                self.fallback = f"the server refused tool definitions ({refused})"
                continue
            raise ModelServerError(f"model server at {self.url} answered {refused}",
                                   "check --model-name and that the server speaks /v1/chat/completions")

    def _post(self, body: dict[str, Any]) -> tuple[httpx.Response, int]:
        attempts = 0

        def once() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TransportError as exc:  # refused, reset, dropped mid-answer, timed out
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code in RETRY_STATUS or response.status_code >= 500:
                raise _Transient(f"HTTP {response.status_code}: {response.text[:200]}", _retry_after(response))
            return response

        exponential = wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hint = getattr(exc, "retry_after", None) or 0.0
            return min(max(exponential(state), hint), self.max_backoff_s)

        try:
            response = Retrying(stop=stop_after_attempt(self.retries + 1), wait=wait, reraise=True,
                                retry=retry_if_exception_type(_Transient))(once)
        except _Transient as exc:
            raise ModelServerError(f"model server at {self.url} failed {attempts} time(s), last: {exc}",
                                   "check that the server is up and not overloaded, or raise --retries") from None
        return response, attempts - 1

    def _turn(self, response: httpx.Response, retries: int) -> ChatTurn:
        try:
            data = response.json()
            choice = data["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ModelServerError(f"model server at {self.url} sent no chat completion: {response.text[:200]}",
                                   "point --model at an OpenAI-compatible /v1 base URL") from None
        content = message.get("content")
        finish = str(choice.get("finish_reason") or "")
        if self.mode == "text" and isinstance(content, str) and finish == "stop" and CALL_OPEN in content \
                and CALL_CLOSE not in content.split(CALL_OPEN, 1)[1]:
            content += CALL_CLOSE  # servers drop the stop string from the output
        calls: list[NativeCall] = []
        raw_calls = (message.get("tool_calls") or []) if self.mode == "native" else []
        for i, raw in enumerate(raw_calls if isinstance(raw_calls, list) else []):
            raw = raw if isinstance(raw, dict) else {}
            fn = raw.get("function") if isinstance(raw.get("function"), dict) else {}
            args = fn.get("arguments", "")
            calls.append(NativeCall(str(raw.get("id") or f"call_{i}"), str(fn.get("name", "")),
                                    args if isinstance(args, str) else json.dumps(args)))
        self.answered = True
        kept: dict[str, Any] = {"role": "assistant", "content": content if content is not None or calls else ""}
        if calls:
            kept["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                  for c in calls]
        usage = data.get("usage") or {}
        completion = usage.get("completion_tokens")
        if not isinstance(completion, int):  # no usage block: about four bytes a token
            completion = 1 + len(json.dumps(kept).encode()) // 4
        return ChatTurn(kept, calls, self.mode, int(usage.get("prompt_tokens") or 0), completion, retries, finish)
