"""Partial rollouts for real: a rollout worker with a per-call budget parks unfinished groups (publishing
nothing of them), continues them under later policy versions, and publishes each rollout once, stamped
with the version that started it; then the whole loop with a small token budget: continued rollouts keep
their starting version, nothing older than the staleness limit is trained on, no reward counts twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envfarm.store.models import RewardRow
from envfarm.trainer.loop.config import TINY, load_config

pytestmark = [pytest.mark.ray, pytest.mark.engine]
REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "trainer/configs/demo.yaml"


@pytest.mark.parametrize("budget", [["rollout.partial.token_budget=1"],
                                    ["rollout.partial.time_budget_s=1e-9", "rollout.partial.segment_tokens=1"]],
                         ids=["token-budget", "time-budget"])
def test_worker_parks_continues_and_publishes_once(ray_local, base_image, budget):
    ray = ray_local
    from envfarm.stream.ray_stream import StreamActor
    from envfarm.trainer.loop.family import GroupWork
    from envfarm.trainer.loop.worker import RolloutWorker

    # A fresh (untrained) policy almost never emits the stop newline, so most rollouts need all 3 tokens.
    cfg = load_config(DEMO, ["policy.checkpoint=null", "rollout.group_size=4", "policy.max_new_tokens=3", "tasks.names=[int-literal]",
                             "rollout.partial.enabled=true", *budget])
    stream = StreamActor.remote(None, "pytest-partial", capacity=100, max_staleness=5)
    worker = RolloutWorker(cfg, 0, "pytest", stream)
    try:
        weights = [ray.put(worker.policy.model.state_dict())]
        work = [GroupWork("g1", "int-literal", started_version=0)]
        first, version, calls = None, 0, []
        while True:
            stats = worker.rollout(work, weights, version)
            calls.append(stats)
            first = first or stats.parked
            if not stats.parked:
                break
            assert ray.get(stream.stats.remote())["accepted"] == 0  # nothing of an unfinished group is published
            assert stats.parked[0].started_version == 0
            work, version = stats.parked, version + 1
            assert version < 10, "the group never finished"
        events = ray.get(stream.consume.remote(10, version)).events
        lengths = [len(payload_tokens(e)) for e in events]
        assert sorted(e.rollout_id for e in events) == ["g1-0", "g1-1", "g1-2", "g1-3"]
        assert len(calls) == max(lengths) > 1  # one token per call: the longest rollout set the number of calls
        for e in events:
            n = len(payload_tokens(e))
            assert e.policy_version == 0 and e.details["segment_versions"] == list(range(n))
            assert len(e.payload["logprobs"]) == n and e.payload["routing"]["shape"][0] == len(e.payload["prompt"]) + n
        firsts = {m["payload"]["tokens"][0] for m in first[0].members}
        assert {payload_tokens(e)[0] for e in events} == firsts  # continuation kept the first segment's tokens

        again = worker.rollout(work, weights, version)  # a retried call (e.g. after a worker died)
        assert again.duplicates == 4 and ray.get(stream.stats.remote())["accepted"] == 4
    finally:
        worker.close()
        ray.kill(stream)


def payload_tokens(event) -> list[int]:  # type: ignore[no-untyped-def]
    return list(event.payload["tokens"])


def _ledger_rows(url: str) -> dict[str, dict]:
    from envfarm.store.db import Store

    store = Store(url)
    try:
        with store.session() as s:
            return {r.rollout_id: {"version": r.policy_version, "committed": r.consumed_at is not None,
                                   "group": r.details["event"]["group_id"],
                                   "segments": r.details["event"]["details"].get("segment_versions", [])}
                    for r in s.query(RewardRow).all()}
    finally:
        store.dispose()


def test_loop_with_a_token_budget_continues_rollouts_within_the_staleness_limit(tmp_path, ray_local, base_image):
    if not (TINY / "model.safetensors").exists():
        pytest.skip(f"pretrained tiny checkpoint missing in {TINY}: run make pretrain-tiny")
    from envfarm.trainer.loop.run import train

    out, url, limit = tmp_path / "run", f"sqlite:///{tmp_path / 'p.db'}", 1
    cfg = load_config(DEMO, ["rollout.group_size=4", "rollout.groups_per_call=2", "train.groups_per_step=2", "policy.max_new_tokens=8",
                             "train.eval_samples=0", "tasks.names=[any-value,int-literal,int-sum,else-branch,paren]", "train.steps=4",
                             "train.checkpoint_every=2", f"stream.max_staleness={limit}", "rollout.partial.enabled=true",
                             "rollout.partial.token_budget=2", f"train.out_dir={out}", f"store_url={url}"])
    summary = train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    ledger = _ledger_rows(url)
    assert summary["steps"] == 4 and summary["partial"]["resumed_groups"] > 0

    trained = [rid for r in rows for rid in r["rollout_ids"]]
    assert len(trained) == len(set(trained))  # no reward used twice
    assert all(ledger[rid]["committed"] for rid in trained)
    for r in rows:  # consumed under version r["version"] - 1: none older than the limit
        assert all(r["version"] - 1 - ledger[rid]["version"] <= limit for rid in r["rollout_ids"]), r

    spanning = [x for x in ledger.values() if len(set(x["segments"])) > 1]
    assert spanning, "no rollout was continued under a newer policy"
    assert all(x["version"] == x["segments"][0] and x["segments"] == sorted(x["segments"]) for x in ledger.values())
    groups: dict[str, int] = {}
    for x in ledger.values():
        groups[x["group"]] = groups.get(x["group"], 0) + 1
    assert set(groups.values()) == {4}  # whole groups only: a parked or discarded group published nothing
