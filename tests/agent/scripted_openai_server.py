"""A scripted OpenAI-compatible /v1/chat/completions server on 127.0.0.1 for tests.

`scripts` maps a model name to the assistant turns it plays: turn i answers a request whose conversation
already holds i assistant messages (the last turn repeats), so parallel episodes each follow the script.
A turn is a list of tool calls `(name, arguments)` (arguments a dict, or a string sent verbatim, e.g. bad
JSON) or a string (plain content, for the text protocol). `faults` are played on the next requests, one
each, before any answer: "429" (Retry-After: 0), "500", "drop" (the connection is closed with no answer),
"context" (vLLM's 400 for a conversation longer than the model's context), "" (answer normally).
`native=False` answers requests that carry `tools` with vLLM's 400 for servers without tool calling.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

Turn = Union[str, list[tuple[str, Union[dict, str]]]]


class ScriptedOpenAIServer:
    def __init__(self, scripts: dict[str, list[Turn]], faults: list[str] | None = None, native: bool = True) -> None:
        self.scripts, self.faults, self.native = scripts, list(faults or []), native
        self.requests: list[dict[str, Any]] = []  # every request body that reached an answer or a fault
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers: a dropped connection is mid-pool

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with owner.lock:
                    owner.requests.append(body)
                    fault = owner.faults.pop(0) if owner.faults else ""
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "context":
                    self._send(400, {"error": {"message": "This model's maximum context length is 32768 tokens. However, "
                                                          "you requested 40000 tokens.", "type": "BadRequestError"}})
                    return
                if fault in ("429", "500"):
                    self._send(int(fault), {"error": {"message": "scripted fault"}}, {"Retry-After": "0"})
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if body.get("tools") and not owner.native:
                    self._send(400, {"error": {"message": '"auto" tool choice requires --enable-auto-tool-choice and '
                                                          "--tool-call-parser to be set"}})
                    return
                script = owner.scripts.get(body.get("model", ""))
                if script is None:
                    self._send(404, {"error": {"message": f"model {body.get('model')!r} does not exist"}})
                    return
                turn_index = sum(1 for m in body["messages"] if m.get("role") == "assistant")
                self._send(200, answer(body["model"], script[min(turn_index, len(script) - 1)], turn_index))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedOpenAIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def answer(model: str, turn: Turn, index: int) -> dict[str, Any]:
    if isinstance(turn, str):
        message: dict[str, Any] = {"role": "assistant", "content": turn}
        finish = "stop"
    else:
        calls = [{"id": f"call_{index}_{i}", "type": "function",
                  "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                 for i, (name, args) in enumerate(turn)]
        message, finish = {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {"id": f"chatcmpl-{index}", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100 + index, "completion_tokens": 10, "total_tokens": 110 + index}}
