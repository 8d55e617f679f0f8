"""`DockerSandbox`: the Sandbox protocol on a container engine reached through the Docker Engine API.

Works with Docker Engine and with Podman's compatible socket (what our machines run). Isolation defaults:
no network, every capability dropped, no-new-privileges, memory/CPU/pids limits, a per-file size limit and a
size-capped /tmp, the image's unprivileged user where it names one. Every container is labelled with its
owner run so `envfarm gc` can find what a crashed caller left behind.
"""

from __future__ import annotations

import atexit
import io
import os
import shlex
import socket
import tarfile
import threading
import time
import uuid
import weakref
from typing import Callable, Mapping

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from envfarm.config import settings
from envfarm.engine import connect
from envfarm.errors import EnvfarmError, ImageMissing, SandboxError
from envfarm.sandbox.limits import SandboxLimits
from envfarm.sandbox.patch import apply_patch_in
from envfarm.sandbox.protocol import DEFAULT_OUTPUT_LIMIT, TIMEOUT_EXIT_CODE, TRUNCATION_MARKER, ExecResult

LABEL_RUN = "envfarm.io/run"
LABEL_TASK = "envfarm.io/task"
LABEL_POOL = "envfarm.io/pool"
LABEL_HOST = "envfarm.io/owner-host"
LABEL_PID = "envfarm.io/owner-pid"
LABEL_CREATED = "envfarm.io/created-at"
LABEL_MANAGED = "envfarm.io/managed"
HOST_GRACE_SECONDS = 5.0  # the in-container `timeout` should end first; this is the backstop

EventHook = Callable[[str, "DockerSandbox", dict], None]
_live: "weakref.WeakSet[DockerSandbox]" = weakref.WeakSet()


@atexit.register
def _close_live_sandboxes() -> None:
    """A normal exit (or an unhandled exception) never leaves containers; a SIGKILL is `envfarm gc`'s job."""
    for sandbox in list(_live):
        sandbox.close()


def _ulimits(limits: SandboxLimits) -> list[docker.types.Ulimit]:
    # Podman fills in its default NOFILE/NPROC limits as soon as any ulimit is given, and those defaults
    # cannot be set on our machines; naming all three keeps the container startable.
    return [
        docker.types.Ulimit(name="fsize", soft=limits.file_size, hard=limits.file_size),
        docker.types.Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
        docker.types.Ulimit(name="nproc", soft=limits.pids * 4, hard=limits.pids * 4),
    ]


def _wrap(cmd: str | list[str], timeout: float, capture: int, exec_id: str) -> str:
    """Shell that enforces the timeout on the whole process group and caps output inside the container.

    The output cap runs in the container (`head` then `cat > /dev/null` drains the rest), so an endless
    writer costs the caller nothing; the real exit code travels through a file because the pipeline's
    own status is `head`'s.
    """
    inner = cmd if isinstance(cmd, str) else shlex.join(cmd)
    rc_file = f"/tmp/.envfarm-rc-{exec_id}"
    return (
        f"{{ timeout -k 2 {timeout:.3f} sh -c {shlex.quote(inner)} < /dev/null; echo $? > {rc_file}; }} 2>&1"
        f" | {{ head -c {capture}; cat > /dev/null; }}; "
        f"rc=$(cat {rc_file} 2>/dev/null || echo 255); rm -f {rc_file}; exit $rc"
    )


