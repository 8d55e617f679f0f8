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
@pytest.mark.parametrize("timeout", ["0", "nan", "inf", "1e12"])
def test_exec_with_a_bad_timeout_is_refused_before_any_sandbox_starts(engine_client, base_image, timeout: str) -> None:  # type: ignore[no-untyped-def]
    """The CLI checks --timeout before it opens a sandbox. The CLI's pid is in its containers' envfarm.io
    labels: the engine's events show that none was even created, and none with those labels is left."""
    since = int(time.time())
    proc = subprocess.Popen([*CLI, "exec", base_image, "true", "--timeout", timeout], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=300)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("envfarm: error: --timeout") and "--timeout 60" in lines[0], lines
    labels = [f"{LABEL_RUN}=adhoc", f"{LABEL_PID}={proc.pid}", f"{LABEL_HOST}={socket.gethostname()}"]
    assert engine_client.containers.list(all=True, filters={"label": labels}) == []
    events = engine_client.events(since=since, until=int(time.time()) + 1, decode=True, filters={"type": "container", "label": labels})
    # Podman's event stream may ignore the label filter (other sessions' exec events arrive): match the
    # CLI's own labels on each event's attributes.
    ours = [event for event in events
            if (event.get("Actor") or {}).get("Attributes", {}).get(LABEL_PID) == str(proc.pid)
            and (event.get("Actor") or {}).get("Attributes", {}).get(LABEL_RUN) == "adhoc"]
    assert [event.get("Action") or event.get("status") for event in ours] == []


def test_recipe_file_errors_name_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run("images", "build", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_an_unknown_debian_suite_is_refused_before_any_build() -> None:
    result = run("images", "build", "base", "--suite", "nosuch")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "unknown Debian suite 'nosuch'" in lines[0] and "bookworm" in lines[0]
