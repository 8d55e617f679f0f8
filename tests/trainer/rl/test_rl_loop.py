"""The RL loop for real: local Ray, rollout workers with sandboxes, the reward stream and its ledger,
GRPO/MOPD updates with routing replay, checkpoints; then faults: a resumed run, a killed worker, a
killed trainer. The invariant checked each time: every reward is trained at most once and none is lost
(each ledger row is committed, or still pending for the next run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envfarm.store.models import RewardRow
from envfarm.trainer.loop.config import TINY, load_config

pytestmark = [pytest.mark.ray, pytest.mark.engine]
REPO = Path(__file__).resolve().parents[3]
FAST = ["rollout.group_size=4", "rollout.groups_per_call=2", "train.groups_per_step=2", "policy.max_new_tokens=8", "train.eval_samples=4",
        "tasks.names=[any-value,int-literal,int-sum,else-branch,paren]"]


@pytest.fixture(autouse=True)
def _needs_checkpoint_and_base(base_image):  # type: ignore[no-untyped-def]
    if not (TINY / "model.safetensors").exists():
        pytest.skip(f"pretrained tiny checkpoint missing in {TINY}: run make pretrain-tiny")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def ledger(url: str) -> dict[str, bool]:
    from envfarm.store.db import Store

    store = Store(url)
    try:
        with store.session() as s:
            return {r.rollout_id: r.consumed_at is not None for r in s.query(RewardRow).all()}
    finally:
        store.dispose()


def check_exactly_once(out: Path, url: str) -> list[str]:
    trained = [rid for row in metrics(out) for rid in row["rollout_ids"]]
    assert len(trained) == len(set(trained)), "a reward was used by two surviving steps"
    rows = ledger(url)
    assert set(trained) <= {rid for rid, committed in rows.items() if committed}  # everything trained is committed
    return trained


def test_train_checkpoint_resume(tmp_path, ray_local):
    from envfarm.trainer.loop.run import train

    out, url = tmp_path / "run", f"sqlite:///{tmp_path / 'l.db'}"
    cfg = load_config(REPO / "trainer/configs/demo.yaml", [*FAST, "train.steps=3", "train.checkpoint_every=2",
                                                          f"train.out_dir={out}", f"store_url={url}"])
    first = train(cfg)
    assert first["steps"] == 3 and (out / "checkpoint" / "trainer.pt").exists() and (out / "reward.png").stat().st_size > 0
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["groups"] == 2 for r in rows)
    assert all(r["routing_agreement"] > 0 for r in rows if "routing_agreement" in r)
    check_exactly_once(out, url)
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["when"] for e in evals] == ["start", "end"] and len(evals[0]["per_task"]) == 5

    resumed = train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 5})}))
    assert resumed["run_id"] == first["run_id"] and resumed["steps"] == 5 and resumed["steps_this_process"] == 2
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4, 5]
    check_exactly_once(out, url)


@pytest.mark.slow
def test_mopd_run_with_a_teacher(tmp_path, ray_local):
    from envfarm.trainer.loop.run import train

    out = tmp_path / "mopd"
    cfg = load_config(REPO / "trainer/configs/demo.yaml", [*FAST, "train.steps=2", "algo.name=mopd", f"algo.teachers={{code: {TINY}}}",
                                                          f"train.out_dir={out}", f"store_url=sqlite:///{tmp_path / 'm.db'}"])
    summary = train(cfg)
    rows = metrics(out)
    assert summary["steps"] == 2 and all("reverse_kl" in r and "dropped_frac" in r for r in rows if r["trained_groups"])


def _launch(out: Path, url: str, steps: int) -> subprocess.Popen:
    env = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///run/podman/podman.sock")}
    cmd = [sys.executable, "-m", "envfarm.cli", "train", "--config", "trainer/configs/demo.yaml", *FAST, f"train.steps={steps}",
           "train.checkpoint_every=2", f"train.out_dir={out}", f"store_url={url}"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"trainer exited early ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"timed out waiting for the trainer: {proc.stdout.read()[-3000:]}")


@pytest.mark.slow
def test_killed_worker_and_killed_trainer_lose_and_double_nothing(tmp_path):
    out, url = tmp_path / "run", f"sqlite:///{tmp_path / 'k.db'}"
    proc = _launch(out, url, steps=6)
    try:
        _wait_for(lambda: (out / "metrics.jsonl").exists() and len(metrics(out)) >= 1, 240, proc)
        pid = json.loads((out / "workers.json").read_text())["pids"][0]
        os.kill(pid, signal.SIGKILL)  # a rollout worker dies mid-run
        _wait_for(lambda: len(metrics(out)) >= 3, 240, proc)  # step 2 is checkpointed, step 3 is not
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer (and its local Ray) die
        proc.wait(30)
        killed_at = len(metrics(out))
        first_log = proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "rollout worker 0 died" in first_log
    assert killed_at >= 3
    lost_steps = [r for r in metrics(out) if r["step"] > 2]
    redo = {rid for r in lost_steps for rid in r["rollout_ids"]}

    proc = _launch(out, url, steps=4)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "resumed run" in output and "at step 2" in output
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    trained = check_exactly_once(out, url)
    # The rewards of the un-checkpointed step came back from the ledger and were trained (or dropped as
    # stale, which commits them too): none is left pending and none is counted twice.
    rows = ledger(url)
    assert all(rows[rid] for rid in redo)
    assert len(set(trained) & redo) + sum(1 for rid in redo if rid not in trained) == len(redo)