class DockerSandbox:
    """One container. Use as a context manager, or call `close()`; both are idempotent."""

    def __init__(
        self,
        image: str,
        *,
        run_id: str = "adhoc",
        task_id: str = "",
        client: docker.DockerClient | None = None,
        limits: SandboxLimits | None = None,
        user: str | None = None,
        workdir: str | None = None,
        labels: Mapping[str, str] | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        self.client = client or connect()
        self.image = image
        self.run_id = run_id
        self.task_id = task_id
        self.limits = limits or SandboxLimits()
        self.workdir = workdir
        self._on_event = on_event
        self._closed = False
        self._lock = threading.Lock()
        try:
            image_obj = self.client.images.get(image)
        except ImageNotFound:
            raise ImageMissing(
                f"image {image} is not in the engine",
                "run 'make setup' for the base image, or 'envfarm images build' for task images",
            ) from None
        except (DockerException, OSError) as exc:
            raise SandboxError(f"engine error looking up {image}: {exc}", "run 'envfarm doctor'") from None
        image_labels = (image_obj.attrs.get("Config") or {}).get("Labels") or {}
        self.user = user if user is not None else image_labels.get("envfarm.io/user", "")
        all_labels = {
            LABEL_MANAGED: "true",
            LABEL_RUN: run_id,
            LABEL_TASK: task_id,
            LABEL_HOST: socket.gethostname(),
            LABEL_PID: str(os.getpid()),
            LABEL_CREATED: f"{time.time():.3f}",
            **(labels or {}),
        }
        limits_ = self.limits
        try:
            self.container = self.client.containers.run(
                image,
                ["sleep", "infinity"],
                detach=True,
                init=True,
                labels=all_labels,
                network_mode="bridge" if limits_.network else "none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=limits_.memory,
                memswap_limit=limits_.memory,
                nano_cpus=int(limits_.cpus * 1e9),
                pids_limit=limits_.pids,
                ulimits=_ulimits(limits_),
                tmpfs={"/tmp": f"size={limits_.tmpfs_size},mode=1777"},
                user=self.user or None,
                working_dir=workdir,
            )
        except (APIError, DockerException) as exc:
            self._cleanup_failed_start(all_labels)
            raise SandboxError(
                f"could not start a sandbox from {image}: {getattr(exc, 'explanation', None) or exc}",
                "run 'envfarm doctor' to check the engine",
            ) from None
        self.id = self.container.id[:12]
        _live.add(self)
        self._emit("started", {"image": image})

    def _cleanup_failed_start(self, labels: Mapping[str, str]) -> None:
        """A container created but not started must not outlive the failed call."""
        try:
            for leftover in self.client.containers.list(
                all=True, filters={"label": [f"{LABEL_PID}={labels[LABEL_PID]}", f"{LABEL_CREATED}={labels[LABEL_CREATED]}"]}
            ):
                leftover.remove(force=True)
        except DockerException:
            pass

    def _emit(self, kind: str, detail: dict) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, self, detail)
            except Exception:  # an observer must never break the sandbox
                pass

    # -- commands ---------------------------------------------------------------------------------
    def exec(
        self,
        cmd: str | list[str],
        timeout: float = 60.0,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        user: str | None = None,
    ) -> ExecResult:
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise EnvfarmError(f"timeout must be a positive number of seconds, got {timeout!r}", "pass e.g. timeout=60")
        if output_limit <= 0:
            raise EnvfarmError(f"output_limit must be positive, got {output_limit}", "pass e.g. output_limit=1<<20")
        if not cmd:
            raise EnvfarmError("empty command", "pass a shell string or an argv list")
        self._check_open()
        exec_id = uuid.uuid4().hex[:12]
        environment = {"ENVFARM_EXEC_ID": exec_id, **(env or {})}
        started = time.monotonic()
        try:
            created = self.client.api.exec_create(
                self.container.id,
                ["/bin/sh", "-c", _wrap(cmd, timeout, output_limit + 1, exec_id)],
                environment=environment,
                workdir=workdir or self.workdir,
                user=user if user is not None else self.user,
            )
            stream = self.client.api.exec_start(created["Id"], stream=True, demux=False)
        except (APIError, DockerException) as exc:
            raise SandboxError(f"exec in sandbox {self.id} failed: {exc}", "the container may have died; start a new sandbox") from None

        chunks: list[bytes] = []
        received = [0]

        def drain() -> None:
            try:
                for chunk in stream:
                    if received[0] <= output_limit:
                        chunks.append(chunk)
                    received[0] += len(chunk)
            except Exception:
                pass

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        reader.join(timeout + HOST_GRACE_SECONDS)
        host_timeout = reader.is_alive()
        if host_timeout:  # something escaped the process group and holds the pipe open: kill by marker
            self._kill_exec(exec_id, user if user is not None else self.user)
            reader.join(5)
        duration = time.monotonic() - started
        raw = b"".join(chunks)
        truncated = len(raw) > output_limit
        output = raw[:output_limit].decode("utf-8", errors="replace")
        if truncated:
            output += TRUNCATION_MARKER.format(limit=output_limit)
        exit_code = TIMEOUT_EXIT_CODE
        if not host_timeout:
            try:
                exit_code = self.client.api.exec_inspect(created["Id"]).get("ExitCode")
            except (APIError, DockerException) as exc:
                raise SandboxError(f"sandbox {self.id} vanished during exec: {exc}", "start a new sandbox") from None
            if exit_code is None:
                exit_code = 255
        timed_out = host_timeout or exit_code == TIMEOUT_EXIT_CODE or (exit_code == 137 and duration >= timeout)
        if timed_out:
            exit_code = TIMEOUT_EXIT_CODE
            output += f"\n[envfarm: command timed out after {timeout:g}s; its process tree was killed]\n"
        elif exit_code == 127 and "not found" in output[-400:]:
            output += "\n[envfarm: exit 127: a program was not found in the sandbox's PATH; install it in the image recipe or use its full path]\n"
        return ExecResult(exit_code=exit_code, output=output, truncated=truncated, duration=duration, timed_out=timed_out)

    def _kill_exec(self, exec_id: str, user: str) -> None:
        """Kill every process carrying this exec's marker, daemons that called setsid included."""
        script = (
            f"for p in /proc/[0-9]*; do grep -qz 'ENVFARM_EXEC_ID={exec_id}' $p/environ 2>/dev/null"
            f" && kill -9 ${{p#/proc/}} 2>/dev/null; done; true"
        )
        try:
            self.container.exec_run(["/bin/sh", "-c", script], user=user or "")
        except DockerException:
            pass

    # -- files ------------------------------------------------------------------------------------
    def _uid_gid(self) -> tuple[int, int]:
        if self.user and self.user.split(":")[0].isdigit():
            uid = int(self.user.split(":")[0])
            gid = int(self.user.split(":")[1]) if ":" in self.user else uid
            return uid, gid
        return 0, 0

    def _abs(self, path: str) -> str:
        if not path.startswith("/"):
            base = self.workdir or "/"
            path = f"{base.rstrip('/')}/{path}"
        return os.path.normpath(path)

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        self._check_open()
        path = self._abs(path)
        payload = data.encode() if isinstance(data, str) else data
        parent = os.path.dirname(path) or "/"
        made = self.exec(["mkdir", "-p", parent], timeout=30)
        if made.exit_code != 0:
            raise SandboxError(f"cannot create {parent} in sandbox {self.id}: {made.output.strip()}", "write under a directory the sandbox user owns")
        uid, gid = self._uid_gid()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(os.path.basename(path))
            info.size, info.mode, info.uid, info.gid, info.mtime = len(payload), mode, uid, gid, int(time.time())
            tar.addfile(info, io.BytesIO(payload))
        try:
            ok = self.container.put_archive(parent, buffer.getvalue())
        except (APIError, DockerException) as exc:
            raise SandboxError(f"writing {path} into sandbox {self.id} failed: {exc}", "check the path and free space") from None
        if not ok:
            raise SandboxError(f"writing {path} into sandbox {self.id} was refused", "check the path")

    def read_file(self, path: str) -> bytes:
        self._check_open()
        path = self._abs(path)
        try:
            stream, stat = self.container.get_archive(path)
        except NotFound:
            raise SandboxError(f"no file {path} in sandbox {self.id}", "check the path") from None
        except (APIError, DockerException) as exc:
            raise SandboxError(f"reading {path} from sandbox {self.id} failed: {exc}", "check the path") from None
        if stat.get("mode", 0) & (1 << 31):  # os.ModeDir in the engine's stat header
            raise SandboxError(f"{path} in sandbox {self.id} is a directory", "read a file, or exec 'ls' to list it")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r") as tar:
            for member in tar:
                if member.isfile():
                    extracted = tar.extractfile(member)
                    return extracted.read() if extracted else b""
        raise SandboxError(f"{path} in sandbox {self.id} is not a regular file", "read a regular file")

    def apply_patch(self, diff: str, workdir: str | None = None) -> None:
        apply_patch_in(self, diff, workdir or self.workdir or "/")

    # -- lifecycle --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError(f"sandbox {getattr(self, 'id', '?')} is closed", "start a new sandbox")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _live.discard(self)
        try:
            self.container.remove(force=True, v=True)
        except NotFound:
            pass
        except DockerException:
            pass  # gc will find it by its labels
        self._emit("closed", {})

    def __enter__(self) -> "DockerSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DockerSandbox(id={getattr(self, 'id', '?')}, image={self.image}, run={self.run_id})"
