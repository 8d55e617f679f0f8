"""Serve the app under test on loopback: a static folder, or the app's own start command.

An app built in a sandbox (which has no network) is copied out first with `copy_from_sandbox` and
served statically here, so the browser never needs a route into the sandbox.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import shlex
import signal
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from envfarm.errors import EnvfarmError
from envfarm.sandbox.protocol import Sandbox


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """Yield the origin (http://127.0.0.1:PORT) of a static server for `root`."""
    root = Path(root)
    if not (root / "index.html").is_file():
        raise EnvfarmError(f"{root} has no index.html", "point the verifier at the folder holding the app's index.html")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_command(command: str, cwd: Path, port: int | None = None, ready_path: str = "/", ready_timeout: float = 30.0) -> Iterator[str]:
    """Run the app's start command (`{port}` or $PORT gives it the port); yield its origin once ready."""
    port = port or free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    proc = subprocess.Popen(
        shlex.split(command.replace("{port}", str(port))), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                raise EnvfarmError(f"the app's start command exited with {proc.returncode}: {err}", "run the command by hand in the app folder and fix it")
            try:
                if httpx.get(origin + ready_path, timeout=1.0).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise EnvfarmError(f"the app did not answer on {origin}{ready_path} within {ready_timeout:.0f}s", "check the start command listens on $PORT / {port} at 127.0.0.1")
            time.sleep(0.1)
        yield origin
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def copy_from_sandbox(sandbox: Sandbox, root: str, dest: Path) -> Path:
    """Copy a built app's folder out of a sandbox (tar through the sandbox's file API)."""
    archive = f"/tmp/envfarm-app-{os.getpid()}.tar"
    result = sandbox.exec(f"tar -C {shlex.quote(root)} -cf {archive} .", timeout=120)
    if not result.ok:
        raise EnvfarmError(f"cannot archive {root} in the sandbox: {result.output[-300:]}", "check the task's app folder path")
    data = sandbox.read_file(archive)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


@contextlib.contextmanager
def serve_app(app: dict[str, Any] | Path | str) -> Iterator[str]:
    """`app` is a folder (static) or {"root": folder, "command": "...", "port": n, "ready_path": "/"}."""
    if isinstance(app, (str, Path)):
        app = {"root": str(app)}
    root = Path(app["root"])
    if not root.is_dir():
        raise EnvfarmError(f"app folder {root} does not exist", "build the app first, or pass the folder holding index.html")
    if app.get("command"):
        with serve_command(app["command"], root, app.get("port"), app.get("ready_path", "/"), float(app.get("ready_timeout", 30))) as origin:
            yield origin
    else:
        with serve_folder(root) as origin:
            yield origin
