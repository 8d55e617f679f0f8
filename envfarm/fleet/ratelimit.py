"""Client-side rate limiting: a token bucket (QPS + burst) and the backoff policy for 429/5xx/409.

No Python Kubernetes client ships client-go's flowcontrol limiter, so this is ours. The bucket works on
an injected clock, so the threads of the real controller and the discrete-event simulator run the same
code. `reserve()` always takes a token and says how long to wait for it (like Go's rate.Limiter
Reserve): callers never spin, and the bucket never lets more than `burst + qps * t` calls through in
any window of t seconds, which is what the benchmark checks.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable

Clock = Callable[[], float]


class TokenBucket:
    def __init__(self, qps: float, burst: int, clock: Clock = time.monotonic) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"token bucket needs qps > 0 and burst >= 1, got qps={qps} burst={burst}")
        self.qps = float(qps)
        self.burst = int(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now

    def reserve(self) -> float:
        """Take one token; return the seconds the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.qps
            return max(wait, self._paused_until - now)

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        wait = self.reserve()
        if wait > 0:
            sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """The server said 429 (Retry-After): every caller of this bucket waits, not just the one that
        got it, as client-go's shared limiter would make them."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def set_rate(self, qps: float, burst: int) -> None:
        with self._lock:
            self._refill(self._clock())
            self.qps, self.burst = float(qps), int(burst)
            self._tokens = min(self._tokens, float(burst))


RETRYABLE_STATUS = frozenset({409, 429, 500, 502, 503, 504})
MAX_ATTEMPTS = 6


def backoff_delay(attempt: int, retry_after: float | None = None, base: float = 0.05, cap: float = 10.0,
                  rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor, not a suggestion."""
    draw = (rng or random).uniform(0, min(cap, base * (2 ** attempt)))
    return max(draw, retry_after or 0.0)


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status == 0  # 0: connection reset / timeout
