"""The CLI as a user meets it: doctor, exec, and one-line errors for bad input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from envfarm.sandbox.docker import LABEL_HOST, LABEL_PID, LABEL_RUN

CLI = [sys.executable, "-m", "envfarm.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.engine
def test_exec_returns_the_command_exit_code_and_output(base_image) -> None:  # type: ignore[no-untyped-def]
    result = run("exec", base_image, "echo from-sandbox; exit 4")
    assert result.returncode == 4 and "from-sandbox" in result.stdout


@pytest.mark.engine
def test_doctor_reports_every_check(base_image) -> None:  # type: ignore[no-untyped-def]
    result = run("doctor")
    for name in ("container engine", "base image", "store", "browser", "ray"):
        assert name in result.stdout


def test_engine_down_is_one_clear_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run("exec", "envfarm/base:bookworm", "true", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no container engine answers" in lines[0] and "fix:" in lines[0]


def test_bad_database_url_is_one_clear_line() -> None:
    result = run("gc", env={"ENVFARM_DB_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"})
    assert result.returncode == 2
    assert "cannot connect to the store" in result.stderr and "hunter2" not in result.stderr


@pytest.mark.engine
def test_exec_with_a_bad_timeout_is_rejected_and_its_sandbox_removed(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    """The timeout is checked only once the sandbox runs, so the error path must still remove it. The CLI's
    pid is in its containers' envfarm.io labels: the engine's events show that one was created and removed,
    and no container with those labels is left."""
    since = int(time.time())
    proc = subprocess.Popen([*CLI, "exec", base_image, "true", "--timeout", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "timeout must be a positive" in stderr and "Traceback" not in stderr
    labels = [f"{LABEL_RUN}=adhoc", f"{LABEL_PID}={proc.pid}", f"{LABEL_HOST}={socket.gethostname()}"]
    assert engine_client.containers.list(all=True, filters={"label": labels}) == []
    events = engine_client.events(since=since, until=int(time.time()) + 1, decode=True, filters={"type": "container", "label": labels})
    actions = [event.get("Action") or event.get("status") for event in events]
    assert "create" in actions and "remove" in actions, actions


def test_recipe_file_errors_name_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run("images", "build", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "does not exist" in result.stderr
