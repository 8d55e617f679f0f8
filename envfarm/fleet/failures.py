"""Why a sandbox pod failed, in the classes RL infrastructure engineers act on differently.

A permanent failure (the image does not exist, the registry refuses it, the container config is
wrong) will fail the same way every time: its image is quarantined after a few. A transient one
(evicted, node lost, unschedulable right now, OOM under a noisy neighbour) is retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class FailureClass(str, Enum):
    IMAGE_PULL = "ImagePull"
    UNSCHEDULABLE = "Unschedulable"
    OOM_KILLED = "OOMKilled"
    EVICTED = "Evicted"
    CRASH = "Crash"
    STARTUP_TIMEOUT = "StartupTimeout"
    NODE_LOST = "NodeLost"
    CONTAINER_CONFIG = "ContainerConfig"


@dataclass(frozen=True)
class Failure:
    cls: FailureClass
    permanent: bool
    message: str


_PERMANENT_PULL_HINTS = ("not found", "manifest unknown", "unauthorized", "denied", "invalid reference", "repository does not exist")
_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def pod_is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def classify(pod: dict[str, Any], now: float, created_at: float, startup_timeout: float) -> Failure | None:
    """The pod's failure, or None while it is healthy or may still start."""
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    reason = status.get("reason", "")
    message = status.get("message", "")
    containers = status.get("containerStatuses") or []

    if reason == "Evicted":
        return Failure(FailureClass.EVICTED, False, message or "evicted by the kubelet")
    if reason == "NodeLost" or phase == "Unknown":
        return Failure(FailureClass.NODE_LOST, False, message or "the pod's node stopped reporting")
    for cs in containers:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        w_reason, w_message = waiting.get("reason", ""), waiting.get("message", "")
        if w_reason in _PULL_REASONS:
            permanent = w_reason == "InvalidImageName" or any(h in w_message.lower() for h in _PERMANENT_PULL_HINTS)
            return Failure(FailureClass.IMAGE_PULL, permanent, f"{w_reason}: {w_message}".strip(": "))
        if w_reason in _CONFIG_REASONS:
            return Failure(FailureClass.CONTAINER_CONFIG, True, f"{w_reason}: {w_message}".strip(": "))
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if terminated:
            if terminated.get("reason") == "OOMKilled":
                return Failure(FailureClass.OOM_KILLED, False, "container exceeded its memory limit")
            return Failure(FailureClass.CRASH, False,
                           f"container exited with code {terminated.get('exitCode')}: {terminated.get('reason', '')}".strip(": "))
    if phase == "Failed":
        if reason == "DeadlineExceeded":
            return Failure(FailureClass.STARTUP_TIMEOUT, False, message or "activeDeadlineSeconds exceeded")
        return Failure(FailureClass.CRASH, False, message or reason or "pod failed")
    if phase == "Succeeded":
        return Failure(FailureClass.CRASH, False, "the sandbox's keep-alive process exited")
    if phase == "Pending" and now - created_at > startup_timeout:
        unschedulable = any(c.get("type") == "PodScheduled" and c.get("status") == "False"
                            and c.get("reason") == "Unschedulable" for c in status.get("conditions") or [])
        if unschedulable:
            return Failure(FailureClass.UNSCHEDULABLE, False, "no node fits the pod within the startup timeout")
        return Failure(FailureClass.STARTUP_TIMEOUT, False, f"not ready after {startup_timeout:.0f}s")
    return None
