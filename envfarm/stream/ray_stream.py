"""The stream as a Ray actor (local Ray on one machine, the same code on a cluster), and the client
side that turns `StreamFull` into waiting: back-pressure slows the rollout workers, it never drops."""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from envfarm.store.db import open_store
from envfarm.stream.events import RewardEvent
from envfarm.stream.ledger import RewardLedger
from envfarm.stream.stream import ConsumedBatch, RewardStream, StreamFull


class _StreamActor:
    """Holds the bounded in-memory queue; the single writer of the run's ledger rows.

    Ray restarts it when it dies (and retries the calls in flight): the new incarnation reloads what the
    ledger holds uncommitted, which can include a batch the dead one handed out. The stream asks the
    ledger before every hand-out, so the trainer's commit of that batch, landing here, is what stops it
    being handed out again."""

    def __init__(self, store_url: str | None, run_id: str, **options: Any) -> None:
        ledger = RewardLedger(open_store(store_url), run_id) if store_url is not None else None
        self.stream = RewardStream(ledger, **options)
        self.recovered = self.stream.recover()

    def publish(self, event: dict) -> str:
        try:
            return self.stream.publish(RewardEvent.from_dict(event))
        except StreamFull:
            return "full"

    def consume(self, max_groups: int, current_version: int) -> ConsumedBatch:
        return self.stream.consume(max_groups, current_version)

    def commit(self, rollout_ids: list[str], outcome: dict | None = None) -> int:
        return self.stream.commit(rollout_ids, outcome)

    def requeue_uncommitted(self) -> int:
        return self.stream.requeue_uncommitted()

    def stats(self) -> dict:
        return {**self.stream.stats(), "recovered": self.recovered, "pid": os.getpid(),
                "restarted": ray.get_runtime_context().was_current_actor_reconstructed}


StreamActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(_StreamActor)


def publish_blocking(actor: Any, event: RewardEvent, poll_s: float = 0.05, max_wait_s: float = 3600.0) -> str:
    """Publish, waiting (with backoff) while the stream is full. Returns "accepted" or "duplicate"."""
    deadline = time.monotonic() + max_wait_s
    delay = poll_s
    body = event.to_dict()
    while True:
        status = ray.get(actor.publish.remote(body))
        if status != "full":
            return status
        if time.monotonic() > deadline:
            raise StreamFull(f"reward stream stayed full for {max_wait_s:.0f}s", "check that the trainer is running")
        time.sleep(delay)
        delay = min(1.0, delay * 1.5)
