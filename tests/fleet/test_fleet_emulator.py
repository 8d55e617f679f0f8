"""The emulator subclass against behaviour documented for the real API server (API concepts page:
resource versions, watches and 410 Gone, optimistic concurrency, finalizers, garbage collection,
status subresource), exercised with the official client over HTTP."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from envfarm.fleet.api import ApiCallError, KubeApi
from envfarm.testing.kube_emulator import EmulatedCluster, Fault
from envfarm.testing.kube_objects import merge_patch, selector_matches

NS = "ns"
MERGE = "application/merge-patch+json"


def pod(name: str, labels: dict | None = None, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}, **meta},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}


def raw(response) -> dict:
    return json.loads(response.data)


def test_create_fills_server_side_fields_and_duplicates_are_409(core: client.CoreV1Api) -> None:
    created = raw(core.create_namespaced_pod(NS, pod("p"), _preload_content=False))["metadata"]
    assert created["namespace"] == NS and created["uid"] and created["creationTimestamp"]
    assert int(created["resourceVersion"]) > 0
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(NS, pod("p"))
    assert err.value.status == 409 and "AlreadyExists" in err.value.body
    generated = raw(core.create_namespaced_pod(NS, pod("", generateName="gen-"), _preload_content=False))
    assert generated["metadata"]["name"].startswith("gen-")


def test_stale_resource_version_is_a_conflict(core: client.CoreV1Api) -> None:
    rv = raw(core.create_namespaced_pod(NS, pod("p"), _preload_content=False))["metadata"]["resourceVersion"]
    core.patch_namespaced_pod("p", NS, {"metadata": {"resourceVersion": rv, "labels": {"a": "1"}}}, _content_type=MERGE)
    with pytest.raises(client.ApiException) as err:
        core.patch_namespaced_pod("p", NS, {"metadata": {"resourceVersion": rv, "labels": {"a": "2"}}}, _content_type=MERGE)
    assert err.value.status == 409


def test_merge_patch_null_deletes_a_key(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("p", {"a": "1", "b": "2"}))
    out = raw(core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"a": None}}}, _content_type=MERGE,
                                        _preload_content=False))
    assert out["metadata"]["labels"] == {"b": "2"}
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}) == {"a": {"c": 2}}


def test_list_filters_by_label_selector_and_returns_a_real_version(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("a", {"app": "x", "tier": "1"}))
    core.create_namespaced_pod(NS, pod("b", {"app": "y"}))
    listing = raw(core.list_namespaced_pod(NS, label_selector="app=x", _preload_content=False))
    assert [p["metadata"]["name"] for p in listing["items"]] == ["a"]
    assert int(listing["metadata"]["resourceVersion"]) >= 1
    assert selector_matches("app!=y,tier", {"app": "x", "tier": "1"}) and not selector_matches("!tier", {"tier": "1"})


def test_watch_resumes_after_a_version_and_expired_versions_are_410(cluster: EmulatedCluster, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("a"))
    rv = raw(core.list_namespaced_pod(NS, _preload_content=False))["metadata"]["resourceVersion"]
    core.create_namespaced_pod(NS, pod("b"))
    core.delete_namespaced_pod("a", NS)
    api = KubeApi(cluster.api_client())
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in api.watch("pods", NS, rv, timeout_seconds=1)]
    assert events == [("ADDED", "b"), ("DELETED", "a")]
    cluster.emulator.event_log_size = 1
    core.create_namespaced_pod(NS, pod("c"))
    with pytest.raises(ApiCallError) as err:
        list(api.watch("pods", NS, rv, timeout_seconds=1))
    assert err.value.status == 410


def test_finalizers_hold_deletion_and_owner_deletion_collects_dependents(custom: client.CustomObjectsApi,
                                                                         core: client.CoreV1Api,
                                                                         cluster: EmulatedCluster) -> None:
    fleet = custom.create_namespaced_custom_object("envfarm.io", "v1alpha1", NS, "sandboxfleets", {
        "apiVersion": "envfarm.io/v1alpha1", "kind": "SandboxFleet",
        "metadata": {"name": "f", "finalizers": ["envfarm.io/fleet-cleanup"]}, "spec": {}})
    owner = [{"apiVersion": "envfarm.io/v1alpha1", "kind": "SandboxFleet", "name": "f", "uid": fleet["metadata"]["uid"]}]
    core.create_namespaced_pod(NS, pod("child", ownerReferences=owner))
    custom.delete_namespaced_custom_object("envfarm.io", "v1alpha1", NS, "sandboxfleets", "f")
    held = custom.get_namespaced_custom_object("envfarm.io", "v1alpha1", NS, "sandboxfleets", "f")
    assert held["metadata"]["deletionTimestamp"] and len(cluster.pods(NS)) == 1
    custom.patch_namespaced_custom_object("envfarm.io", "v1alpha1", NS, "sandboxfleets", "f",
                                          {"metadata": {"finalizers": None}}, _content_type=MERGE)
    with pytest.raises(client.ApiException) as err:
        custom.get_namespaced_custom_object("envfarm.io", "v1alpha1", NS, "sandboxfleets", "f")
    assert err.value.status == 404 and cluster.pods(NS) == []


def test_status_subresource_separates_spec_and_status(custom: client.CustomObjectsApi) -> None:
    args = ("envfarm.io", "v1alpha1", NS, "sandboxfleets")
    custom.create_namespaced_custom_object(*args, {"apiVersion": "envfarm.io/v1alpha1", "kind": "SandboxFleet",
                                                   "metadata": {"name": "f"}, "spec": {"maxPods": 1}})
    custom.patch_namespaced_custom_object_status(*args, "f", {"status": {"ready": 3}, "spec": {"maxPods": 9}})
    custom.patch_namespaced_custom_object(*args, "f", {"status": {"ready": 99}, "spec": {"maxPods": 2}}, _content_type=MERGE)
    got = custom.get_namespaced_custom_object(*args, "f")
    assert got["spec"]["maxPods"] == 2 and got["status"]["ready"] == 3 and got["metadata"]["generation"] == 2


def test_injected_faults_answer_like_a_busy_server(cluster: EmulatedCluster, core: client.CoreV1Api) -> None:
    cluster.emulator.inject(Fault(verb="create", plural="pods", code=429, count=2, retry_after=2))
    for _ in range(2):
        with pytest.raises(client.ApiException) as err:
            core.create_namespaced_pod(NS, pod("p"))
        assert err.value.status == 429 and err.value.headers["Retry-After"] == "2"
    core.create_namespaced_pod(NS, pod("p"))
    assert cluster.emulator.stats.calls[("create", "pods", 429)] == 2
