"""The controller's calls to the API server, over the official `kubernetes` client.

Why the official synchronous client and threads (not kopf or kubernetes-asyncio): it is the
maintained client already pinned here, its watch and exec support are the reference ones, and with
`_preload_content=False` plus our own JSON parsing it skips model deserialization, which dominates
CPU at 10k pods; the throughput ceiling is the API server's budget (tens to hundreds of writes/s),
which a pool of threads saturates easily. kopf would add a per-object handler framework and its own
annotations on every pod (one more write per pod); we need batch decisions per fleet instead.

Every call is counted by verb, resource and code (metrics) and raises `ApiCallError` with the status
code and Retry-After, so the executor's backoff sees what the server said.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from envfarm.fleet import labels as L
from envfarm.fleet.metrics import FleetMetrics

MERGE_PATCH = "application/merge-patch+json"  # the client would otherwise pick json-patch for a dict
REQUEST_TIMEOUT = 30.0


class ApiCallError(Exception):
    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.retry_after = status, reason, retry_after


def _retry_after(exc: client.ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


class KubeApi:
    def __init__(self, api_client: client.ApiClient, metrics: FleetMetrics | None = None) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.metrics = metrics or FleetMetrics()

    def _call(self, verb: str, resource: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_preload_content", False)
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            response = fn(*args, **kwargs)
        except client.ApiException as exc:
            self.metrics.api_calls.labels(verb, resource, str(exc.status)).inc()
            raise ApiCallError(int(exc.status or 0), str(exc.reason), _retry_after(exc)) from None
        except Exception as exc:  # connection reset, timeout: retryable as status 0
            self.metrics.api_calls.labels(verb, resource, "0").inc()
            raise ApiCallError(0, f"{type(exc).__name__}: {exc}") from None
        self.metrics.api_calls.labels(verb, resource, str(response.status)).inc()
        return json.loads(response.data) if response.data else {}

    # pods
    def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        return self._call("create", "pods", self.core.create_namespaced_pod, namespace, pod)

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("delete", "pods", self.core.delete_namespaced_pod, name, namespace)

    def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call("patch", "pods", self.core.patch_namespaced_pod, name, namespace, patch,
                          _content_type=MERGE_PATCH)

    def list_pods(self, namespace: str, selector: str) -> dict[str, Any]:
        return self._call("list", "pods", self.core.list_namespaced_pod, namespace, label_selector=selector)

    # custom objects (fleets, claims)
    def list_custom(self, namespace: str, plural: str) -> dict[str, Any]:
        return self._call("list", plural, self.custom.list_namespaced_custom_object, L.GROUP, L.VERSION, namespace, plural)

    def patch_custom(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call("patch", plural, self.custom.patch_namespaced_custom_object, L.GROUP, L.VERSION,
                          namespace, plural, name, patch, _content_type=MERGE_PATCH)

    def patch_custom_status(self, namespace: str, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._call("patch", f"{plural}/status", self.custom.patch_namespaced_custom_object_status, L.GROUP,
                          L.VERSION, namespace, plural, name, {"status": status}, _content_type=MERGE_PATCH)

    def delete_custom(self, namespace: str, plural: str, name: str) -> dict[str, Any]:
        return self._call("delete", plural, self.custom.delete_namespaced_custom_object, L.GROUP, L.VERSION,
                          namespace, plural, name)

    # daemonsets (pre-pull)
    def apply_daemonset(self, namespace: str, daemonset: dict[str, Any]) -> dict[str, Any]:
        name = daemonset["metadata"]["name"]
        try:
            return self._call("create", "daemonsets", self.apps.create_namespaced_daemon_set, namespace, daemonset)
        except ApiCallError as exc:
            if exc.status != 409:
                raise
        return self._call("patch", "daemonsets", self.apps.patch_namespaced_daemon_set, name, namespace, daemonset,
                          _content_type=MERGE_PATCH)

    # leases (leader election)
    def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("get", "leases", self.coordination.read_namespaced_lease, name, namespace)

    def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        return self._call("create", "leases", self.coordination.create_namespaced_lease, namespace, lease)

    def replace_lease(self, namespace: str, name: str, lease: dict[str, Any]) -> dict[str, Any]:
        return self._call("update", "leases", self.coordination.replace_namespaced_lease, name, namespace, lease)

    # watches
    def watch(self, kind: str, namespace: str, resource_version: str, timeout_seconds: int,
              selector: str | None = None) -> Iterator[dict[str, Any]]:
        """Raw watch events ({type, object}) as parsed JSON; an ERROR event (410 Gone when the version
        expired) raises ApiCallError. Read line by line ourselves: the client's Watch helper retries a
        410 with the same stale version, and with deserialize=False it crashes on ERROR events."""
        if kind == "pods":
            fn, args = self.core.list_namespaced_pod, (namespace,)
        else:
            fn, args = self.custom.list_namespaced_custom_object, (L.GROUP, L.VERSION, namespace, kind)
        kwargs: dict[str, Any] = {"watch": True, "resource_version": resource_version, "timeout_seconds": timeout_seconds,
                                  "allow_watch_bookmarks": True, "_preload_content": False,
                                  "_request_timeout": (10, timeout_seconds + 10)}
        if selector:
            kwargs["label_selector"] = selector
        try:
            response = fn(*args, **kwargs)
        except client.ApiException as exc:
            self.metrics.api_calls.labels("watch", kind, str(exc.status)).inc()
            raise ApiCallError(int(exc.status or 0), str(exc.reason), _retry_after(exc)) from None
        self.metrics.api_calls.labels("watch", kind, str(response.status)).inc()
        try:
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiCallError(int(status.get("code", 500)), f"{status.get('reason')}: {status.get('message')}")
                yield event
        finally:
            response.close()
            response.release_conn()
