"""Imported tasks on the real engine: environments from each source, validation, and `envfarm eval`.

One small repository (acme/calc, made here with git) stands for a dataset's project. Its task is
written as a SWE-rebench row (an install recipe, built here from the repository's mirror) and as a
SWE-bench 5.x row (an eval script and a pre-built image, pulled from a real registry on loopback:
Debian's docker-registry, started by the fixture, holding an image this test pushed there). Builds
install from a local wheelhouse, so no test reaches a package index.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from envfarm.tasks.envsetup.base import BuildOptions
from envfarm.tasks.harness_eval import TaskImages, evaluate, grade_one, read_predictions, sandbox_runner
from envfarm.tasks.harness_validate import validate_tasks, validation_report
from envfarm.tasks.importers import import_path, read_tasks
from envfarm.tasks.importers.images import RECIPE, REGISTRY, EnvSources, TaskEnvError, ensure_env

from .swe_import_fixtures import IMAGE, make_project, rebench_row, swebench5_row, write_jsonl

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_PORT = 5714  # the loopback registry scripts/setup.sh marks as plain HTTP for Podman


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Any]:
    return make_project(tmp_path_factory.mktemp("swe-import"))


@pytest.fixture(scope="module")
def sources(project, fixture_world) -> EnvSources:  # type: ignore[no-untyped-def]
    wheels = tuple((p.name, p.read_bytes()) for p in sorted(Path(fixture_world["wheelhouse"]).glob("*.whl")))
    return EnvSources(mirrors=project["mirrors"], options=BuildOptions(wheelhouse=wheels, offline=True))


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1, storing under a temporary folder."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry missing: run make setup (Debian package docker-registry)")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", REGISTRY_PORT)) == 0:
            pytest.skip(f"port {REGISTRY_PORT} is taken by another process: stop it to run the registry tests")
    folder = tmp_path_factory.mktemp("registry")
    config = folder / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{REGISTRY_PORT}\n")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{REGISTRY_PORT}/v2/", timeout=1)  # noqa: S310 - loopback only
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{REGISTRY_PORT}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _push(client, image: str, ref: str) -> None:  # type: ignore[no-untyped-def]
    """Tag `image` as `ref` and push it to the plain-HTTP loopback registry; the local tag is removed again."""
    repository, tag = ref.rsplit(":", 1)
    client.images.get(image).tag(repository, tag)
    api = client.api
    reply = api._post(api._url("/images/{0}/push", repository), params={"tag": tag, "tlsVerify": "false"},  # noqa: SLF001 - docker-py's request helper
                      headers={"X-Registry-Auth": "e30="}, stream=True)
    assert reply.status_code == 200 and '"error"' not in reply.text, reply.text[-500:]
    client.images.remove(ref)


@pytest.fixture(scope="module")
def recipe_task(project, sources, engine_client, base_image):  # type: ignore[no-untyped-def]
    path = write_jsonl(project["root"] / "rebench.jsonl", [rebench_row(project)])
    fmt, (task,) = read_tasks(path)
    env = ensure_env(task, sources, engine_client)
    return fmt, task, env


def test_a_swe_rebench_recipe_builds_from_the_repository_snapshot(recipe_task, engine_client) -> None:  # type: ignore[no-untyped-def]
    fmt, task, env = recipe_task
    assert fmt == "swe-rebench" and env.source == RECIPE and [a["source"] for a in env.attempts] == [RECIPE]
    assert task.extra["test_directives"] == ["tests/test_calc.py"] and task.install.test_cmd == "pytest -rA"
    labels = engine_client.images.get(env.image).labels
    assert labels["envfarm.io/instance"] == "acme__calc-2" and labels["envfarm.io/base-commit"] == task.base_commit


def test_gold_resolves_and_empty_does_not_on_the_recipe_image(recipe_task, sources) -> None:  # type: ignore[no-untyped-def]
    """(Every combination of run outcomes, gold_fails included, is decided as tests/tasks/test_validate_outcomes.py shows.)"""
    _, task, _ = recipe_task
    run = sandbox_runner(300, prepare=TaskImages(sources).prepare, run_id="pytest-validate")
    (good,) = validate_tasks([task], run, runs=1)
    assert (good.status, good.gold, good.empty) == ("valid", ["resolved"], ["unresolved"])
    assert validation_report([good], runs=1)["valid_ids"] == ["acme__calc-2"]


def test_no_environment_is_an_infrastructure_failure_not_a_task_failure(project) -> None:  # type: ignore[no-untyped-def]
    task = read_tasks(write_jsonl(project["root"] / "nomirror.jsonl", [rebench_row(project) | {"repo": "acme/elsewhere"}]))[1][0]
    sources = EnvSources(mirrors=project["mirrors"])
    with pytest.raises(TaskEnvError) as err:
        ensure_env(task, sources)
    assert [a["source"] for a in err.value.attempts] == [RECIPE, "envsetup"] and "acme__elsewhere.git" in err.value.problem
    (result,) = validate_tasks([task], sandbox_runner(60, prepare=TaskImages(sources).prepare), runs=1)
    assert (result.status, result.gold, result.empty) == ("infrastructure", ["infrastructure"], ["infrastructure"])


@pytest.fixture(scope="module")
def pushed(recipe_task, registry, engine_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The recipe-built image, published in the loopback registry under the name a SWE-bench 5.x row gives
    (and not left in the engine under that name: the tests must pull it, and nothing stays behind)."""
    from docker.errors import ImageNotFound

    _, _, env = recipe_task
    ref = f"127.0.0.1:{REGISTRY_PORT}/{IMAGE}"
    _push(engine_client, env.image, ref)
    yield registry
    try:
        engine_client.images.remove(ref)
    except ImageNotFound:
        pass


