"""End to end on the real engine: fixture repositories -> env images -> validated tasks, and what agents see.

One mining pass per session (module fixture) serves most tests; env images are content-hashed, so later
passes (re-run, resume after kill, Ray) hit the build cache.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
REPO_ROOT = Path(__file__).resolve().parents[2]


def mine_config(fixture_world, home: Path, repeats: int = 2):
    from envfarm.tasks.envsetup.base import BuildOptions
    from envfarm.tasks.pipeline import MineConfig

    wheels = tuple((p.name, p.read_bytes()) for p in sorted(fixture_world["wheelhouse"].iterdir()))
    return MineConfig(home=home, offline_dir=fixture_world["dump"], repeats=repeats, run_id="pytest-mine",
                      options=BuildOptions(wheelhouse=wheels, offline=True))


REPOS = [("acme/calc", ""), ("acme/broken", ""), ("acme/missing", "")]


@pytest.fixture(scope="module")
def mined(fixture_world, engine_client, base_image, tmp_path_factory):
    from envfarm.store import Store
    from envfarm.tasks.pipeline import run_inline

    home = tmp_path_factory.mktemp("mine-home")
    store = Store(f"sqlite:///{home / 'envfarm.db'}")
    config = mine_config(fixture_world, home)
    run_inline(REPOS, config, store)
    return {"store": store, "config": config, "home": home}


def rows(store, model):
    with store.session() as session:
        return {getattr(r, "instance_id", None) or getattr(r, "key", None) or r.repo: r for r in session.query(model).all()}


def test_funnel_validated_tasks_and_recorded_failures(mined):
    from envfarm.store.mining import MiningCandidateRow, MiningEnvRow, MiningRepoRow
    from envfarm.tasks.store import load_tasks

    store = mined["store"]
    tasks = {t.instance_id: t for t in load_tasks(store)}
    assert sorted(tasks) == ["acme__calc-2", "acme__calc-4"]
    assert tasks["acme__calc-2"].FAIL_TO_PASS == ["tests/test_calc.py::test_add"]
    assert tasks["acme__calc-2"].PASS_TO_PASS == ["tests/test_calc.py::test_twice"]
    assert tasks["acme__calc-4"].FAIL_TO_PASS == ["tests/test_sub.py::test_sub"]  # a new test file
    assert tasks["acme__calc-4"].PASS_TO_PASS == ["tests/test_sub.py::test_sub_zero"]
    install = tasks["acme__calc-2"].install
    assert install.log_parser == "pytest" and install.install and install.python == "3.11"
    candidates = rows(store, MiningCandidateRow)
    assert candidates["acme__broken-2"].status == "env_failed"
    assert candidates["acme__broken-2"].reason_class == "no_matching_distribution"
    envs = {r.repo: r for r in rows(store, MiningEnvRow).values()}
    assert envs["acme/broken"].status == "failed" and len(envs["acme/broken"].attempts) >= 2
    assert all(not a["ok"] for a in envs["acme/broken"].attempts)
    # A package no index has: the same plan is not retried on the other interpreters the machine offers.
    classes = [a["reason_class"] for a in envs["acme/broken"].attempts]
    assert classes[0] == "no_matching_distribution" and set(classes[1:]) == {"skipped"}
    repos = rows(store, MiningRepoRow)
    assert repos["acme/missing"].status == "failed" and repos["acme/missing"].reason_class == "repo_not_found"
    layer = candidates["acme__calc-2"].detail["instance_layer_bytes"]
    assert 0 < layer < 1_000_000  # thin: the clone and dependencies live in the shared env layer


def test_instance_image_hides_the_future(mined, fixture_world):
    from envfarm.sandbox.docker import DockerSandbox
    from envfarm.tasks.mirror import Mirror
    from envfarm.tasks.store import load_tasks

    task = next(t for t in load_tasks(mined["store"]) if t.instance_id == "acme__calc-2")
    mirror = Mirror(fixture_world["calc_mirror"])
    later = mirror.git("rev-list", "main", f"^{task.base_commit}").split()
    assert later  # the repository does have a future to hide
    with DockerSandbox(task.image, run_id="pytest", task_id=task.instance_id) as box:
        def sh(cmd: str) -> str:
            result = box.exec(cmd, workdir="/testbed", timeout=60)
            return result.output.strip() if result.ok else f"<exit {result.exit_code}> {result.output.strip()}"

        assert sh("git rev-parse HEAD") == task.base_commit
        assert set(sh("git log --all --format=%H").split()) == set(mirror.git("rev-list", task.base_commit).split())
        assert sh("git tag -l") == "" and sh("git branch -a --format='%(refname)'") == "refs/heads/main"
        assert sh("git remote") == "" and sh("git stash list") == "" and sh("git reflog --all") == ""
        assert sh("ls .git/packed-refs .git/logs .git/FETCH_HEAD .git/ORIG_HEAD 2>/dev/null; true") == ""
        assert "commit" not in sh("git fsck --unreachable --no-reflogs --no-progress 2>&1; true")
        for sha in later:  # not reachable and not even stored
            assert sh(f"git cat-file -e {sha}").startswith("<exit")
        assert "test_add" not in sh("cat tests/test_calc.py")  # nothing of test_patch is present
        assert sh("git status --porcelain") == ""
        assert sh("id -u") == "1000" and sh("touch calc/new.py && echo ok") == "ok"  # the agent can edit /testbed


def test_exported_task_grades_with_the_rl_verifier(mined):
    from envfarm.sandbox.docker import DockerSandbox
    from envfarm.tasks.store import load_tasks
    from envfarm.verifiers.swe import SweVerifier

    task = next(t for t in load_tasks(mined["store"]) if t.instance_id == "acme__calc-4")
    assert task.hints_text == "Seen for every pair of inputs."  # comments before the fix, carried into the task
    verifier = SweVerifier(timeout=300)
    with DockerSandbox(task.image, run_id="pytest", task_id=task.instance_id) as box:
        assert verifier.verify(task, box, task.patch).passed
    wrong = task.patch.replace("return a - b", "return b - a")
    with DockerSandbox(task.image, run_id="pytest", task_id=task.instance_id) as box:
        assert not verifier.verify(task, box, wrong).passed


def test_rerun_redoes_no_finished_work(mined):
    from envfarm.store.mining import MiningCandidateRow, MiningEnvRow
    from envfarm.tasks.pipeline import run_inline

    store = mined["store"]
    before = {k: (r.updated_at, r.attempts) for k, r in rows(store, MiningCandidateRow).items()}
    envs_before = {k: r.updated_at for k, r in rows(store, MiningEnvRow).items()}
    run_inline(REPOS, mined["config"], store)
    after = {k: (r.updated_at, r.attempts) for k, r in rows(store, MiningCandidateRow).items()}
    assert after == before
    assert {k: r.updated_at for k, r in rows(store, MiningEnvRow).items()} == envs_before


@pytest.mark.slow
def test_resume_after_kill(fixture_world, engine_client, base_image, mined, tmp_path):
    """SIGKILL the CLI mid-validation; the re-run finishes without redoing validated candidates."""
    repos = tmp_path / "repos.txt"
    repos.write_text("acme/calc\n")
    env = {**os.environ, "ENVFARM_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "envfarm.cli", "mine", "--repos", str(repos), "--offline", str(fixture_world["dump"]),
           "--wheelhouse", str(fixture_world["wheelhouse"]), "--no-index", "--workers", "0", "--repeats", "2"]
    db = tmp_path / "home" / "envfarm.db"
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first_done = None
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    got = conn.execute("select instance_id, updated_at from mining_candidates where status='validated'").fetchall()
            except sqlite3.OperationalError:
                continue
            if got:
                first_done = got[0]
                break
    assert first_done is not None, "the first run validated nothing before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("select instance_id, status from mining_candidates").fetchall())
        run_id = conn.execute("select id from runs where kind='mine'").fetchone()[0]
    assert sorted(s for s in states.values() if s != "filtered") == ["pending", "validated"]  # killed mid-way
    rerun = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=500)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with sqlite3.connect(db) as conn:
        validated = dict(conn.execute("select instance_id, updated_at from mining_candidates where status='validated'").fetchall())
    assert sorted(validated) == ["acme__calc-2", "acme__calc-4"]
    assert validated[first_done[0]] == first_done[1]  # finished work was not redone
    # The killed run's sandboxes are orphans that envfarm's gc removes by their run label.
    from envfarm.sandbox.gc import collect
    from envfarm.store import Store

    collect(engine_client, Store(f"sqlite:///{db}"))
    assert not engine_client.containers.list(all=True, filters={"label": f"envfarm.io/run={run_id}"})


@pytest.mark.ray
@pytest.mark.slow
def test_ray_driver(fixture_world, engine_client, base_image, mined, tmp_path):
    import ray

    from envfarm.store import Store
    from envfarm.tasks.pipeline import run_ray
    from envfarm.tasks.store import funnel

    url = f"sqlite:///{tmp_path / 'envfarm.db'}"
    Store(url)
    config = mine_config(fixture_world, tmp_path, repeats=1)
    seen: dict[str, int] = {}
    try:
        run_ray([("acme/calc", "")], config, url, workers=2, on_progress=lambda what, n=1: seen.__setitem__(what, seen.get(what, 0) + n))
    finally:
        ray.shutdown()
    summary = funnel(Store(url))
    assert summary["validated"] == 2 and seen == {"repos": 1, "candidates": 2, "env_ok": 2, "validated": 2}
