"""A rollout worker whose grading sandbox dies: the grading is retried on a fresh sandbox, or, with no
retries left, every rollout of the call is published as failed with its reason (accounted, never trained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from envfarm.trainer.loop.config import TINY, load_config

pytestmark = [pytest.mark.ray, pytest.mark.engine]
REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("retries, expect_failed", [(1, False), (0, True)])
def test_dead_grading_sandbox_is_replaced_or_recorded(ray_local, base_image, engine_client, retries, expect_failed):
    if not (TINY / "model.safetensors").exists():
        pytest.skip(f"pretrained tiny checkpoint missing in {TINY}: run make pretrain-tiny")
    ray = ray_local
    from envfarm.stream.ray_stream import StreamActor
    from envfarm.trainer.loop.family import GroupWork
    from envfarm.trainer.loop.worker import RolloutWorker

    cfg = load_config(REPO / "trainer/configs/demo.yaml", ["rollout.group_size=2", f"rollout.grade_retries={retries}",
                                                          "policy.max_new_tokens=4", "tasks.names=[int-literal]"])
    stream = StreamActor.remote(None, "pytest-worker", capacity=100)
    worker = RolloutWorker(cfg, 0, "pytest", stream)
    try:
        dead = worker._sandbox()
        engine_client.containers.get(dead.container.id).kill()  # the grading sandbox dies before the call
        stats = worker.rollout([GroupWork("g1", "int-literal")], [ray.put(worker.policy.model.state_dict())], 0)
        batch = ray.get(stream.consume.remote(10, 0))
        events = batch.events
        assert len(events) == 2 and {e.rollout_id for e in events} == {"g1-0", "g1-1"}
        if expect_failed:
            assert stats.failed == 2 and all(e.failed and e.reward == 0 for e in events)
            assert "sandbox" in events[0].failure
        else:
            assert stats.failed == 0 and not any(e.failed for e in events)
            assert worker.sandbox is not None and worker.sandbox is not dead
    finally:
        worker.close()
        ray.kill(stream)