def test_swebench5_row_pulls_its_image_from_the_registry_and_evaluates(project, pushed, engine_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = pushed
    tasks_file = write_jsonl(tmp_path / "swebench.jsonl", [swebench5_row(project)])
    (task,) = read_tasks(tasks_file)[1]
    assert task.install.test_cmd.startswith("bash -c ") and "git apply" not in task.install.test_cmd and "pytest -rA tests/test_calc.py" in task.install.test_cmd
    pulled = ensure_env(task, EnvSources(registry=registry), engine_client)
    assert (pulled.source, pulled.image) == (REGISTRY, f"127.0.0.1:{REGISTRY_PORT}/{IMAGE}")
    preds = tmp_path / "preds.jsonl"
    write_jsonl(preds, [{"instance_id": "acme__calc-2", "model_name_or_path": "org/model", "model_patch": project["patch"]}])
    out = tmp_path / "out"
    env_vars = {**os.environ, "ENVFARM_HOME": str(tmp_path / "home"), "ENVFARM_IMAGE_REGISTRY": registry}
    cmd = [sys.executable, "-P", "-m", "envfarm.cli", "eval", "--predictions", str(preds), "--tasks", str(tasks_file), "--out", str(out),
           "--run-id", "r1", "--timeout", "300"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = out / "logs/run_evaluation/r1/org__model/acme__calc-2"
    report = json.loads((folder / "report.json").read_text())["acme__calc-2"]
    assert report["resolved"] is True and report["tests_status"]["FAIL_TO_PASS"]["success"] == ["tests/test_calc.py::test_add"]
    summary = json.loads((out / "org__model.r1.json").read_text())
    assert (summary["resolved_ids"], summary["error_ids"], summary["schema_version"]) == (["acme__calc-2"], [], 2)
    # A second run with the same id finds the report and runs nothing: resume.
    again = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, cwd=REPO_ROOT, timeout=300)
    assert again.returncode == 0 and "acme__calc-2: done before" in again.stderr
    assert json.loads((out / "org__model.r1.json").read_text()) == summary


def test_eval_grades_each_kind_of_prediction_like_the_harness(project, recipe_task, sources, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from envfarm.verifiers import harness

    _, task, _ = recipe_task
    tasks = {task.instance_id: task, "acme__calc-3": task.model_copy(update={"instance_id": "acme__calc-3"}),
             "acme__calc-4": task.model_copy(update={"instance_id": "acme__calc-4"}),
             "acme__calc-5": task.model_copy(update={"instance_id": "acme__calc-5"})}
    preds = tmp_path / "preds.jsonl"
    write_jsonl(preds, [{"instance_id": "acme__calc-2", "model_name_or_path": "m", "model_patch": project["wrong"]},
                   {"instance_id": "acme__calc-3", "model_name_or_path": "m", "model_patch": ""},
                   {"instance_id": "acme__calc-4", "model_name_or_path": "m", "model_patch": "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n"}])
    run = sandbox_runner(300, prepare=TaskImages(sources).prepare)
    seen: list[tuple[str, str]] = []
    summary = evaluate(tasks, read_predictions(preds), tmp_path, "r2", run, workers=2, on_progress=lambda i, o: seen.append((i, o)))
    assert (summary["unresolved_ids"], summary["empty_patch_ids"], summary["error_ids"], summary["incomplete_ids"]) == (
        ["acme__calc-2"], ["acme__calc-3"], ["acme__calc-4"], ["acme__calc-5"])
    assert sorted(seen) == [("acme__calc-2", "unresolved"), ("acme__calc-3", "empty_patch"), ("acme__calc-4", "error")]
    # The harness's own make_run_report, run over the same folder, writes the same summary.
    cwd = os.getcwd()
    os.chdir(tmp_path)  # make_run_report reads logs/run_evaluation relative to the working directory
    try:
        rows = {json.loads(line)["instance_id"]: json.loads(line) for line in preds.read_text().splitlines()}
        path = harness.module("reporting").make_run_report(rows, [{"instance_id": i} for i in tasks], "r2")
        assert json.loads(Path(path).read_text()) == summary
    finally:
        os.chdir(cwd)


def test_a_prediction_naming_an_unknown_instance_is_one_line(project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    preds = write_jsonl(tmp_path / "preds.jsonl", [{"instance_id": "acme__calc-99", "model_name_or_path": "m", "model_patch": "x"}])
    tasks_file = write_jsonl(tmp_path / "rows.jsonl", [rebench_row(project)])
    done = subprocess.run([sys.executable, "-P", "-m", "envfarm.cli", "eval", "--predictions", str(preds), "--tasks", str(tasks_file),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "ENVFARM_HOME": str(tmp_path / "home")}, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "preds.jsonl:1: prediction names instance 'acme__calc-99'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_import_then_build_records_the_environment_and_reimport_keeps_it(project, fixture_world, recipe_task, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from envfarm.store import TaskRow
    from envfarm.store.db import Store

    home = tmp_path / "home"
    env_vars = {**os.environ, "ENVFARM_HOME": str(home)}
    env_vars.pop("ENVFARM_DB_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-P", "-m", "envfarm.cli", *args], capture_output=True, text=True, env=env_vars, cwd=REPO_ROOT, timeout=600)

    path = write_jsonl(tmp_path / "store.jsonl", [rebench_row(project)])
    assert "1 new" in cli("tasks", "import", str(path)).stderr
    built = cli("tasks", "build", "--mirrors", str(project["mirrors"]), "--wheelhouse", str(fixture_world["wheelhouse"]), "--no-index")
    _, _, env = recipe_task
    assert built.returncode == 0 and f"acme__calc-2: {env.image} (dataset-recipe)" in built.stderr, built.stderr[-1500:]
    assert "1 unchanged" in cli("tasks", "import", str(path)).stderr
    store = Store(f"sqlite:///{home / 'envfarm.db'}")
    try:
        with store.session(readonly=True) as session:
            row = session.get(TaskRow, "acme__calc-2")
            assert row.image == env.image and row.spec["extra"]["environment"] == {"source": "dataset-recipe", "image": env.image, "dataset_image": ""}
    finally:
        store.dispose()
    missing = cli("tasks", "build", "acme__calc-9", "--mirrors", str(project["mirrors"]))
    assert missing.returncode == 2 and "instance 'acme__calc-9' is not in the store" in missing.stderr


def test_a_row_with_no_recipe_and_no_image_gets_envfarms_own_environment_setup(project, sources, engine_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    row = {k: v for k, v in swebench5_row(project).items() if k not in ("image", "eval_script", "eval_type")}
    (task,) = read_tasks(write_jsonl(project["root"] / "plain.jsonl", [row]))[1]
    assert task.extra["test_directives"] == ["tests/test_calc.py"] and not task.image
    env = ensure_env(task, sources, engine_client)
    assert env.source == "envsetup" and [a["source"] for a in env.attempts] == ["envsetup"]
    gold = grade_one(task, task.patch, tmp_path / "gold", sandbox_runner(300, prepare=TaskImages(sources).prepare))
    assert gold == "resolved", (tmp_path / "gold" / "test_output.txt").read_text()[-1500:]


def test_eval_killed_mid_run_resumes_with_only_the_rest(project, pushed, engine_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL while the second instance runs: the re-run grades only what has no report, and the summary
    counts both. The killed process's sandbox is left to `envfarm gc` (its owner is dead); removed here."""
    import signal

    from envfarm.sandbox.docker import LABEL_PID

    rows = [swebench5_row(project) | {"instance_id": f"acme__calc-{n}"} for n in (2, 3)]
    tasks_file = write_jsonl(tmp_path / "two.jsonl", rows)
    preds = write_jsonl(tmp_path / "preds.jsonl", [{"instance_id": r["instance_id"], "model_name_or_path": "m", "model_patch": project["patch"]} for r in rows])
    out = tmp_path / "out"
    env_vars = {**os.environ, "ENVFARM_HOME": str(tmp_path / "home"), "ENVFARM_IMAGE_REGISTRY": pushed}
    cmd = [sys.executable, "-P", "-m", "envfarm.cli", "eval", "--predictions", str(preds), "--tasks", str(tasks_file), "--out", str(out),
           "--run-id", "k", "--timeout", "300"]
    folder = out / "logs/run_evaluation/k/m"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env_vars, cwd=REPO_ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list(folder.glob("*/report.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, f"eval ended before it could be killed: {proc.stderr.read() if proc.stderr else ''}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        for container in engine_client.containers.list(all=True, filters={"label": f"{LABEL_PID}={proc.pid}"}):
            container.remove(force=True)
    done_first = [p.parent.name for p in folder.glob("*/report.json")]
    assert len(done_first) == 1 and not list(folder.glob("*/.*.tmp"))
    again = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, cwd=REPO_ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-1500:]
    other = ({"acme__calc-2", "acme__calc-3"} - set(done_first)).pop()
    assert f"{done_first[0]}: done before" in again.stderr and f"{other}: resolved" in again.stderr
    summary = json.loads((out / "m.k.json").read_text())
    assert (summary["resolved_ids"], summary["error_ids"]) == (["acme__calc-2", "acme__calc-3"], [])
