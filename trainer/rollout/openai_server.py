"""A small OpenAI-compatible /v1/completions server around the in-process engine.

It lets the remote backend be tested end to end without a GPU (tests start it on 127.0.0.1), and lets
anyone serve the tiny checkpoint:  python -m envfarm.trainer.rollout.openai_server --port 8000
Beyond the OpenAI fields it honours vLLM's `return_tokens_as_token_ids` and a `return_routed_experts`
flag (the routing-replay payload SGLang-based RL stacks return), plus `speculative: "mtp"`.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from envfarm.errors import EnvfarmError
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
                if self.path.rstrip("/") != "/v1/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    self._send(200, server.complete(request))
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

    def start(self) -> "CompletionServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
