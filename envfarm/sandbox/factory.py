"""`open()`: the one way to get a sandbox, whatever the backend.

The miner's validation, the verifiers' callers, the RL workers, the CLI and the demo all call this; the
backend comes from the caller's `SandboxBackend` (the trainer's `sandbox:` config) or, when none is
given, from the environment (`SandboxBackend.from_env`), so a job moves from Podman on a laptop to pods on a
cluster without a code change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from envfarm.errors import SandboxError
from envfarm.sandbox.backend import BackendName, SandboxBackend
from envfarm.sandbox.limits import SandboxLimits
from envfarm.sandbox.protocol import Sandbox

if TYPE_CHECKING:
    import docker


def open(  # noqa: A001 - envfarm.sandbox.open reads as what it does, like io.open
    image: str,
    *,
    run_id: str,
    task_id: str = "",
    backend: SandboxBackend | BackendName | None = None,
    limits: SandboxLimits | None = None,
    slot: int | None = None,
    client: "docker.DockerClient | None" = None,
    on_event: Callable[[str, Any, dict], None] | None = None,
    api_client: Any = None,
) -> Sandbox:
    """A started sandbox on `image`, labelled with `run_id` / `task_id` so `envfarm gc` can find leftovers.

    `slot` picks a pod from `kubernetes.pods` (rollout worker i uses slot i). `client` / `on_event` are the
    Docker backend's engine connection and event hook, `api_client` the Kubernetes backend's ApiClient
    (each defaults to what the environment configures).
    """
    chosen = _resolve(backend)
    if chosen.backend == "kubernetes":
        if client is not None or on_event is not None:
            raise SandboxError("open(): client/on_event are Docker-engine options, but the backend is kubernetes",
                               "drop them, or open with backend='docker'")
        from envfarm.sandbox.kubernetes import open_kubernetes

        return open_kubernetes(image, run_id=run_id, task_id=task_id, target=chosen.kubernetes, limits=limits,
                               slot=slot, api_client=api_client)
    from envfarm.sandbox.docker import DockerSandbox

    return DockerSandbox(image, run_id=run_id, task_id=task_id, client=client, limits=limits, on_event=on_event)


def _resolve(backend: SandboxBackend | BackendName | None) -> SandboxBackend:
    if backend is None:
        return SandboxBackend.from_env()
    if isinstance(backend, str):
        if backend not in ("docker", "kubernetes"):
            raise SandboxError(f"unknown sandbox backend {backend!r}", "use backend='docker' or backend='kubernetes'")
        return SandboxBackend.from_env().model_copy(update={"backend": backend})
    return backend
