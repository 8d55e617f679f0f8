"""`DockerSandbox`: the Sandbox protocol on a container engine reached through the Docker Engine API.

Works with Docker Engine and with Podman's compatible socket (what our machines run). Isolation defaults:
no network, every capability dropped, no-new-privileges, memory/CPU/pids limits, a per-file size limit, a
read-only root filesystem whose every writable place is a size-capped tmpfs, no container log, and the
image's unprivileged user where it names one. Containment of what an exec starts is
`envfarm.sandbox.containment` (every exec ends with a sweep that needs no fork). Every container is
labelled with its owner run so `envfarm gc` can find what a crashed caller left behind.
"""

from __future__ import annotations

import atexit
import os
import shlex
import socket
import threading
import time
import uuid
import weakref
from typing import Callable, Iterator, Mapping

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from envfarm.config import settings
from envfarm.engine import connect
from envfarm.errors import ImageMissing, SandboxError
from envfarm.runs import exit_cleanly_on_sigterm
from envfarm.sandbox.containment import detach_script, exec_script, parse_kept, sweep_script
from envfarm.sandbox.limits import SandboxLimits
from envfarm.sandbox.patch import apply_patch_in
from envfarm.sandbox.protocol import (
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_READ_LIMIT,
    TIMEOUT_EXIT_CODE,
    TRUNCATION_MARKER,
    ExecResult,
    check_file_path,
    check_limit,
    check_timeout,
    payload_bytes,
)

LABEL_RUN = "envfarm.io/run"
LABEL_TASK = "envfarm.io/task"
LABEL_POOL = "envfarm.io/pool"
LABEL_HOST = "envfarm.io/owner-host"
LABEL_PID = "envfarm.io/owner-pid"
LABEL_CREATED = "envfarm.io/created-at"
LABEL_MANAGED = "envfarm.io/managed"
HOST_GRACE_SECONDS = 5.0  # the in-container `timeout` should end first; this is the backstop
KEEPER_USER = "65534:65534"  # init and the main process: out of reach of the agent's `kill -1` and /proc/1/fd
INFRA_TIMEOUT = 120.0  # file transfers and sweeps
# RLIMIT_NPROC is counted per host uid, so it must never bind before the pids cgroup does (issue #13). It
# cannot be raised past the engine's own hard limit (our engines lack CAP_SYS_RESOURCE; here it is 32768,
# the caller's is 96549), and the Docker API does not report that limit: the first start tries these,
# highest first, and the engine's answer is remembered per engine URL.
NPROC_CANDIDATES = (1 << 22, 1 << 20, 1 << 18, 1 << 17, 1 << 16, 1 << 15, 1 << 14, 1 << 13, 1 << 12)
_nproc_ceiling: dict[str, int] = {}
_writable_dirs: dict[tuple[str, str], list[tuple[str, int, int, str]]] = {}
WRITABLE_PROBE = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /tmp \\) -prune -o -type d -writable"
    " -printf '%p\\t%U\\t%G\\t%m\\n' -prune"
)

EventHook = Callable[[str, "DockerSandbox", dict], None]
_live: "weakref.WeakSet[DockerSandbox]" = weakref.WeakSet()


@atexit.register
def _close_live_sandboxes() -> None:
    """A normal exit (or an unhandled exception) never leaves containers; a SIGKILL is `envfarm gc`'s job."""
    for sandbox in list(_live):
        sandbox.close()


def _ulimits(limits: SandboxLimits, nproc: int) -> list[docker.types.Ulimit]:
    # Podman fills in its default NOFILE/NPROC limits as soon as any ulimit is given, and those defaults
    # cannot be set on our machines; naming all three keeps the container startable.
    return [
        docker.types.Ulimit(name="fsize", soft=limits.file_size, hard=limits.file_size),
        docker.types.Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
        docker.types.Ulimit(name="nproc", soft=nproc, hard=nproc),
    ]


