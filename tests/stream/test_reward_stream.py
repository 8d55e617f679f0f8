"""The reward stream on the real store (SQLite and PostgreSQL): dedup, complete groups, staleness,
back-pressure, restart without loss or double counting; and the Ray actor with a kill in the middle."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest

from envfarm.errors import EnvfarmError
from envfarm.store.models import RewardRow
from envfarm.stream import RewardEvent, RewardLedger, RewardStream, StreamFull


def ev(rid: str, group: str = "", size: int = 1, version: int = 0, reward: float = 1.0) -> RewardEvent:
    return RewardEvent(rollout_id=rid, task_id="t1", policy_version=version, reward=reward, passed=reward > 0,
                       group_id=group, group_size=size, payload={"tokens": [1, 2, 3]})


def rows(store):  # type: ignore[no-untyped-def]
    with store.session() as s:
        return {r.rollout_id: (r.value, r.consumed_at is not None) for r in s.query(RewardRow).all()}


def test_duplicate_rollout_ids_count_once_even_across_streams(store):
    stream = RewardStream(RewardLedger(store, "run-a"))
    assert stream.publish(ev("r1")) == "accepted"
    assert stream.publish(ev("r1", reward=0.0)) == "duplicate"  # a retried verification
    other = RewardStream(RewardLedger(store, "run-a"))  # e.g. a second stream process after a restart
    assert other.publish(ev("r1")) == "duplicate"
    assert rows(store) == {"r1": (1.0, False)}
    assert len(stream.consume(10, 0).events) == 1 and other.consume(10, 0).events == []


def test_only_complete_groups_are_handed_out(store):
    stream = RewardStream(RewardLedger(store, "run-g"))
    stream.publish(ev("a1", "A", 2))
    stream.publish(ev("b1", "B", 2))
    stream.publish(ev("b2", "B", 2))
    batch = stream.consume(10, 0)
    assert [[e.rollout_id for e in g] for g in batch.groups] == [["b1", "b2"]]
    stream.publish(ev("a2", "A", 2))
    assert [e.rollout_id for e in stream.consume(10, 0).events] == ["a1", "a2"]


def test_stale_groups_are_dropped_and_accounted_or_downweighted(store):
    stream = RewardStream(RewardLedger(store, "run-s"), max_staleness=1)
    stream.publish(ev("old", version=1))
    stream.publish(ev("ok", version=2))
    batch = stream.consume(10, current_version=3)
    assert [e.rollout_id for e in batch.events] == ["ok"] and batch.dropped_stale == 1
    assert rows(store)["old"] == (1.0, True)  # committed as stale: never handed out again, not lost silently
    assert RewardStream(RewardLedger(store, "run-s")).recover() == 1  # only "ok" (uncommitted) comes back

    soft = RewardStream(None, max_staleness=1, stale_policy="downweight", stale_decay=0.5)
    soft.publish(ev("x", version=0))
    batch = soft.consume(10, current_version=3)
    assert batch.weights[batch.groups[0][0].group_id] == pytest.approx(0.25) and batch.max_staleness_seen == 3
    with pytest.raises(EnvfarmError, match="stale_policy"):
        RewardStream(None, stale_policy="ignore")


def test_back_pressure_refuses_new_groups_but_completes_admitted_ones(store):
    stream = RewardStream(RewardLedger(store, "run-bp"), capacity=2)
    stream.publish(ev("g1a", "G1", 3))
    stream.publish(ev("g1b", "G1", 3))
    with pytest.raises(StreamFull, match="capacity 2"):
        stream.publish(ev("g2a", "G2", 1))
    assert stream.publish(ev("g1c", "G1", 3)) == "accepted"  # over capacity, but it completes an admitted group
    assert "g2a" not in rows(store)  # refused means not recorded: the worker will publish it again
    assert len(stream.consume(1, 0).events) == 3
    assert stream.publish(ev("g2a", "G2", 1)) == "accepted"
    assert stream.stats()["full"] == 1


def test_a_restarted_trainer_gets_uncommitted_rewards_back_and_committed_ones_never(store):
    stream = RewardStream(RewardLedger(store, "run-r"))
    for i in range(4):
        stream.publish(ev(f"r{i}"))
    first = stream.consume(2, 0)
    stream.commit([e.rollout_id for e in first.events], {"step": 1})
    stream.consume(2, 0)  # consumed, then the trainer dies before committing
    assert stream.commit([e.rollout_id for e in first.events]) == 0  # idempotent

    fresh = RewardStream(RewardLedger(store, "run-r"))  # the stream came back with the trainer
    assert fresh.recover() == 2
    assert sorted(e.rollout_id for e in fresh.consume(10, 0).events) == ["r2", "r3"]
    assert RewardLedger(store, "run-r").counts() == {"total": 4, "pending": 2, "committed": 2}

    assert stream.requeue_uncommitted() == 2  # the stream lived on, the trainer restarted
    assert sorted(e.rollout_id for e in stream.consume(10, 0).events) == ["r2", "r3"]


def test_failure_and_turns_survive_the_ledger_and_old_rows_read_the_same(store):
    turns = [{"tokens": [1]}, {"tokens": [2, 3]}]
    stream = RewardStream(RewardLedger(store, "run-t"))
    stream.publish(RewardEvent(rollout_id="f1", task_id="t1", policy_version=0, reward=0.0, failure="sandbox_error"))
    stream.publish(RewardEvent(rollout_id="m1", task_id="t1", policy_version=0, reward=1.0, passed=True, turns=turns))
    back = {e.rollout_id: e for e in RewardLedger(store, "run-t").pending()}  # what a restarted trainer reads
    assert back["f1"].failed and back["f1"].failure == "sandbox_error" and back["f1"].payloads == [{}]
    assert not back["m1"].failed and back["m1"].payloads == turns

    # A row written when both lived in dict keys (details.failure, payload.turns) reads as the typed fields.
    legacy = RewardEvent.from_dict({"rollout_id": "old", "task_id": "t1", "policy_version": 0, "reward": 0.0,
                                    "details": {"failure": "verifier_sandbox_error", "steps": 3}, "payload": {"turns": turns}})
    assert (legacy.failure, legacy.details, legacy.turns, legacy.payload) == ("verifier_sandbox_error", {"steps": 3}, turns, {})


def test_out_of_order_concurrent_publishers_with_retries_lose_and_double_nothing(store):
    stream = RewardStream(RewardLedger(store, "run-c"), capacity=10_000)
    ids = [f"c{i}" for i in range(60)]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine = ids[:]
        rng.shuffle(mine)
        for rid in mine + mine[:10]:  # every worker retries some
            stream.publish(ev(rid, version=rng.randint(0, 1)))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = stream.consume(1000, 1).events
    assert sorted(e.rollout_id for e in got) == sorted(ids)
    assert stream.stats()["duplicates"] == 3 * 70 - 60
    assert len(rows(store)) == 60


@pytest.mark.ray
def test_ray_actor_back_pressure_and_actor_kill_lose_nothing(tmp_path, ray_local):
    ray = ray_local
    from envfarm.stream.ray_stream import StreamActor, publish_blocking

    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test helpers travel by value
    url = f"sqlite:///{tmp_path / 'stream.db'}"
    run_id = f"run-{uuid.uuid4().hex[:6]}"
    actor = StreamActor.remote(url, run_id, capacity=4, max_staleness=10)

    @ray.remote(num_cpus=0)
    def produce(start: int, n: int) -> list[str]:
        return [publish_blocking(actor, ev(f"p{i}")) for i in range(start, start + n)]

    producers = [produce.remote(0, 10), produce.remote(5, 10)]  # overlapping ids: 15 distinct, 5 duplicates
    time.sleep(2.0)
    assert ray.get(actor.stats.remote())["waiting"] <= 4  # producers are held back, not dropping
    got: list[str] = []
    killed = False
    deadline = time.time() + 180  # a loaded shared machine restarts actors slowly
    while len(got) < 15 and time.time() < deadline:
        batch = ray.get(actor.consume.remote(3, 0))
        got += [e.rollout_id for e in batch.events]
        ray.get(actor.commit.remote([e.rollout_id for e in batch.events]))
        if len(got) >= 6 and not killed:
            ray.kill(actor, no_restart=False)  # the stream actor dies; Ray restarts it from the ledger
            killed = True
        time.sleep(0.1)
    statuses = [s for p in producers for s in ray.get(p)]
    assert sorted(got) == sorted(f"p{i}" for i in range(15)) and len(got) == len(set(got))
    # At-least-once: a publish the dead actor had recorded but not answered is retried and comes back
    # "duplicate", so accepted may be below 15, but every answer is one of the two and nothing is lost.
    assert len(statuses) == 20 and set(statuses) <= {"accepted", "duplicate"} and 10 <= statuses.count("accepted") <= 15
    assert killed


@pytest.mark.parametrize("commit_through", ["the stream that handed them out", "the stream that recovered them"])
def test_a_committed_reward_is_never_handed_out_again_whichever_stream_recovered_it(store, commit_through):
    first = RewardStream(RewardLedger(store, "run-x"))
    for i in range(10):
        first.publish(ev(f"x{i}"))
    batch = first.consume(10, 0)
    assert len(batch.events) == 10
    second = RewardStream(RewardLedger(store, "run-x"))  # e.g. a restarted stream process
    assert second.recover() == 10  # consumed but not committed: at-least-once, they come back
    committer = first if commit_through == "the stream that handed them out" else second
    assert committer.commit([e.rollout_id for e in batch.events], {"step": 1}) == 10
    assert second.consume(10, 0).events == [] and first.consume(10, 0).events == []
    assert RewardLedger(store, "run-x").counts() == {"total": 10, "pending": 0, "committed": 10}
    assert second.stats()["skipped_committed"] == 10


def test_a_group_committed_in_part_elsewhere_hands_out_only_the_rest(store):
    stream = RewardStream(RewardLedger(store, "run-p"))
    for rid in ("p1", "p2", "p3"):
        stream.publish(ev(rid, "P", 3))
    RewardLedger(store, "run-p").commit(["p2"])  # another process committed one member
    assert [e.rollout_id for e in stream.consume(10, 0).events] == ["p1", "p3"]
    assert stream.consume(10, 0).events == []


def _drain_with_kills(ray, actor, kills: int) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    """Consume in small batches and commit each one, killing the actor between a consume and its commit
    and committing only once the restarted actor (which reloaded the batch from the ledger) answers."""
    handed: list[str] = []
    killed = 0
    while True:
        ids = [e.rollout_id for e in ray.get(actor.consume.remote(4, 0)).events]
        if not ids:
            return handed, killed
        handed += ids
        if killed < kills:
            pid = ray.get(actor.stats.remote())["pid"]
            ray.kill(actor, no_restart=False)  # dies holding a batch the trainer has not committed
            killed += 1
            deadline = time.time() + 300  # a guard against a hang, not a measurement
            while (stats := ray.get(actor.stats.remote()))["pid"] == pid and time.time() < deadline:
                time.sleep(0.1)
            assert stats["restarted"] and stats["waiting"] >= len(ids)  # the new incarnation holds the batch again
        ray.get(actor.commit.remote(ids, {"step": len(handed)}))


@pytest.mark.ray
def test_killing_the_stream_actor_between_consume_and_commit_loses_nothing_and_hands_nothing_out_twice(store, ray_local):
    from envfarm.stream.ray_stream import StreamActor, publish_blocking

    run_id = f"run-{uuid.uuid4().hex[:6]}"
    actor = StreamActor.remote(store.url, run_id, capacity=1000, max_staleness=10)
    try:
        ids = [f"k{i}" for i in range(30)]
        assert [publish_blocking(actor, ev(rid)) for rid in ids] == ["accepted"] * 30
        handed, killed = _drain_with_kills(ray_local, actor, kills=3)
    finally:
        ray_local.kill(actor, no_restart=True)
    assert killed == 3
    assert sorted(set(handed)) == sorted(ids)  # nothing lost
    assert len(handed) == len(ids)  # nothing handed out twice: every batch was committed before the next consume
    assert RewardLedger(store, run_id).counts() == {"total": 30, "pending": 0, "committed": 30}
