"""`envfarm rollout` end to end: the scripted OpenAI server on 127.0.0.1, the calc task from a JSONL file and
from the store, sandboxes from envfarm.sandbox.open, grading by SweVerifier, trajectories as JSONL, resume
(a re-run skips what is written; a torn last line is dropped and that episode runs again), and pass@k."""

from __future__ import annotations

import json

import pytest
from scripted_openai_server import ScriptedOpenAIServer
from test_openai_policy import SCRIPTS

from envfarm import cli
from envfarm.agent.trajectories import TrajectoryFile, pass_at_k, summarize


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        cli.main(["rollout", *argv])
    return int(exited.value.code or 0)


def _rows(path) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pass_at_k_is_the_unbiased_estimate():
    assert pass_at_k(2, 1, 1) == 0.5 and pass_at_k(2, 1, 2) == 1.0 and pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    rows = [{"task_id": "a", "k": 0, "passed": True}, {"task_id": "a", "k": 0, "passed": True},
            {"task_id": "a", "k": 1, "passed": False}, {"task_id": "b", "k": 0, "passed": False}]
    assert summarize(rows, ["a", "b"], 2) == {"tasks": 2, "complete_tasks": 1, "samples": 3, "pass@1": 0.5, "pass@2": 1.0}


def test_a_torn_last_line_is_dropped_on_open(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"task_id": "a", "k": 0}) + "\n" + '{"task_id": "a", "k": 1, "mess')
    opened = TrajectoryFile(path).open()
    assert opened.done == {("a", 0)} and opened.dropped_bytes > 0
    assert path.read_text().endswith("}\n") and len(path.read_text().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--model", "localhost:8000"], "is not an http(s) URL"),
    (["--tasks", "missing.jsonl"], "does not exist"),
    (["--extra-body", "[1]"], "is not a JSON object"),
    (["--extra-body", '{"tools": []}'], "sets tools, which envfarm rollout sends itself"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    base = {"--tasks": str(tmp_path / "missing.jsonl"), "--model": "http://127.0.0.1:9/v1", "--model-name": "m"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    args = [x for kv in base.items() for x in kv]
    assert _run(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.engine
def test_rollout_writes_graded_trajectories_resumes_and_reports_pass_at_k(swe_task, tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(swe_task.model_dump_json() + "\n")
    out = tmp_path / "out" / "gold.jsonl"
    with ScriptedOpenAIServer(SCRIPTS) as server:
        argv = ["--tasks", str(tasks), "--model", server.url.removesuffix("/v1"), "--model-name", "gold", "--n", "2",
                "--out", str(out), "--parallel", "2", "--max-steps", "6"]
        assert _run(argv) == 0
        rows = _rows(out)
        assert sorted(r["k"] for r in rows) == [0, 1] and {r["task_id"] for r in rows} == {swe_task.instance_id}
        for row in rows:
            assert row["reward"] == 1.0 and row["passed"] and row["finish_reason"] == "finish" and row["model"] == "gold"
            assert row["grade"]["details"]["grade"]["fail_to_pass"]["passed"] == 1, row["grade"]
            assert [c["name"] for c in row["tool_calls"]] == ["bash", "str_replace", "finish"]
            assert row["usage"]["requests"] == 3 and row["usage"]["completion_tokens"] == 30 and row["usage"]["mode"] == "native"
            assert any(m["role"] == "tool" and m["tool_call_id"] for m in row["messages"]) and "a + b" in row["patch"]
        assert "pass@2" in capsys.readouterr().out

        requests = len(server.requests)
        assert _run(argv) == 0 and len(server.requests) == requests  # everything was written: nothing runs
        assert "2 already in" in capsys.readouterr().out

        text = out.read_text()
        out.write_text(text[: text.index("\n") + 1] + text[text.index("\n") + 1:][:40])  # a kill mid-line
        assert _run(argv) == 0
        assert len(server.requests) == requests + 3  # exactly the torn episode ran again
        again = _rows(out)
        assert sorted(r["k"] for r in again) == [0, 1] and again[0] == rows[0]


@pytest.mark.engine
def test_rollout_by_instance_id_from_the_store_and_infrastructure_failures_are_not_written(swe_task, tmp_path, capsys):
    from envfarm.store.db import Store
    from envfarm.store.models import TaskRow

    db = f"sqlite:///{tmp_path / 'envfarm.db'}"
    store = Store(db)
    with store.session() as s:
        s.add(TaskRow(instance_id=swe_task.instance_id, repo=swe_task.repo, kind="swe", image=swe_task.image,
                      status="validated", spec=json.loads(swe_task.model_dump_json())))
    store.dispose()
    out = tmp_path / "noop.jsonl"
    with ScriptedOpenAIServer(SCRIPTS) as server:
        base = ["--tasks", swe_task.instance_id, "--model", server.url, "--db", db, "--out", str(out)]
        assert _run([*base, "--model-name", "noop"]) == 0
        (row,) = _rows(out)
        assert row["reward"] == 0.0 and not row["passed"] and row["finish_reason"] == "finish"
        capsys.readouterr()
        # a model the server does not serve: the episode fails as infrastructure and is not written (a re-run retries it)
        gone = tmp_path / "gone.jsonl"
        assert _run([*base[:-1], str(gone), "--model-name", "gone", "--retries", "0"]) == 1
        assert not gone.exists()
        assert "1 episode(s) failed for infrastructure reasons" in capsys.readouterr().out


def test_unknown_instance_ids_name_the_store(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'envfarm.db'}"
    assert _run(["--tasks", "owner__nothing-1", "--model", "http://127.0.0.1:9", "--model-name", "m", "--db", db]) == 2
    assert "not in the store" in capsys.readouterr().err


def test_a_trajectory_file_of_another_model_is_refused(swe_task_row_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"task_id": "envfarm__calc-1", "k": 0, "model": "other", "passed": True}) + "\n")
    assert _run(["--tasks", str(swe_task_row_file), "--model", "http://127.0.0.1:9", "--model-name", "m", "--out", str(out)]) == 2
    assert "holds trajectories of another model (other)" in capsys.readouterr().err


@pytest.fixture
def swe_task_row_file(tmp_path):  # type: ignore[no-untyped-def]
    """A TaskSpec row naming an image, for checks that stop before any sandbox starts."""
    from envfarm.task import TaskSpec

    path = tmp_path / "tasks.jsonl"
    path.write_text(TaskSpec(instance_id="envfarm__calc-1", image="envfarm/none:0").model_dump_json() + "\n")
    return path


@pytest.mark.engine
def test_a_killed_rollout_leaves_whole_lines_and_the_rerun_finishes_the_rest(swe_task, engine_client, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from envfarm.sandbox.docker import LABEL_PID

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(swe_task.model_dump_json() + "\n")
    out = tmp_path / "gold.jsonl"
    with ScriptedOpenAIServer(SCRIPTS) as server:
        argv = ["--tasks", str(tasks), "--model", server.url, "--model-name", "gold", "--n", "2", "--out", str(out)]
        proc = subprocess.Popen([sys.executable, "-P", "-m", "envfarm.cli", "rollout", *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
        try:
            # episode k=0 is written before k=1 asks its first turn (one at a time): kill during k=1
            deadline = time.monotonic() + 300
            while len(server.requests) < 4 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, "the rollout ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            for container in engine_client.containers.list(all=True, filters={"label": f"{LABEL_PID}={proc.pid}"}):
                container.remove(force=True)  # the killed process's own sandboxes (it cannot close them)
        lines = out.read_text().splitlines()
        assert [json.loads(line)["k"] for line in lines] == [0] and out.read_text().endswith("\n")
        requests = len(server.requests)
        assert _run(argv) == 0
        assert sorted(r["k"] for r in _rows(out)) == [0, 1] and len(server.requests) == requests + 3
