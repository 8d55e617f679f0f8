"""Applies plans: API writes ordered by priority, under the token bucket and an in-flight cap.

Every attempt, retries included, takes a token, so the controller never exceeds its budget even in
a 429 storm; a 429 pauses the whole bucket for Retry-After. Retries (tenacity) back off with jitter on
429, 5xx, connection errors and, for writes that are not conditional, conflicts. Claimed work goes
first: the queue is ordered by priority, then by arrival.

`WriteQueue` is what the controller needs of an executor and `ExecutorFactory` how it gets one
(`Executor` itself is the default factory); the simulator gives it one that runs in simulated time.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from envfarm.fleet.api import ApiCallError
from envfarm.fleet.ratelimit import MAX_ATTEMPTS, TokenBucket, backoff_delay, is_retryable

log = logging.getLogger(__name__)

PRIO_CLAIM = 0  # claim pod creates, bindings, claim status
PRIO_DELETE = 1  # failed/released pods: frees room for claims
PRIO_WARM = 2  # warm-pool creates
PRIO_STATUS = 3  # fleet status, reaping finished claims


class WriteQueue(Protocol):
    """Prioritized, rate-limited API writes: each op's `done(ok, exc)` is called once it finished."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...

    def submit(self, priority: int, name: str, call: Callable[[], Any],
               done: Callable[[bool, Exception | None], None] | None = None, retry_conflict: bool = False) -> None: ...

    def drain(self) -> None: ...

    def wait_idle(self, timeout: float) -> bool: ...

    @property
    def pending(self) -> int: ...


# (bucket, max_in_flight, on_depth) -> the write queue; `Executor` is one
ExecutorFactory = Callable[[TokenBucket, int, Callable[[int], None]], WriteQueue]


@dataclass(order=True)
class Op:
    priority: int
    seq: int
    name: str = field(compare=False)
    call: Callable[[], Any] = field(compare=False)
    done: Callable[[bool, Exception | None], None] = field(compare=False, default=lambda ok, exc: None)
    retry_conflict: bool = field(compare=False, default=False)


class Executor:
    def __init__(self, bucket: TokenBucket, max_in_flight: int, on_depth: Callable[[int], None] | None = None) -> None:
        self.bucket = bucket
        self.max_in_flight = max_in_flight
        self._queue: queue.PriorityQueue[Op] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._on_depth = on_depth or (lambda depth: None)
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def start(self) -> "Executor":
        for index in range(self.max_in_flight):
            thread = threading.Thread(target=self._worker, name=f"fleet-writer-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._queue.put(Op(-1, -1, "stop", lambda: None))

    def submit(self, priority: int, name: str, call: Callable[[], Any],
               done: Callable[[bool, Exception | None], None] | None = None, retry_conflict: bool = False) -> None:
        with self._lock:
            self._pending += 1
            self._on_depth(self._pending)
        self._queue.put(Op(priority, next(self._seq), name, call, done or (lambda ok, exc: None), retry_conflict))

    def drain(self) -> None:
        """Drop queued (not running) work: this replica lost the lease."""
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                return
            if op.seq >= 0:
                self._finish(op, False, RuntimeError("leadership lost"))

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    @property
    def pending(self) -> int:
        return self._pending

    def _finish(self, op: Op, ok: bool, exc: Exception | None) -> None:
        try:
            op.done(ok, exc)
        except Exception:  # noqa: BLE001 - a callback bug must not kill a writer thread
            log.exception("callback of %s failed", op.name)
        with self._idle:
            self._pending -= 1
            self._on_depth(self._pending)
            self._idle.notify_all()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, ApiCallError) else None
        return backoff_delay(state.attempt_number, retry_after)

    def _run(self, op: Op) -> Any:
        def retryable(exc: BaseException) -> bool:
            if not isinstance(exc, ApiCallError) or self._stop.is_set():
                return False
            if exc.status == 429:
                self.bucket.pause(exc.retry_after or 1.0)
            return is_retryable(exc.status) and (exc.status != 409 or op.retry_conflict)

        for attempt in Retrying(retry=retry_if_exception(retryable), wait=self._wait,
                                stop=stop_after_attempt(MAX_ATTEMPTS), reraise=True, sleep=self._stop.wait):
            with attempt:
                self.bucket.acquire(sleep=self._stop.wait)
                return op.call()

    def _worker(self) -> None:
        while not self._stop.is_set():
            op = self._queue.get()
            if op.seq < 0:
                return
            try:
                self._run(op)
            except Exception as exc:  # noqa: BLE001 - reported to the op's owner, who replans
                self._finish(op, False, exc)
            else:
                self._finish(op, True, None)
