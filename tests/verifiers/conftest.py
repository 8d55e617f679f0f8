"""One Chromium for the whole test session, driven from a background event loop.

Web tests submit coroutines to it with `web.run(...)`; each verification gets its own browser
context, as in production. Skips name what is missing.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
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
    from verifiers.web.setup_ffmpeg import video_ready

    if not video_ready():
        pytest.skip("Playwright's ffmpeg link missing: run python -m verifiers.web.setup_ffmpeg (make setup does)")


@pytest.fixture
def web_ready() -> None:
    """For tests that start their own browser: skip, naming what is missing."""
    web_prerequisites_or_skip()


@pytest.fixture(scope="session")
def web() -> Iterator[WebHarness]:
    web_prerequisites_or_skip()
    from verifiers.web.browser import BrowserHost

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
