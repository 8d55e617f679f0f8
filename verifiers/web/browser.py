"""Debian's Chromium under Playwright, with the limits an untrusted page needs.

A page under test may loop forever, allocate without bound or try to phone home. So: V8's heap is
capped by flag, a watchdog sums the proportional memory (PSS) of the browser's whole process tree and kills it
past a limit, and `BrowserHost.close()` always leaves no Chromium process behind (it kills what
Playwright's own close did not end). The browser is found by a unique marker switch on its command
line, because Playwright does not expose the pid of a launched browser.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, Playwright, async_playwright

from envfarm.errors import EnvfarmError

# Everything not on loopback goes to a proxy that is not there. The request gate (runner.py) sees only
# the first hop of a redirect: Chromium follows a 3xx, from the app's server or from a fulfilled answer,
# without passing the gate again, so a redirect off the machine would otherwise reach it. Loopback is
# exempt by Chromium's implicit bypass rules, so the app's own origin still loads.
PROXY_FLAG = "--proxy-server=http://127.0.0.1:9"

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--mute-audio",
    # WebGL without a GPU: ANGLE on SwiftShader. Chromium still falls back to it by itself with
    # --disable-gpu (seen with Chromium 156: WebGL 1 and 2, renderer "ANGLE (Google, Vulkan 1.3.0
    # (SwiftShader Device (Subzero)...)"), but has announced that the automatic fallback goes away;
    # this flag asks for it explicitly, so three.js / p5 / pixi pages keep drawing when it does.
    "--enable-unsafe-swiftshader",
    PROXY_FLAG,
]


def chromium_path() -> str:
    path = os.environ.get("ENVFARM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise EnvfarmError("chromium is not installed", "apt-get install chromium (or run make setup)")
    return path


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(x) for x in handle.read().split()]
    except OSError:
        return []


def process_tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(_children(pid))
    return out


def memory_bytes(pid: int) -> int:
    """Proportional set size: Chromium's processes share most pages, so summing RSS double-counts
    (about 820 MiB of RSS for 340 MiB of PSS for an idle browser here)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def find_marked(marker: str) -> list[int]:
    """Pids whose command line carries `marker` (the browser process itself)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill_tree(root: int) -> None:
    for pid in reversed(process_tree(root)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class BrowserLimits:
    heap_mb: int = 512  # V8 old-space per renderer
    memory_mb: int = 2048  # PSS of the whole browser process tree
    poll_s: float = 0.25


@dataclass
class BrowserHost:
    """One Chromium shared by many verifications (each gets its own context)."""

    limits: BrowserLimits = field(default_factory=BrowserLimits)
    playwright: Playwright | None = None
    browser: Browser | None = None
    pid: int | None = None
    killed_for_memory: bool = False
    peak_memory: int = 0
    _marker: str = ""
    _watchdog: asyncio.Task | None = None
    _restart_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    restarts: int = 0

    async def start(self) -> "BrowserHost":
        self._marker = f"--envfarm-browser={uuid.uuid4().hex}"
        self.playwright = await async_playwright().start()
        args = [*CHROMIUM_FLAGS, f"--js-flags=--max-old-space-size={self.limits.heap_mb}", self._marker]
        try:
            self.browser = await self.playwright.chromium.launch(executable_path=chromium_path(), args=args)
        except EnvfarmError:
            await self.playwright.stop()
            raise
        pids = find_marked(self._marker)
        # The browser process is the marked one whose parent is not itself marked (zygotes copy argv).
        self.pid = min(pids) if pids else None
        self._watchdog = asyncio.create_task(self._watch())
        return self

    async def _watch(self) -> None:
        while self.pid is not None:
            total = sum(memory_bytes(p) for p in process_tree(self.pid))
            self.peak_memory = max(self.peak_memory, total)
            if total > self.limits.memory_mb * 1024 * 1024:
                self.killed_for_memory = True
                kill_tree(self.pid)
                return
            await asyncio.sleep(self.limits.poll_s)

    @property
    def alive(self) -> bool:
        return self.browser is not None and self.browser.is_connected()

    async def ensure_alive(self) -> None:
        """Relaunch a browser that died (killed by the watchdog, or crashed) so a shared host keeps
        serving the verifications queued behind the one that broke it."""
        async with self._restart_lock:
            if self.alive:
                return
            await self.close()
            self.killed_for_memory = False
            self.restarts += 1
            await self.start()

    def kill(self) -> None:
        """Last resort for a hung page: take the whole browser down (Playwright calls then fail fast)."""
        if self.pid is not None:
            kill_tree(self.pid)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        try:
            if self.browser is not None:
                await asyncio.wait_for(self.browser.close(), timeout=10)
        except Exception:  # noqa: BLE001 - closing must never raise; what is left is killed below
            pass
        finally:
            if self.pid is not None:
                kill_tree(self.pid)
            for pid in find_marked(self._marker):
                kill_tree(pid)
            if self.playwright is not None:
                await self.playwright.stop()
            self.browser = None

    async def __aenter__(self) -> "BrowserHost":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
