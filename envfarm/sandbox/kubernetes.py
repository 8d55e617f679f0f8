"""`KubernetesSandbox`: the Sandbox protocol over a claimed pod, through the exec API.

`open_kubernetes` is the Kubernetes side of `envfarm.sandbox.open()`: a pod from a list of running pods
(one per slot), or one claimed from a SandboxFleet through a SandboxClaim that the fleet controller binds.

Rollouts and validation run unchanged on a cluster: commands go over the pods/exec websocket
(stdin/stdout/stderr streamed, binary-safe), files travel as tar through stdin/stdout (what
`kubectl cp` does), and timeouts are enforced twice: in the pod by coreutils `timeout`, which signals
its whole process group (so the process tree dies), and on our side by closing the stream a few
seconds after, in case the pod itself is stuck.
"""

from __future__ import annotations

import io
import os
import shlex
import tarfile
import time
from typing import Any, Callable, Mapping

from envfarm.errors import SandboxError
from envfarm.sandbox.backend import KubernetesTarget
from envfarm.sandbox.limits import SandboxLimits
from envfarm.sandbox.protocol import (
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_READ_LIMIT,
    DEFAULT_WRITE_LIMIT,
    TIMEOUT_EXIT_CODE,
    TRUNCATION_MARKER,
    ExecResult,
    check_file_path,
    check_limit,
    check_timeout,
    payload_bytes,
)

KILL_GRACE = 2  # seconds between TERM and KILL inside the pod
CLIENT_SLACK = 5.0  # how much longer than the timeout we keep the stream open
TIMEOUT_STATUSES = {124, 137}  # coreutils timeout: TERM worked (124) or KILL was needed (128+9)


def wrap_command(cmd: str | list[str], timeout: float, workdir: str | None, env: Mapping[str, str] | None) -> list[str]:
    """The argv sent to the exec API: `timeout` around a shell that sets env and workdir."""
    script = cmd if isinstance(cmd, str) else shlex.join(cmd)
    prefix = "".join(f"export {key}={shlex.quote(value)}; " for key, value in (env or {}).items())
    if workdir:
        prefix += f"cd {shlex.quote(workdir)} && "
    seconds = max(1, int(round(timeout)))
    return ["timeout", "-k", str(KILL_GRACE), str(seconds), "/bin/sh", "-c", prefix + script]


def tar_one_file(path: str, data: bytes, mode: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name=path.lstrip("/"))
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def untar_one_file(blob: bytes, path: str) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as archive:
            for member in archive.getmembers():
                if member.isfile():
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        return extracted.read()
    except tarfile.TarError as exc:
        raise SandboxError(f"reading {path}: the pod sent no valid tar stream ({exc})",
                           "check that `tar` exists in the sandbox image") from None
    raise SandboxError(f"{path} is not a regular file in the sandbox", "check the path")


