"""One pre-pull DaemonSet per fleet, so a sandbox's cold start is not an image pull.

Each image of the set is an init container that exits at once (the pull is the point); a pause-like
main container keeps the pod alive so the kubelet keeps the images referenced. When a fleet is deleted
or drops an image, the DaemonSet follows (ownerReference / re-render), the images lose their last
user, and the kubelet's image GC (imageGCHighThresholdPercent) reclaims the disk.
"""

from __future__ import annotations

from typing import Any

from envfarm.fleet import labels as L
from envfarm.fleet.podspec import SANDBOX_UID, fleet_owner_reference
from envfarm.fleet.spec import FleetSpec

MAX_PREPULL_IMAGES = 64  # init containers per pod; beyond that, only images with a warm pool are pre-pulled
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": SANDBOX_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def prepull_images(spec: FleetSpec) -> list[tuple[str, str]]:
    """(key, image) pairs to pre-pull: warm-pool images first (they are claimed first), deduplicated."""
    ordered = sorted(spec.images, key=lambda entry: -entry.warm)
    seen: dict[str, str] = {}
    for entry in ordered:
        if entry.image not in seen.values():
            seen[entry.name] = entry.image
    return list(seen.items())[:MAX_PREPULL_IMAGES]


def build_prepull_daemonset(fleet: dict[str, Any], spec: FleetSpec) -> dict[str, Any] | None:
    if not spec.prepull.enabled:
        return None
    meta = fleet["metadata"]
    selector = {L.FLEET: meta["name"], L.ROLE: "prepull"}
    init = [
        {
            "name": f"pull-{index}",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", "true"],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            "securityContext": _SECURITY,
        }
        for index, (_, image) in enumerate(prepull_images(spec))
    ]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": init,
        "containers": [{
            "name": "hold",
            "image": PAUSE_IMAGE,
            "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"memory": "16Mi"}},
            "securityContext": _SECURITY,
        }],
        "priorityClassName": spec.template.priority_class_name,
        "nodeSelector": dict(spec.template.node_selector) or None,
        "tolerations": [dict(t) for t in spec.template.tolerations] or None,
    }
    pod_spec = {key: value for key, value in pod_spec.items() if value is not None}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": f"{meta['name']}-prepull",
            "namespace": meta["namespace"],
            "labels": {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.OWNER: f"SandboxFleet.{meta['name']}", **selector},
            "ownerReferences": [fleet_owner_reference(fleet)],
        },
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {"metadata": {"labels": selector}, "spec": pod_spec},
        },
    }
