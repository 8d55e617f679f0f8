"""The stream delivers at least once: a stream actor killed between a consume and its commit recovers the batch
from the ledger and hands it out again. The trainer must see each rollout once (for the update and for the
step's reward_mean and counts), and still commit it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from envfarm.stream import RewardEvent
from envfarm.trainer.loop.config import load_config
from envfarm.trainer.loop.dispatcher import RolloutDispatcher, fresh_groups
from envfarm.trainer.scheduler import DataScheduler

REPO = Path(__file__).resolve().parents[3]


def ev(rid: str, group: str, reward: float = 1.0) -> RewardEvent:
    return RewardEvent(rollout_id=rid, task_id="t", policy_version=0, reward=reward, passed=reward > 0,
                       group_id=group, group_size=2, payload={"tokens": [1]})


def test_fresh_groups_leave_out_what_was_handed_out_and_count_it() -> None:
    groups = [[ev("a0", "a"), ev("a1", "a")], [ev("b0", "b"), ev("b1", "b")], [ev("c0", "c"), ev("c1", "c")]]
    kept, again = fresh_groups(groups, {"a0", "a1", "b1"})
    assert [[e.rollout_id for e in g] for g in kept] == [["b0"], ["c0", "c1"]] and again == 3
    assert fresh_groups(groups, set()) == (groups, 0)


@pytest.mark.ray
def test_a_restarted_stream_actor_never_hands_the_trainer_a_rollout_twice(store, ray_local, tmp_path) -> None:
    from envfarm.stream.ray_stream import StreamActor, publish_blocking

    run_id = f"run-{uuid.uuid4().hex[:6]}"
    actor = StreamActor.remote(store.url, run_id, capacity=1000, max_staleness=10)
    try:
        events = [ev(f"g{g}-{i}", f"g{g}") for g in range(6) for i in range(2)]
        assert {publish_blocking(actor, e) for e in events} == {"accepted"}
        cfg = load_config(REPO / "trainer/configs/demo.yaml", ["rollout.num_workers=1"])
        dispatcher = RolloutDispatcher(cfg, run_id, actor, DataScheduler([("t", "demo", "t")], cfg.scheduler), tmp_path, Console(quiet=True))
        first = dispatcher.next_groups(2)
        assert first.redelivered == 0 and len(first.events) == 4
        pid = ray_local.get(actor.stats.remote())["pid"]
        ray_local.kill(actor, no_restart=False)  # dies before the trainer committed the 4 it handed out
        deadline = time.time() + 300  # a guard against a hang, not a measurement
        while ray_local.get(actor.stats.remote())["pid"] == pid and time.time() < deadline:
            time.sleep(0.1)
        rest = dispatcher.next_groups(4)
        seen = [e.rollout_id for e in first.events] + [e.rollout_id for e in rest.events]
        assert sorted(seen) == sorted(e.rollout_id for e in events), "each rollout reaches the trainer exactly once"
        assert rest.redelivered == 4, "the restarted actor handed the uncommitted batch out again; it was left out"
    finally:
        ray_local.kill(actor, no_restart=True)


def test_calls_that_raise_are_dropped_until_every_worker_keeps_failing(tmp_path) -> None:
    """A call that raises (a family bug) drops its groups and the run goes on; three failures in a row per
    worker stop it with the error named, instead of a run that never trains."""
    from envfarm.errors import EnvfarmError
    from envfarm.trainer.loop.dispatcher import MAX_CONSECUTIVE_FAILED_CALLS

    cfg = load_config(REPO / "trainer/configs/demo.yaml", ["rollout.num_workers=2"])
    dispatcher = RolloutDispatcher(cfg, "r", None, DataScheduler([("t", "demo", "t")], cfg.scheduler), tmp_path, Console(quiet=True))
    dispatcher.workers = [object(), object()]
    for _ in range(MAX_CONSECUTIVE_FAILED_CALLS * 2 - 1):
        dispatcher._call_failed(0, [], RuntimeError("KeyError: 'task-9'"))
    assert dispatcher.totals.failed_calls == MAX_CONSECUTIVE_FAILED_CALLS * 2 - 1
    with pytest.raises(EnvfarmError, match=r"rollout calls all failed; the last with: KeyError: 'task-9'"):
        dispatcher._call_failed(1, [], RuntimeError("KeyError: 'task-9'"))