def _nproc_refused(exc: Exception) -> bool:
    text = str(getattr(exc, "explanation", None) or exc).lower()
    return "rlimit type 6" in text or "rlimit_nproc" in text


def _engine_key(client: docker.DockerClient) -> str:
    return str(getattr(client.api, "base_url", "")) or "default"


def _read_all(sock: socket.socket) -> bytes:
    parts = []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return b"".join(parts)
        parts.append(data)


def _frames(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """The Docker API's multiplexed stream: 8-byte headers (stream, 0, 0, 0, size32) before each frame."""
    at = 0
    while at + 8 <= len(raw):
        size = int.from_bytes(raw[at + 4:at + 8], "big")
        yield raw[at], raw[at + 8:at + 8 + size]
        at += 8 + size


def _stream_text(raw: bytes) -> str:
    return b"".join(frame for _, frame in _frames(raw)).decode("utf-8", errors="replace")


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
        self._exec_lock = threading.Lock()
        self._kept: list[tuple[int, int]] = []  # (session id, leader start time) of detach=True execs
        exit_cleanly_on_sigterm()
        writable = self._writable_dirs(image_obj.id)
        self.disk_bounded = bool(writable) and all(path != "/" for path, *_ in writable)
        tmpfs = {"/tmp": f"size={self.limits.tmpfs_size},mode=1777"}
        if self.disk_bounded:
            tmpfs["/run"] = "size=16m,mode=755"
            for path, _uid, _gid, mode in writable:
                tmpfs[path] = f"size={self.limits.writable_size},mode={mode}"
        self.writable_paths = sorted(tmpfs)
        self.container = self._start(
            image,
            ["sleep", "infinity"],
            labels=all_labels,
            read_only=self.disk_bounded,
            tmpfs=tmpfs,
            user=KEEPER_USER,
            working_dir=workdir,
        )
        self.id = self.container.id[:12]
        _live.add(self)
        if self.disk_bounded:
            self._own_tmpfs_roots([(p, u, g) for p, u, g, _ in writable if (u, g) != (0, 0)])
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

    def _start(self, image: str, command: list[str], *, labels: Mapping[str, str], **extra: object):  # type: ignore[no-untyped-def]
        """Create and start one container with the isolation defaults, finding the engine's NPROC ceiling."""
        limits_ = self.limits
        key = _engine_key(self.client)
        candidates = [limits_.nproc] if limits_.nproc else (
            [_nproc_ceiling[key]] if key in _nproc_ceiling else list(NPROC_CANDIDATES))
        for index, nproc in enumerate(candidates):
            try:
                container = self.client.containers.run(
                    image,
                    command,
                    detach=True,
                    init=True,
                    labels=dict(labels),
                    network_mode="bridge" if limits_.network else "none",
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    mem_limit=limits_.memory,
                    memswap_limit=limits_.memory,
                    nano_cpus=int(limits_.cpus * 1e9),
                    pids_limit=limits_.pids,
                    ulimits=_ulimits(limits_, nproc),
                    # The agent's writes to the main process's stdout would land in the engine's container
                    # log on the host disk, uncapped (400 MB in under a second); keep no log at all.
                    log_config=docker.types.LogConfig(type="none"),
                    **extra,
                )
            except (APIError, DockerException) as exc:
                self._cleanup_failed_start(labels)
                if _nproc_refused(exc) and index + 1 < len(candidates):
                    continue
                raise SandboxError(
                    f"could not start a sandbox from {image}: {getattr(exc, 'explanation', None) or exc}",
                    "run 'envfarm doctor' to check the engine",
                ) from None
            if not limits_.nproc:
                _nproc_ceiling[key] = nproc
            return container
        raise SandboxError(f"could not start a sandbox from {image}: no RLIMIT_NPROC value was accepted",
                           "pass SandboxLimits(nproc=...) at or below the engine's hard limit")

    def _own_tmpfs_roots(self, owners: list[tuple[str, int, int]]) -> None:
        """Podman's tmpfs options take no uid/gid, so a fresh tmpfs root is root's; give each back to its
        owner in the image (git refuses a repository whose top directory another user owns). One exec with
        CAP_CHOWN, before any agent process exists; no fork: chown is the exec'd program itself."""
        by_owner: dict[tuple[int, int], list[str]] = {}
        for path, uid, gid in owners:
            by_owner.setdefault((uid, gid), []).append(path)
        for (uid, gid), paths in by_owner.items():
            try:
                done = self.container.exec_run(["chown", f"{uid}:{gid}", "--", *paths], user="0", privileged=True)
            except DockerException as exc:
                self.close()
                raise SandboxError(f"could not prepare sandbox {self.id}: {exc}", "run 'envfarm doctor'") from None
            if done.exit_code != 0:
                self.close()
                raise SandboxError(f"could not give {paths} to {uid}:{gid} in sandbox {self.id}: {done.output[-300:]!r}",
                                   "check the engine allows privileged exec (Podman and Docker do)")

    def _writable_dirs(self, image_id: str) -> list[tuple[str, int, int, str]]:
        """The directories the sandbox user can write in the image: each becomes a size-capped tmpfs with
        the image's content copied in (Podman's tmpcopyup), on a read-only root. Found once per image and
        user by a throwaway container; "/" in the answer (a root user) means there is nothing to bound."""
        key = (image_id, self.user)
        if key in _writable_dirs:
            return _writable_dirs[key]
        labels = {LABEL_MANAGED: "true", LABEL_RUN: self.run_id, LABEL_TASK: "writable-probe", LABEL_HOST: socket.gethostname(),
                  LABEL_PID: str(os.getpid()), LABEL_CREATED: f"{time.time():.6f}"}
        probe = self._start(image_id, ["sleep", "60"], labels=labels, user=KEEPER_USER)
        try:
            found = probe.exec_run(["/bin/sh", "-c", WRITABLE_PROBE + " 2>/dev/null; true"], user=self.user or "")
        except DockerException as exc:
            raise SandboxError(f"could not inspect {self.image} for writable directories: {exc}", "run 'envfarm doctor'") from None
        finally:
            try:
                probe.remove(force=True, v=True)
            except DockerException:
                pass
        dirs = []
        for line in found.output.decode("utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and parts[0].startswith("/") and parts[1].isdigit() and parts[2].isdigit() and parts[3].isdigit():
                dirs.append((parts[0], int(parts[1]), int(parts[2]), parts[3]))
        _writable_dirs[key] = dirs
        return dirs

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
        detach: bool = False,
    ) -> ExecResult:
        """Run `cmd`; when this returns, every process it started is dead (see `containment`).

        `detach=True` is the one way to leave something running (a server the scaffold's later commands
        talk to): the command starts in a session of its own with no stdio, the call returns at once
        (exit code 0, no output), and that session is spared by later sweeps until `stop_detached()` or
        `close()`. Its own children stay in its session unless they call setsid, which ends their keep.
        """
        timeout = check_timeout(timeout)
        check_limit("output_limit", output_limit)
        if not cmd or (isinstance(cmd, list) and not all(isinstance(part, str) for part in cmd)):
            raise SandboxError("empty command", "pass a shell string or an argv list of strings")
        if not isinstance(cmd, (str, list)):
            raise SandboxError(f"cmd must be a str or a list of str, got {type(cmd).__name__}", "pass a shell string or an argv list")
        self._check_open()
        inner = cmd if isinstance(cmd, str) else shlex.join(cmd)
        who = user if user is not None else self.user
        with self._exec_lock:
            if detach:
                return self._detach(inner, workdir, env, who)
            exec_id = uuid.uuid4().hex[:12]
            started = time.monotonic()
            try:
                return self._exec_locked(inner, exec_id, timeout, workdir, env, output_limit, who, started)
            finally:
                self._sweep(who, exec_id)

    def _exec_locked(self, inner: str, exec_id: str, timeout: float, workdir: str | None, env: Mapping[str, str] | None,
                     output_limit: int, who: str, started: float) -> ExecResult:
        chunks: list[bytes] = []
        received = [0]
        created, stream = self._exec_start(
            ["/bin/sh", "-c", exec_script(inner, timeout, output_limit + 1, exec_id, self._kept)], who, workdir, env)

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
        if host_timeout:  # the wrapper itself is stuck or was killed: sweep from a fresh exec, then wait
            self._sweep(who, exec_id)
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

    def _exec_start(self, argv: list[str], user: str, workdir: str | None = None, env: Mapping[str, str] | None = None,
                    stdin: bool = False):  # type: ignore[no-untyped-def]
        try:
            created = self.client.api.exec_create(
                self.container.id, argv, environment=dict(env or {}), workdir=workdir or self.workdir, user=user, stdin=stdin)
            if stdin:
                return created, self.client.api.exec_start(created["Id"], socket=True)
            return created, self.client.api.exec_start(created["Id"], stream=True, demux=False)
        except (APIError, DockerException) as exc:
            raise SandboxError(f"exec in sandbox {self.id} failed: {exc}", "the container may have died; start a new sandbox") from None

    def _detach(self, inner: str, workdir: str | None, env: Mapping[str, str] | None, who: str) -> ExecResult:
        started = time.monotonic()
        created, stream = self._exec_start(["/bin/sh", "-c", detach_script(inner, uuid.uuid4().hex[:12])], who, workdir, env)
        out = b"".join(stream).decode("utf-8", errors="replace").strip().splitlines()
        try:
            sid, start = (int(x) for x in out[-1].split(":"))
        except (IndexError, ValueError):
            raise SandboxError(f"detached start in sandbox {self.id} reported no session: {out[-3:]}",
                               "check that setsid (util-linux) is in the image") from None
        self._kept.append((sid, start))
        return ExecResult(exit_code=0, output="", truncated=False, duration=time.monotonic() - started)

    def stop_detached(self) -> None:
        """Kill what `exec(..., detach=True)` left running (close() does this too)."""
        self._check_open()
        with self._exec_lock:
            self._kept = []
            self._sweep(self.user, None)

    def _sweep(self, user: str, exec_id: str | None) -> None:
        """Kill every process of `user` but kept sessions, from a fresh exec: no fork needed in the sandbox."""
        script = sweep_script(self._kept)
        if exec_id:
            script += f"\nrm -f /tmp/.envfarm-rc-{exec_id} 2>/dev/null"
        try:
            created, stream = self._exec_start(["/bin/sh", "-c", script], user)
            out = b"".join(stream).decode("utf-8", errors="replace")
        except (SandboxError, DockerException) as exc:
            self._emit("sweep-failed", {"error": str(exc)[:300]})
            return
        self._kept = parse_kept(out) if self._kept else []

    # -- files ------------------------------------------------------------------------------------
    def _abs(self, path: str) -> str:
        if not path.startswith("/"):
            base = self.workdir or "/"
            path = f"{base.rstrip('/')}/{path}"
        return os.path.normpath(path)

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write as the sandbox user (its permissions, its RLIMIT_FSIZE), streamed through an exec's stdin.

        The old tar upload ran as root in the container: it replaced /etc/passwd, turned a directory into
        a file, and took a 2.2 GiB file past the per-file limit (issue #13)."""
        check_file_path(path)
        payload = payload_bytes(data, self.limits.file_size)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise SandboxError(f"mode must be a permission number such as 0o644, got {mode!r}", "pass mode=0o644")
        self._check_open()
        path = self._abs(path)
        script = (
            'f=$1; [ -d "$f" ] && { echo "is a directory" >&2; exit 21; }; mkdir -p -- "${f%/*}" || exit 22; '
            f'timeout {INFRA_TIMEOUT:.0f} head -c {len(payload)} > "$f" && chmod {mode:o} -- "$f" || exit 23; '
            f'n=$(stat -c %s -- "$f"); [ "$n" = {len(payload)} ] || {{ echo "wrote $n of {len(payload)} bytes" >&2; exit 24; }}'
        )
        who = self.user
        with self._exec_lock:
            created, sock = self._exec_start(["/bin/sh", "-c", script, "envfarm-write", path], who, stdin=True)
            raw = getattr(sock, "_sock", sock)
            try:
                raw.settimeout(INFRA_TIMEOUT)
                view = memoryview(payload)
                for start in range(0, len(view), 1 << 20):
                    raw.sendall(view[start:start + (1 << 20)])
                raw.shutdown(socket.SHUT_WR)
                reply = _read_all(raw)
            except OSError as exc:
                reply = f"transfer failed: {exc}".encode()
            finally:
                raw.close()
            code = self._exit_code(created)
        if code != 0:
            detail = _stream_text(reply).strip()[-300:]
            raise SandboxError(f"writing {path} in sandbox {self.id} failed: {detail or f'exit {code}'}",
                               "write under a directory the sandbox user owns, to a path that is not a directory")

    def read_file(self, path: str, max_bytes: int = DEFAULT_READ_LIMIT) -> bytes:
        """Read as the sandbox user, streamed, refusing files over `max_bytes` (it used to join a whole tar
        in memory, and read /etc/shadow as root)."""
        check_file_path(path)
        check_limit("max_bytes", max_bytes)
        self._check_open()
        path = self._abs(path)
        script = (
            'f=$1; [ -d "$f" ] && exit 21; [ -e "$f" ] || exit 20; [ -f "$f" ] || exit 22; [ -r "$f" ] || exit 23; '
            f'n=$(stat -L -c %s -- "$f"); [ "$n" -le {max_bytes} ] || {{ echo "$n" >&2; exit 24; }}; '
            f'exec timeout {INFRA_TIMEOUT:.0f} head -c {max_bytes + 1} -- "$f"'
        )
        with self._exec_lock:
            created = self._exec_create_only(["/bin/sh", "-c", script, "envfarm-read", path])
            out, err = bytearray(), bytearray()
            try:
                for stdout, stderr in self.client.api.exec_start(created["Id"], stream=True, demux=True):
                    if stdout:
                        out += stdout
                        if len(out) > max_bytes:
                            break
                    if stderr and len(err) < 4096:
                        err += stderr
            except (APIError, DockerException) as exc:
                raise SandboxError(f"reading {path} from sandbox {self.id} failed: {exc}", "check the path") from None
            code = self._exit_code(created) if len(out) <= max_bytes else 24
        problems = {
            20: (f"no file {path} in sandbox {self.id}", "check the path"),
            21: (f"{path} in sandbox {self.id} is a directory", "read a file, or exec 'ls' to list it"),
            22: (f"{path} in sandbox {self.id} is not a regular file", "read a regular file"),
            23: (f"{path} in sandbox {self.id} is not readable by the sandbox user", "read a file the sandbox user may read"),
            24: (f"{path} in sandbox {self.id} is larger than max_bytes={max_bytes}",
                 "pass a larger max_bytes, or read it in parts with exec (e.g. 'head -c N')"),
        }
        if code in problems:
            raise SandboxError(*problems[code])
        if code != 0:
            raise SandboxError(f"reading {path} from sandbox {self.id} failed: exit {code} {bytes(err[-300:]).decode(errors='replace')}",
                               "check the path")
        return bytes(out)

    def _exec_create_only(self, argv: list[str]) -> dict:
        try:
            return self.client.api.exec_create(self.container.id, argv, user=self.user)
        except (APIError, DockerException) as exc:
            raise SandboxError(f"exec in sandbox {self.id} failed: {exc}", "the container may have died; start a new sandbox") from None

    def _exit_code(self, created: dict) -> int:
        try:
            code = self.client.api.exec_inspect(created["Id"]).get("ExitCode")
        except (APIError, DockerException) as exc:
            raise SandboxError(f"sandbox {self.id} vanished during a file transfer: {exc}", "start a new sandbox") from None
        return 255 if code is None else int(code)

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
