"""A scripted OpenAI-compatible judge on 127.0.0.1 for the web judge's tests.

Each request is recorded (`requests`) and answered by the next entry of `answers` (the last one repeats):
a callable `(body, nonce) -> (status, text)` where `nonce` is read from the system prompt as a compliant
model would, so a test decides what a model that follows (or ignores) the instructions sends back.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Answer = Callable[[dict[str, Any], str], tuple[int, str]]


def completion(content: str) -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})


def verdict(executability: float, functional: float, visual: float, prose: str = "") -> Answer:
    """A compliant judge: the verdict object with this request's nonce (after optional prose)."""
    def answer(body: dict[str, Any], nonce: str) -> tuple[int, str]:
        obj = {"nonce": nonce, "executability": executability, "functional": functional, "visual": visual, "rationale": "scripted"}
        return 200, completion(prose + json.dumps(obj))
    return answer


def refuses_video(then: Answer) -> Answer:
    """vLLM's answer for a model without video input: 400 when a video_url part is present."""
    def answer(body: dict[str, Any], nonce: str) -> tuple[int, str]:
        if any(p.get("type") == "video_url" for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]):
            return 400, json.dumps({"error": {"message": "At most 0 video(s) may be provided in one request.", "type": "BadRequestError"}})
        return then(body, nonce)
    return answer


def raw(status: int, text: str) -> Answer:
    return lambda body, nonce: (status, text)


class ScriptedJudge:
    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                owner.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                answer = owner.answers[min(len(owner.requests), len(owner.answers)) - 1]
                system = next((m["content"] for m in body.get("messages", []) if m.get("role") == "system"), "")
                found = re.search(r'"nonce": "([0-9a-f]+)"', system)
                status, text = answer(body, found.group(1) if found else "")
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedJudge":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def parts(self, i: int = -1) -> list[dict[str, Any]]:
        """The user message's content parts of request i."""
        return next(m["content"] for m in self.requests[i]["body"]["messages"] if m["role"] == "user")
