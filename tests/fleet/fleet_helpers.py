"""Helpers of the fleet tests that run the controller on the emulator: waiting, fleets and claims, pods."""

from __future__ import annotations

import time
from typing import Any, Callable

from kubernetes import client

from envfarm.fleet import labels as L
from envfarm.testing.kube_emulator import EmulatedCluster

NS = "envfarm-sandboxes"
GROUP = ("envfarm.io", "v1alpha1", NS)


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def make_fleet(custom: client.CustomObjectsApi, name: str = "f", **spec: Any) -> dict:
    body = {"maxPods": 100, "images": [{"name": "a", "image": "img-a", "warm": 5}]}
    body.update(spec)
    return custom.create_namespaced_custom_object(*GROUP, "sandboxfleets", {
        "apiVersion": "envfarm.io/v1alpha1", "kind": "SandboxFleet", "metadata": {"name": name}, "spec": body})


def make_claim(custom: client.CustomObjectsApi, name: str, image: str = "a", fleet: str = "f", **spec: Any) -> dict:
    return custom.create_namespaced_custom_object(*GROUP, "sandboxclaims", {
        "apiVersion": "envfarm.io/v1alpha1", "kind": "SandboxClaim", "metadata": {"name": name},
        "spec": {"fleet": fleet, "image": image, **spec}})


def claim_status(custom: client.CustomObjectsApi, name: str) -> dict:
    try:
        return custom.get_namespaced_custom_object(*GROUP, "sandboxclaims", name).get("status") or {}
    except client.ApiException:
        return {}


def sandbox_pods(cluster: EmulatedCluster) -> list[dict]:
    return [p for p in cluster.pods(NS) if p["metadata"]["labels"].get(L.ROLE) == "sandbox"]


def ready_count(cluster: EmulatedCluster) -> int:
    return sum(1 for p in sandbox_pods(cluster) if (p.get("status") or {}).get("phase") == "Running")


def creates(cluster: EmulatedCluster) -> int:
    return cluster.emulator.stats.calls[("create", "pods", 201)]
