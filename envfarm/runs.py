"""Runs: every job that owns containers registers itself, so gc can tell a live owner from a dead one."""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from envfarm.store.db import Store
from envfarm.store.models import RunRow, SandboxEventRow, utcnow


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM unwind like SIGINT does: `with` blocks close their sandboxes, run_scope records the run
    as failed, atexit closes what is left. Without it a SIGTERM'd owner left its containers (issue #13);
    SIGKILL stays `envfarm gc`'s job. Only the main thread can set handlers, and a handler someone else
    installed (a server, Ray) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except (ValueError, OSError):  # not the main interpreter / unsupported platform
        pass


def new_run_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


@contextmanager
def run_scope(store: Store, kind: str, config: dict[str, Any] | None = None, run_id: str | None = None) -> Iterator[RunRow]:
    """Register a run for the block; mark it finished or failed (with the error) when the block ends."""
    exit_cleanly_on_sigterm()
    run = RunRow(id=run_id or new_run_id(kind), kind=kind, status="running", host=socket.gethostname(), pid=os.getpid(), config=config or {})
    with store.session() as session:
        session.merge(run)
    try:
        yield run
    except BaseException as exc:
        finish_run(store, run.id, "failed", {"error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    else:
        finish_run(store, run.id, "finished", run.summary or {})


def finish_run(store: Store, run_id: str, status: str, summary: dict[str, Any]) -> None:
    with store.session() as session:
        row = session.get(RunRow, run_id)
        if row is not None:
            row.status = status
            row.summary = summary
            row.finished_at = utcnow()


def sandbox_event_recorder(store: Store, run_id: str):  # type: ignore[no-untyped-def]
    """An `on_event` hook for DockerSandbox that writes lifecycle events to the store."""

    def record(kind: str, sandbox: Any, detail: dict[str, Any]) -> None:
        with store.session() as session:
            session.add(SandboxEventRow(run_id=run_id, sandbox_id=sandbox.id, image=sandbox.image, event=kind, detail=detail))

    return record
