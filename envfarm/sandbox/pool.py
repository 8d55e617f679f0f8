"""Warm pools: sandboxes started ahead of demand, so `acquire()` is a queue pop instead of a container start.

A sandbox handed out is never handed out again (its state is the caller's); the pool refills in a
background thread. When the pool is empty `acquire()` starts one on demand rather than failing.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

from envfarm.errors import EnvfarmError
from envfarm.sandbox.docker import LABEL_POOL, DockerSandbox


class SandboxPool:
    def __init__(
        self,
        image: str,
        size: int,
        *,
        name: str | None = None,
        factory: Callable[..., DockerSandbox] = DockerSandbox,
        **sandbox_kwargs: Any,
    ) -> None:
        if size < 0:
            raise EnvfarmError(f"pool size must be >= 0, got {size}", "pass a target size such as 4")
        self.image = image
        self.size = size
        self.name = name or f"pool-{image.replace('/', '_').replace(':', '_')}"
        self._factory = factory
        self._kwargs = {**sandbox_kwargs, "labels": {LABEL_POOL: self.name, **sandbox_kwargs.get("labels", {})}}
        self._warm: "queue.Queue[DockerSandbox]" = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.errors: list[str] = []
        self.cold_starts = 0
        self._filler = threading.Thread(target=self._fill_loop, name=f"{self.name}-filler", daemon=True)
        self._filler.start()

    def _start_one(self) -> DockerSandbox:
        return self._factory(self.image, **self._kwargs)

    def _fill_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            if self._warm.qsize() < self.size:
                try:
                    sandbox = self._start_one()
                except Exception as exc:  # keep the pool alive; report, back off, retry
                    self.errors.append(str(exc))
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30)
                    continue
                backoff = 0.5
                if self._stop.is_set():
                    sandbox.close()
                    return
                self._warm.put(sandbox)
            else:
                self._wake.wait(0.5)
                self._wake.clear()

    def wait_warm(self, timeout: float = 60) -> bool:
        """Block until the pool holds its target size (for benchmarks and start-up)."""
        deadline = time.monotonic() + timeout
        while self._warm.qsize() < self.size and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._warm.qsize() >= self.size

    @property
    def warm_count(self) -> int:
        return self._warm.qsize()

    def acquire(self) -> DockerSandbox:
        if self._stop.is_set():
            raise EnvfarmError(f"pool {self.name} is closed", "create a new pool")
        try:
            sandbox = self._warm.get_nowait()
        except queue.Empty:
            self.cold_starts += 1
            sandbox = self._start_one()
        self._wake.set()
        return sandbox

    def release(self, sandbox: DockerSandbox) -> None:
        sandbox.close()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._filler.join(timeout=120)
        while True:
            try:
                self._warm.get_nowait().close()
            except queue.Empty:
                break

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
