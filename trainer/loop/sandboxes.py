"""Where rollout workers get their grading sandbox: the one switch between the container engine on this
machine (Docker or Podman through the Docker API) and pods on a Kubernetes cluster.

Everything above this module speaks the Sandbox protocol only, so a run moves to a cluster by changing
`sandbox.backend`. The kubernetes branch execs into pods that already run (listed in the config, one per
worker); claiming pods from the fleet controller is the controller's job, not the trainer's.
"""

from __future__ import annotations

import os
from typing import Any

from envfarm.errors import SandboxError
from envfarm.sandbox.protocol import Sandbox
from trainer.loop.config import KubernetesCfg, RunConfig

KUBE_FIX = ("set sandbox.kubernetes.kubeconfig to a kubeconfig file for a reachable cluster (or run inside the cluster), "
            "or use sandbox.backend=docker")


def make_sandbox(cfg: RunConfig, index: int, run_id: str) -> Sandbox:
    """The sandbox rollout worker `index` grades in, from the configured backend."""
    if cfg.sandbox.backend == "kubernetes":
        return kubernetes_sandbox(cfg.sandbox.kubernetes, index)
    return docker_sandbox(cfg, index, run_id)


def docker_sandbox(cfg: RunConfig, index: int, run_id: str) -> Sandbox:
    """A fresh container on the rollout image, labelled with the run so `envfarm gc` can find leftovers."""
    from envfarm.config import settings
    from envfarm.sandbox.docker import DockerSandbox

    return DockerSandbox(cfg.rollout.image or settings().base_image, run_id=run_id, task_id=f"rollout-worker-{index}")


def kube_api_client(k: KubernetesCfg) -> Any:
    """An ApiClient from sandbox.kubernetes.kubeconfig, else in-cluster, else KUBECONFIG / ~/.kube/config.
    Raises SandboxError naming the fix when none of them exists or loads."""
    from kubernetes import client, config as kube_config

    try:
        if k.kubeconfig:
            if not os.path.exists(k.kubeconfig):
                raise SandboxError(f"sandbox.kubernetes.kubeconfig={k.kubeconfig!r} does not exist", KUBE_FIX)
            return kube_config.new_client_from_config(config_file=k.kubeconfig, context=k.context)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            kube_config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return kube_config.new_client_from_config(context=k.context)
    except SandboxError:
        raise
    except Exception as exc:  # noqa: BLE001 - ConfigException, bad YAML, a missing file alike
        raise SandboxError(f"no usable Kubernetes configuration for sandbox.backend=kubernetes ({exc})", KUBE_FIX) from None


def kubernetes_sandbox(k: KubernetesCfg, index: int, api_client: Any = None) -> Sandbox:
    """Worker `index` execs into pods[index]; nothing is contacted until the first command."""
    from envfarm.fleet.sandbox import KubernetesSandbox

    if index >= len(k.pods):
        raise SandboxError(f"rollout worker {index} has no pod: sandbox.kubernetes.pods lists {len(k.pods)}",
                           "list one running sandbox pod per rollout worker in sandbox.kubernetes.pods")
    return KubernetesSandbox(api_client if api_client is not None else kube_api_client(k), k.namespace, k.pods[index],
                             container=k.container, workdir=k.workdir)


def preflight(cfg: RunConfig, workers: int | None = None) -> None:
    """Fail before Ray and the workers start when the kubernetes backend cannot work: every worker would
    otherwise publish only failed rollouts and the run would never train. The docker backend needs no check
    here (a missing engine or image already fails the first grading with its own fix)."""
    if cfg.sandbox.backend != "kubernetes":
        return
    from kubernetes import client

    k = cfg.sandbox.kubernetes
    api = client.CoreV1Api(kube_api_client(k))
    server = api.api_client.configuration.host
    for pod in k.pods[:workers or cfg.rollout.num_workers]:
        try:
            phase = api.read_namespaced_pod(pod, k.namespace, _request_timeout=k.request_timeout_s).status.phase
        except Exception as exc:  # noqa: BLE001 - connection refused, TLS, 403 and 404 read the same to the user
            reason = getattr(exc, "reason", None) or str(exc).splitlines()[0][:200]
            raise SandboxError(f"cannot read pod {k.namespace}/{pod} from the cluster at {server}: {reason}",
                               f"check the pod exists and the cluster is reachable; {KUBE_FIX}") from None
        if phase != "Running":
            raise SandboxError(f"sandbox pod {k.namespace}/{pod} is {phase}, not Running",
                               "wait for it to start or list running pods in sandbox.kubernetes.pods")
