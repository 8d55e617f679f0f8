"""Sandboxes: the backend-agnostic protocol, its backends, and `open()`, the one way to get one.

    from envfarm import sandbox
    with sandbox.open(image, run_id=run.id, task_id=task.instance_id) as box:
        box.exec("pytest -x", timeout=600)

Modules (one job each): `protocol` (Sandbox, ExecResult), `limits` (SandboxLimits), `backend` (which
backend, and where Kubernetes pods come from), `factory` (`open`), `docker` (DockerSandbox over the Docker
Engine API: Docker or Podman), `kubernetes` (KubernetesSandbox over the pods/exec API), `claim` (a pod from a
SandboxFleet through a SandboxClaim), `containment` (the fork-free sweeps that end what an exec started),
`pool` (warm Docker sandboxes), `patch` (all-or-nothing patches), `gc`.
"""

from envfarm.sandbox.backend import KubernetesTarget, SandboxBackend
from envfarm.sandbox.factory import open
from envfarm.sandbox.limits import SandboxLimits
from envfarm.sandbox.protocol import ExecResult, Sandbox

__all__ = ["ExecResult", "KubernetesTarget", "Sandbox", "SandboxBackend", "SandboxLimits", "open"]
