"""The sandbox pod a fleet creates: restricted Pod Security, no token, no network, owned by the fleet.

Pods are plain dicts (not client model objects) everywhere in the controller: building and parsing
V1Pod models costs milliseconds per pod, which is the whole budget at 10k pods.
"""

from __future__ import annotations

import time
from typing import Any

from envfarm.fleet import labels as L
from envfarm.fleet.spec import FleetSpec, ImageEntry

SANDBOX_UID = 1000  # restricted PSS: never root; task images make /testbed writable by this uid
DEFAULT_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]  # exits fast on delete
DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {
    "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
    "limits": {"memory": "2Gi", "ephemeral-storage": "8Gi"},
}


def fleet_owner_reference(fleet: dict[str, Any]) -> dict[str, Any]:
    """ownerReference to the fleet: deleting the fleet lets the API server's garbage collector
    remove every pod, even while the controller is down."""
    meta = fleet["metadata"]
    return {
        "apiVersion": L.API_VERSION,
        "kind": "SandboxFleet",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def sandbox_labels(fleet_name: str, image_key: str, claim: str | None = None) -> dict[str, str]:
    out = {
        L.MANAGED_BY: L.MANAGED_BY_VALUE,
        L.FLEET: fleet_name,
        L.IMAGE: image_key,
        L.OWNER: f"SandboxFleet.{fleet_name}",
        L.ROLE: "sandbox",
    }
    if claim:
        out[L.CLAIM] = claim
    return out


def build_pod(
    fleet: dict[str, Any],
    spec: FleetSpec,
    entry: ImageEntry,
    index: int,
    claim: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    meta = fleet["metadata"]
    template = spec.template
    container: dict[str, Any] = {
        "name": "sandbox",
        "image": entry.image,
        "imagePullPolicy": "IfNotPresent",  # the pre-pull DaemonSet has put it on the node
        "command": template.command or DEFAULT_COMMAND,
        "resources": template.resources or DEFAULT_RESOURCES,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": SANDBOX_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if template.workdir:
        container["workingDir"] = template.workdir
    if template.env:
        container["env"] = [dict(item) for item in template.env]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",  # a crashed sandbox lost its state: replace it, never restart it
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SANDBOX_UID,
            "runAsGroup": SANDBOX_UID,
            "fsGroup": SANDBOX_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "scratch", "emptyDir": {"sizeLimit": "4Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if template.node_selector:
        pod_spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        pod_spec["tolerations"] = [dict(item) for item in template.tolerations]
    if template.priority_class_name:
        pod_spec["priorityClassName"] = template.priority_class_name
    if template.runtime_class_name:
        pod_spec["runtimeClassName"] = template.runtime_class_name
    pod = pod_metadata(fleet, entry, index, claim, now if now is not None else time.time())
    pod["spec"] = pod_spec
    return pod


def pod_metadata(fleet: dict[str, Any], entry: ImageEntry, index: int, claim: str | None, now: float) -> dict[str, Any]:
    """Everything of a sandbox pod but its spec: what differs from one pod of an image to the next."""
    meta = fleet["metadata"]
    annotations = {L.ANN_USES: "0" if claim is None else "1"}
    annotations[L.ANN_BOUND_AT if claim else L.ANN_IDLE_SINCE] = f"{now:.3f}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": L.pod_name(meta["name"], entry.name, index),
            "namespace": meta["namespace"],
            "labels": sandbox_labels(meta["name"], entry.name, claim),
            "annotations": annotations,
            "ownerReferences": [fleet_owner_reference(fleet)],
        },
    }


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The `restricted` Pod Security Standard's rules that a sandbox pod could break, checked here
    so a bad template fails in CI rather than at admission on the cluster."""
    spec = pod.get("spec", {})
    problems: list[str] = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken must be false (sandboxes get no API token)")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} must be false")
    pod_sc = spec.get("securityContext", {})
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"volume {volume.get('name')}: hostPath is forbidden")
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        sc = container.get("securityContext", {})
        name = container.get("name")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            problems.append(f"container {name}: privileged is forbidden")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            problems.append(f"container {name}: capabilities must drop ALL and add none")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"container {name}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"container {name}: runAsUser 0 is forbidden")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost")
    return problems
