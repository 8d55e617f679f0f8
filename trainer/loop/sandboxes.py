"""Where rollout workers get their grading sandbox: `envfarm.sandbox.open` with the run's `sandbox:` section.

Everything above this module speaks the Sandbox protocol only, so a run moves to a cluster by changing
`sandbox.backend`. On Kubernetes, worker i execs into `sandbox.kubernetes.pods[i]` (slot i), or claims a pod
from `sandbox.kubernetes.fleet`; the controller, not the trainer, makes and recycles the pods.
"""

from __future__ import annotations

from envfarm import sandbox as sandboxes
from envfarm.config import settings
from envfarm.sandbox.protocol import Sandbox
from envfarm.trainer.loop.config import RunConfig


def make_sandbox(cfg: RunConfig, index: int, run_id: str) -> Sandbox:
    """The sandbox rollout worker `index` grades in (the rollout image, slot `index`), labelled with the run."""
    return sandboxes.open(cfg.rollout.image or settings().base_image, run_id=run_id, task_id=f"rollout-worker-{index}",
                          backend=cfg.sandbox, slot=index)


def preflight(cfg: RunConfig, workers: int | None = None) -> None:
    """Fail before Ray and the workers start when listed Kubernetes pods cannot be used. The docker backend and
    fleet claims need no check here: a missing engine, image or fleet fails the first sandbox with its own fix."""
    k = cfg.sandbox.kubernetes
    if cfg.sandbox.backend != "kubernetes" or k.fleet:
        return
    from envfarm.sandbox.kubernetes import check_pods_running

    check_pods_running(k, workers or cfg.rollout.num_workers)
