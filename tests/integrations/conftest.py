"""Fixtures of the integration tests: the calc task as a JSONL file and `envfarm serve openenv` running on it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from integration_support import containers_of, free_port, wait_until  # noqa: E402
from test_rl_agent import swe_task  # noqa: E402,F401 - the calc task fixture, shared with the scaffold's tests


@pytest.fixture(scope="module")
def task_file(swe_task, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("tasks") / "tasks.jsonl"
    path.write_text(swe_task.model_dump_json() + "\n")
    return path


class ServedOpenEnv:
    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    @property
    def run_id(self) -> str:
        """The server's run id, from its start line: every sandbox it opens carries it as a label."""
        found = re.search(r"run (openenv-[0-9a-f]+)", self.log.read_text())
        return found.group(1) if found else ""


@pytest.fixture(scope="module")
def openenv_server(task_file, engine_client, tmp_path_factory) -> Iterator[ServedOpenEnv]:  # type: ignore[no-untyped-def]
    """`envfarm serve openenv` as a user starts it, on loopback, two sessions at most, a short idle timeout."""
    import httpx

    port = free_port()
    home = tmp_path_factory.mktemp("home")
    log = (home / "server.log").open("w", buffering=1)
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "envfarm.cli", "serve", "openenv", "--tasks", str(task_file), "--port", str(port),
         "--max-sessions", "2", "--idle-timeout", "45", "--max-steps", "6", "--test-timeout", "120",
         "--db", f"sqlite:///{home / 'envfarm.db'}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    served = ServedOpenEnv(process, url, home / "server.log")

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        # openenv-core imports gradio at start: 28 s measured with the machine's load average at 38
        wait_until(healthy, 300, "the OpenEnv server answers /health")
        yield served
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        left = containers_of(engine_client, served.run_id) if served.run_id else []
        for container in left:
            engine_client.api.remove_container(container["Id"], force=True)
        assert not left, f"the stopped server left {len(left)} container(s)"