class OutputCollector:
    """Combined stdout+stderr, capped at `limit` bytes with the protocol's marker."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.size, self.truncated = limit, [], 0, False

    def add(self, chunk: bytes | str) -> None:
        data = chunk.encode() if isinstance(chunk, str) else chunk
        room = self.limit - self.size
        if len(data) > room:
            data, self.truncated = data[:max(0, room)], True
        if data:
            self.parts.append(data)
            self.size += len(data)

    def text(self) -> str:
        out = b"".join(self.parts).decode("utf-8", errors="replace")
        return out + TRUNCATION_MARKER.format(limit=self.limit) if self.truncated else out


def _default_stream() -> Callable[..., Any]:
    from kubernetes.stream import stream

    return stream


class KubernetesSandbox:
    """One claimed pod. `stream_fn` is kubernetes.stream.stream (injectable for tests)."""

    def __init__(self, api_client: Any, namespace: str, pod: str, container: str = "sandbox",
                 workdir: str | None = "/testbed", stream_fn: Callable[..., Any] | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        from kubernetes import client

        self.id = f"{namespace}/{pod}"
        self.namespace, self.pod, self.container, self.workdir = namespace, pod, container, workdir
        self._core = client.CoreV1Api(api_client)
        self._stream = stream_fn or _default_stream()
        self._on_close = on_close
        self._closed = False

    def _open(self, argv: list[str], stdin: bool) -> Any:
        try:
            return self._stream(self._core.connect_get_namespaced_pod_exec, self.pod, self.namespace,
                                container=self.container, command=argv, stdin=stdin, stdout=True, stderr=True,
                                tty=False, _preload_content=False, binary=True)
        except Exception as exc:  # noqa: BLE001 - ApiException, websocket and connection errors alike
            raise SandboxError(f"exec into {self.id} failed: {exc}",
                               "check the pod is Running and the caller may create pods/exec") from None

    def _run(self, argv: list[str], stdin_data: bytes | None, deadline: float, limit: int,
             sink: Callable[[bytes], None] | None = None) -> tuple[int | None, OutputCollector, bool]:
        ws = self._open(argv, stdin_data is not None)
        output = OutputCollector(limit)
        timed_out = False
        try:
            if stdin_data is not None:
                for start in range(0, len(stdin_data), 1 << 16):
                    ws.write_stdin(stdin_data[start:start + (1 << 16)])
                if hasattr(ws, "close_channel"):
                    ws.close_channel(0)  # EOF on stdin (exec protocol v5)
            while ws.is_open():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                ws.update(timeout=min(remaining, 1.0))
                for reader, target in ((ws.read_stdout, sink), (ws.read_stderr, None)):
                    chunk = reader(timeout=0)
                    if chunk:
                        (target or output.add)(chunk if isinstance(chunk, bytes) else chunk.encode())
        finally:
            code = None if timed_out else ws.returncode
            ws.close()
        return code, output, timed_out

    def exec(self, cmd: str | list[str], timeout: float = 60.0, workdir: str | None = None,
             env: Mapping[str, str] | None = None, output_limit: int = DEFAULT_OUTPUT_LIMIT) -> ExecResult:
        timeout = check_timeout(timeout)
        check_limit("output_limit", output_limit)
        if self._closed:
            raise SandboxError(f"sandbox {self.id} is closed", "claim a new sandbox")
        started = time.monotonic()
        argv = wrap_command(cmd, timeout, workdir or self.workdir, env)
        code, output, client_timeout = self._run(argv, None, started + timeout + CLIENT_SLACK, output_limit)
        timed_out = client_timeout or code in TIMEOUT_STATUSES and time.monotonic() - started >= timeout - 0.5
        return ExecResult(exit_code=TIMEOUT_EXIT_CODE if timed_out else int(code or 0), output=output.text(),
                          truncated=output.truncated, duration=time.monotonic() - started, timed_out=timed_out)

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """tar runs as the pod's user (what the pod template sets), with no-overwrite-dir so a directory
        is never replaced by a file; payloads over DEFAULT_WRITE_LIMIT are refused before anything is sent."""
        check_file_path(path)
        blob = tar_one_file(path, payload_bytes(data, DEFAULT_WRITE_LIMIT), mode)
        code, output, timed_out = self._run(["tar", "-x", "-m", "--no-overwrite-dir", "-f", "-", "-C", "/"], blob,
                                            time.monotonic() + 120, 64 << 10)
        if timed_out or code != 0:
            raise SandboxError(f"writing {path} in {self.id} failed: {output.text().strip()[:300]}",
                               "check the directory exists and is writable by the sandbox user")

    def read_file(self, path: str, max_bytes: int = DEFAULT_READ_LIMIT) -> bytes:
        """Streamed into memory only up to `max_bytes` (plus the tar framing); a larger file is refused."""
        check_file_path(path)
        check_limit("max_bytes", max_bytes)
        chunks: list[bytes] = []
        received = [0]
        cap = max_bytes + (64 << 10)  # tar headers and padding around one file

        def sink(chunk: bytes) -> None:
            received[0] += len(chunk)
            if received[0] <= cap:
                chunks.append(chunk)

        code, output, timed_out = self._run(["tar", "-c", "-f", "-", "-C", "/", path.lstrip("/")], None,
                                            time.monotonic() + 120, 64 << 10, sink=sink)
        if received[0] > cap:
            raise SandboxError(f"{path} in {self.id} is larger than max_bytes={max_bytes}",
                               "pass a larger max_bytes, or read it in parts with exec (e.g. 'head -c N')")
        if timed_out or code != 0:
            raise SandboxError(f"reading {path} in {self.id} failed: {output.text().strip()[:300]}",
                               "check the path exists")
        blob = b"".join(chunks)
        try:
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as archive:
                first = archive.next()
        except tarfile.TarError:
            first = None
        if first is not None and first.isdir():  # tar -c of a directory: never hand back a file inside it
            raise SandboxError(f"{path} in {self.id} is a directory", "read a file, or exec 'ls' to list it")
        return untar_one_file(blob, path)

    def apply_patch(self, diff: str, workdir: str | None = None) -> None:
        from envfarm.sandbox.patch import apply_patch_in

        apply_patch_in(self, diff, workdir or self.workdir or "/testbed")

    def close(self) -> None:
        """Stops further use; a claimed pod is also released (its claim's spec.release is set), once."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> "KubernetesSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


KUBE_FIX = ("set sandbox.kubernetes.kubeconfig (ENVFARM_KUBE_CONFIG) to a kubeconfig file for a reachable cluster "
            "(or run inside the cluster), or use sandbox.backend=docker (ENVFARM_SANDBOX_BACKEND=docker)")


def kube_api_client(target: KubernetesTarget) -> Any:
    """An ApiClient from target.kubeconfig, else in-cluster, else KUBECONFIG / ~/.kube/config.
    Raises SandboxError naming the fix when none of them exists or loads."""
    from kubernetes import client, config as kube_config

    try:
        if target.kubeconfig:
            if not os.path.exists(target.kubeconfig):
                raise SandboxError(f"sandbox.kubernetes.kubeconfig={target.kubeconfig!r} does not exist", KUBE_FIX)
            return kube_config.new_client_from_config(config_file=target.kubeconfig, context=target.context)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            kube_config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return kube_config.new_client_from_config(context=target.context)
    except SandboxError:
        raise
    except Exception as exc:  # noqa: BLE001 - ConfigException, bad YAML, a missing file alike
        raise SandboxError(f"no usable Kubernetes configuration for the kubernetes sandbox backend ({exc})", KUBE_FIX) from None


def check_pods_running(target: KubernetesTarget, count: int, api_client: Any = None) -> None:
    """Fail before any work starts when the first `count` listed pods cannot be used: every worker would
    otherwise publish only failed rollouts and the run would never train."""
    from kubernetes import client

    api = client.CoreV1Api(api_client if api_client is not None else kube_api_client(target))
    server = api.api_client.configuration.host
    if len(target.pods) < count:
        raise SandboxError(f"{count} sandbox slot(s) needed but sandbox.kubernetes.pods lists {len(target.pods)}",
                           "list one running sandbox pod per rollout worker in sandbox.kubernetes.pods")
    for pod in target.pods[:count]:
        try:
            phase = api.read_namespaced_pod(pod, target.namespace, _request_timeout=target.request_timeout_s).status.phase
        except Exception as exc:  # noqa: BLE001 - connection refused, TLS, 403 and 404 read the same to the user
            reason = getattr(exc, "reason", None) or str(exc).splitlines()[0][:200]
            raise SandboxError(f"cannot read pod {target.namespace}/{pod} from the cluster at {server}: {reason}",
                               f"check the pod exists and the cluster is reachable; {KUBE_FIX}") from None
        if phase != "Running":
            raise SandboxError(f"sandbox pod {target.namespace}/{pod} is {phase}, not Running",
                               "wait for it to start or list running pods in sandbox.kubernetes.pods")


def open_kubernetes(image: str, *, run_id: str, task_id: str, target: KubernetesTarget,
                    limits: SandboxLimits | None = None, slot: int | None = None, api_client: Any = None) -> KubernetesSandbox:
    """A sandbox in a pod: from `target.fleet` by claim when set, else `target.pods[slot]`.

    Nothing is contacted for a listed pod until its first command; a claim waits until the controller binds
    a pod (or `claim_timeout_s` passes, when the claim is deleted again)."""
    if limits is not None:
        raise SandboxError("sandbox limits cannot be set per sandbox on the kubernetes backend",
                           "set resources in the SandboxFleet's pod template (spec.template.resources)")
    if target.fleet:
        from envfarm.sandbox.claim import claim_pod

        api = api_client if api_client is not None else kube_api_client(target)
        pod, release = claim_pod(api, target, image, run_id=run_id, task_id=task_id)
        return KubernetesSandbox(api, target.namespace, pod, container=target.container, workdir=target.workdir,
                                 on_close=release)
    if slot is None or slot >= len(target.pods):
        listed = len(target.pods)
        raise SandboxError(f"no pod for sandbox slot {slot}: sandbox.kubernetes.pods lists {listed} and no fleet is set",
                           "list one running sandbox pod per rollout worker in sandbox.kubernetes.pods, "
                           "or set sandbox.kubernetes.fleet to claim pods from a SandboxFleet")
    api = api_client if api_client is not None else kube_api_client(target)
    return KubernetesSandbox(api, target.namespace, target.pods[slot], container=target.container, workdir=target.workdir)
