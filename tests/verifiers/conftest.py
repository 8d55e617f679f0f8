"""One Chromium for the whole test session, driven from a background event loop.

Web tests submit coroutines to it with `web.run(...)`; each verification gets its own browser
context, as in production. Skips name what is missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Coroutine, Iterator

import pytest


class WebHarness:
    def __init__(self, host: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.host = host
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def web_prerequisites_or_skip() -> None:
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed: run make setup")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed: run make setup")
    from envfarm.verifiers.web.setup_ffmpeg import video_ready

    if not video_ready():
        pytest.skip("Playwright's ffmpeg link missing: run python -m envfarm.verifiers.web.setup_ffmpeg (make setup does)")


@pytest.fixture
def web_ready() -> None:
    """For tests that start their own browser: skip, naming what is missing."""
    web_prerequisites_or_skip()


@pytest.fixture(scope="session")
def web() -> Iterator[WebHarness]:
    web_prerequisites_or_skip()
    from envfarm.verifiers.web.browser import BrowserHost

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    host = asyncio.run_coroutine_threadsafe(BrowserHost().start(), loop).result(60)
    try:
        yield WebHarness(host, loop)
    finally:
        asyncio.run_coroutine_threadsafe(host.close(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# An OpenAI-compatible /chat/completions stand-in on 127.0.0.1 for the judge client's tests: it
# records each request and answers with `reply` (a dict sent as JSON, or raw text).
class _ChatHandler(BaseHTTPRequestHandler):
    reply: dict | str = {}
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        payload = self.reply if isinstance(self.reply, str) else json.dumps(self.reply)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def chat_server():
    _ChatHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _ChatHandler
    server.shutdown()
    server.server_close()
