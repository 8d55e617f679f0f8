"""A small OpenAI-compatible /v1/completions and /v1/chat/completions server around the in-process engine.

It lets the remote backend be tested end to end without a GPU (tests start it on 127.0.0.1), and lets
anyone serve the tiny checkpoint:  python -m envfarm.trainer.rollout.openai_server --port 8000
Beyond the OpenAI fields it honours vLLM's `return_tokens_as_token_ids` and a `return_routed_experts`
flag (the routing-replay payload SGLang-based RL stacks return), plus `speculative: "mtp"`.

Chat requests are flattened with the agent scaffold's text protocol (the byte-level policy has no chat
template); `tools=` are listed in the system turn and a `<tool_call>{...}</tool_call>` in the output comes
back as a native `tool_calls` entry (finish_reason "tool_calls"), the way vLLM's Hermes tool parser does.
Anything else comes back as plain content, so `envfarm rollout --model` can be pointed at this server.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from envfarm.errors import EnvfarmError
from envfarm.agent.protocol import CALL_CLOSE, CALL_OPEN, render_prompt
from envfarm.trainer.model import load_checkpoint
from envfarm.trainer.paths import TINY_CHECKPOINT
from envfarm.trainer.rollout.engine import RolloutEngine
from envfarm.trainer.rollout.sampling import SamplingParams
from envfarm.trainer.tokenizer import ByteTokenizer


def _prompts(raw) -> list[list[int]]:
    tok = ByteTokenizer()
    if isinstance(raw, str):
        return [tok.encode(raw)]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [raw]
    if isinstance(raw, list) and raw:
        return [p for item in raw for p in _prompts(item)]
    raise EnvfarmError("prompt must be a string, a token-id list, or a list of those", "send a non-empty prompt")


class CompletionServer:
    def __init__(self, engine: RolloutEngine, model_name: str = "envfarm-tiny", host: str = "127.0.0.1", port: int = 0):
        self.engine, self.model_name, self.lock = engine, model_name, threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the caller logs requests it cares about
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                route = {"/v1/completions": server.complete, "/v1/chat/completions": server.chat}.get(self.path.rstrip("/"))
                if route is None:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    self._send(200, route(request))
                except (EnvfarmError, ValueError, TypeError, KeyError) as exc:
                    self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def complete(self, request: dict) -> dict:
        prompts = _prompts(request.get("prompt"))
        params = SamplingParams(
            max_new_tokens=int(request.get("max_tokens", 16)), temperature=float(request.get("temperature", 1.0)),
            top_p=float(request.get("top_p", 1.0)), seed=request.get("seed"),
            stop=[request["stop"]] if isinstance(request.get("stop"), str) else list(request.get("stop") or []),
            stop_token_ids=list(request.get("stop_token_ids") or []))
        draft = "mtp" if request.get("speculative") == "mtp" else None
        with self.lock:
            batch = self.engine.generate(prompts, params, draft=draft)
        as_ids = bool(request.get("return_tokens_as_token_ids"))
        tok = ByteTokenizer()
        choices = []
        for i, c in enumerate(batch.completions):
            choice = {"index": i, "text": tok.decode(c.tokens), "finish_reason": c.finish_reason,
                      "logprobs": {"tokens": [f"token_id:{t}" if as_ids else tok.decode([t]) for t in c.tokens],
                                   "token_logprobs": c.logprobs}}
            if request.get("return_routed_experts") and c.routing is not None:
                choice["routed_experts"] = c.routing.tolist()
            choices.append(choice)
        completion_tokens = sum(len(c.tokens) for c in batch.completions)
        return {"object": "text_completion", "model": self.model_name, "choices": choices,
                "usage": {"prompt_tokens": sum(len(p) for p in prompts), "completion_tokens": completion_tokens}}

    def chat(self, request: dict) -> dict:
        """One chat completion (`n` choices); a text tool call in the output becomes a native one when tools were sent."""
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise EnvfarmError("messages must be a non-empty list of message objects", "send the conversation as messages")
        tools = [t.get("function", t) for t in request.get("tools") or [] if isinstance(t, dict)]
        prompt = _chat_prompt(messages, tools)
        stop = [request["stop"]] if isinstance(request.get("stop"), str) else list(request.get("stop") or [])
        n = int(request.get("n", 1))
        if not 1 <= n <= 16:
            raise EnvfarmError(f"n={n} is outside 1..16", "ask for fewer choices")
        params = SamplingParams(
            max_new_tokens=int(request.get("max_completion_tokens") or request.get("max_tokens") or 256),
            temperature=float(request.get("temperature", 1.0)), top_p=float(request.get("top_p", 1.0)),
            seed=request.get("seed"), stop=[*stop, *([CALL_CLOSE] if tools else [])])
        ids = ByteTokenizer().encode(prompt)
        with self.lock:
            batch = self.engine.generate([ids] * n, params)
        tok = ByteTokenizer()
        choices = []
        for i, c in enumerate(batch.completions):
            message, finish = _assistant_message(tok.decode(c.tokens), bool(tools))
            choices.append({"index": i, "message": message,
                            "finish_reason": finish or ("length" if c.finish_reason == "length" else "stop")})
        completion_tokens = sum(len(c.tokens) for c in batch.completions)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_name, "choices": choices,
                "usage": {"prompt_tokens": len(ids), "completion_tokens": completion_tokens,
                          "total_tokens": len(ids) + completion_tokens}}

    def start(self) -> "CompletionServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _chat_prompt(messages: list[dict], tools: list[dict]) -> str:
    """The conversation as one string in the scaffold's text protocol, the tool table in the system turn."""
    flat = []
    for m in messages:
        content = _text(m.get("content"))
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {} if isinstance(call, dict) else {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except (TypeError, json.JSONDecodeError):
                args = fn.get("arguments")
            content += CALL_OPEN + json.dumps({"name": fn.get("name"), "arguments": args}) + CALL_CLOSE
        flat.append({"role": str(m.get("role", "user")), "content": content})
    if tools:
        table = (f" Call a tool as {CALL_OPEN}{{\"name\": ..., \"arguments\": {{...}}}}{CALL_CLOSE}. Tools: "
                 + json.dumps([{k: t.get(k) for k in ("name", "description", "parameters")} for t in tools]))
        if flat[0]["role"] == "system":
            flat[0]["content"] += table
        else:
            flat.insert(0, {"role": "system", "content": table.strip()})
    return render_prompt(flat)


_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.S)


def _assistant_message(text: str, tools: bool) -> tuple[dict, str]:
    """(message, finish_reason or ""): the first well-formed text tool call becomes `tool_calls` when tools were sent."""
    match = _CALL.search(text) if tools else None
    if match is not None:
        try:
            raw = json.loads(match.group(1))
        except json.JSONDecodeError:
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            args = raw.get("arguments", {})
            call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                    "function": {"name": raw["name"], "arguments": json.dumps(args)}}
            before = text[: match.start()].strip()
            return {"role": "assistant", "content": before or None, "tool_calls": [call]}, "tool_calls"
    return {"role": "assistant", "content": text}, ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", type=Path, default=TINY_CHECKPOINT)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    server = CompletionServer(RolloutEngine(load_checkpoint(args.checkpoint)), host=args.host, port=args.port)
    print(f"serving {args.checkpoint} at {server.url}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
