"""Shared by the integration tests: they run the scaffold's own calc task (tests/trainer/rl/test_rl_agent.py:
gold fix -> reward 1, no change -> 0) on the real engine, and drive models through the scripted
OpenAI-compatible server of tests/agent."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "trainer" / "rl"))
sys.path.insert(0, str(TESTS / "agent"))

from test_rl_agent import GOLD_PATCH  # noqa: E402,F401 - re-exported

GOLD_EDIT = {"path": "calc.py", "old": "    return a - b\n", "new": "    return a + b\n"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def containers_of(engine_client, run_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """The containers a run owns (the engine's list entries: Id, Labels, State), by the run label every sandbox
    carries. The low-level list: the high-level one inspects each container and fails on one that another
    test removes meanwhile."""
    from envfarm.sandbox.docker import LABEL_RUN

    return engine_client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})


def wait_until(predicate, seconds: float, what: str, show=lambda: "") -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` (engines list a container a moment after it changes); `show()` says what was seen."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what} (seen: {show()})")
        time.sleep(0.2)


