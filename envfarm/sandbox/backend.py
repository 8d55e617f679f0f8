"""Which backend `envfarm.sandbox.open()` uses, and where its Kubernetes pods come from.

One validated model for every caller: the trainer's `sandbox:` config section is this model, the miner and
the CLI read it from the environment (`ENVFARM_SANDBOX_BACKEND`, `ENVFARM_KUBE_*`). Nothing above
`envfarm.sandbox` branches on the backend.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envfarm.errors import EnvfarmError

BackendName = Literal["docker", "kubernetes"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KubernetesTarget(_Strict):
    """Where Kubernetes sandboxes come from.

    Two ways, one of them set: `fleet` claims a pod serving the image from a SandboxFleet through a
    SandboxClaim (the controller binds it; closing the sandbox releases the claim), which is how the miner
    and SWE episodes get a pod per instance image; `pods` lists pods that already run, and the caller's
    `slot` picks one (rollout worker i execs into pods[i]: the line-completion family grades every task in
    one image).
    """

    namespace: str = "envfarm-sandboxes"
    fleet: str = Field("", description="SandboxFleet to claim pods from (one pod per sandbox)")
    pods: list[str] = Field(default_factory=list, description="running sandbox pods, one per slot (rollout worker)")
    container: str = "sandbox"
    workdir: str = "/tmp"
    kubeconfig: str | None = Field(None, description="null: in-cluster config, then KUBECONFIG / ~/.kube/config")
    context: str | None = None
    request_timeout_s: float = Field(10.0, gt=0, description="timeout of one API request (start-up checks, claim writes)")
    claim_timeout_s: float = Field(300.0, gt=0, description="how long a claim may wait for the controller to bind a pod")


class SandboxBackend(_Strict):
    """The backend every sandbox of a process is opened on."""

    backend: BackendName = "docker"
    kubernetes: KubernetesTarget = Field(default_factory=KubernetesTarget)

    @classmethod
    def from_env(cls) -> "SandboxBackend":
        """ENVFARM_SANDBOX_BACKEND (docker | kubernetes) and ENVFARM_KUBE_NAMESPACE / _FLEET / _PODS (comma
        separated) / _CONTAINER / _WORKDIR / _CONFIG / _CONTEXT: the miner and the CLI read their backend here."""
        values: dict[str, object] = {}
        if os.environ.get("ENVFARM_SANDBOX_BACKEND"):
            values["backend"] = os.environ["ENVFARM_SANDBOX_BACKEND"]
        kube: dict[str, object] = {}
        for key, env in (("namespace", "ENVFARM_KUBE_NAMESPACE"), ("fleet", "ENVFARM_KUBE_FLEET"),
                         ("container", "ENVFARM_KUBE_CONTAINER"), ("workdir", "ENVFARM_KUBE_WORKDIR"),
                         ("kubeconfig", "ENVFARM_KUBE_CONFIG"), ("context", "ENVFARM_KUBE_CONTEXT")):
            if os.environ.get(env):
                kube[key] = os.environ[env]
        if os.environ.get("ENVFARM_KUBE_PODS"):
            kube["pods"] = [pod.strip() for pod in os.environ["ENVFARM_KUBE_PODS"].split(",") if pod.strip()]
        if kube:
            values["kubernetes"] = kube
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise EnvfarmError(f"sandbox backend from the environment: {where}: {first['msg']} (got {json.dumps(values)})",
                               "set ENVFARM_SANDBOX_BACKEND to docker or kubernetes (and ENVFARM_KUBE_* as the README says)") from None
