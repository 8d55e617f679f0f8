"""A pod from a SandboxFleet, through a SandboxClaim: the client side of the fleet controller's claim API.

The caller writes a claim naming the fleet and the image key, the controller binds a ready pod to it
(`status.phase: Bound`, `status.podName`), and releasing sets `spec.release` so the controller recycles or
deletes the pod. Only the CRD's names come from `envfarm.fleet.labels`; nothing of the controller is
imported, so a trainer or miner on a cluster needs only the API server and a running controller.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Callable

from envfarm.errors import SandboxError
from envfarm.fleet import labels as L
from envfarm.sandbox.backend import KubernetesTarget

POLL_SECONDS = 0.25


def claim_name(run_id: str) -> str:
    """A DNS-1123 name unique per claim: `<run>-<random>`, at most 63 characters."""
    stem = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:40] or "claim"
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def label_value(value: str) -> str:
    """A label value Kubernetes accepts (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value)[:63].strip("._-")


def image_key(fleet: dict[str, Any], image: str) -> str:
    """The fleet's key for `image`: an entry whose name or image reference equals it."""
    entries = (fleet.get("spec") or {}).get("images") or []
    for entry in entries:
        if image in (entry.get("name"), entry.get("image")):
            return str(entry["name"])
    names = ", ".join(f"{e.get('name')}={e.get('image')}" for e in entries) or "none"
    raise SandboxError(f"SandboxFleet {fleet.get('metadata', {}).get('name')} serves no image {image!r} (it serves {names})",
                       "add the image to the fleet's spec.images, or claim from a fleet that serves it")


def _transient(exc: BaseException) -> bool:
    """Worth another try: throttled (429), a server error (5xx), or no answer at all (connection, timeout)."""
    from kubernetes import client

    if isinstance(exc, client.ApiException):
        return exc.status == 429 or (exc.status or 0) >= 500
    return isinstance(exc, Exception) and not isinstance(exc, SandboxError)


def _retry_after(exc: BaseException) -> float:
    headers = getattr(exc, "headers", None) or {}
    try:
        return float(headers.get("Retry-After") or 0) if hasattr(headers, "get") else 0.0
    except ValueError:
        return 0.0


def claim_pod(api_client: Any, target: KubernetesTarget, image: str, *, run_id: str, task_id: str,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> tuple[str, Callable[[], None]]:
    """Claim a pod serving `image`; returns the pod's name and the release function (idempotent).

    While waiting, throttling, server errors and dropped connections are retried until `claim_timeout_s`
    (a worker waits minutes for a pod; one 503 must not lose it). A claim that is not bound in time, that the
    controller marks Failed, or whose wait ends any other way (an API error that is not transient, an
    interrupt) is deleted before the error propagates, so nothing is left holding a pod."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    ns, timeout = target.namespace, target.request_timeout_s

    def call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(L.GROUP, L.VERSION, ns, *args, _request_timeout=timeout, **kwargs)
        except client.ApiException as exc:
            raise SandboxError(f"{what} in namespace {ns}: {exc.status} {exc.reason}",
                               "check the fleet controller is installed (kubectl apply -k k8s/) and the caller may "
                               "get sandboxfleets and create sandboxclaims") from exc
        except Exception as exc:  # noqa: BLE001 - connection refused, TLS, timeouts read the same to the user
            raise SandboxError(f"{what}: the cluster did not answer ({str(exc).splitlines()[0][:200]})",
                               "check the cluster is reachable from here") from exc

    def patient(what: str, until: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`call`, retrying transient failures with backoff (or the server's Retry-After) until `until`."""
        attempt = 0
        while True:
            try:
                return call(what, fn, *args, **kwargs)
            except SandboxError as exc:
                attempt += 1
                cause = exc.__cause__
                pause = max(_retry_after(cause), min(4.0, POLL_SECONDS * 2 ** attempt)) if cause else 0.0
                if cause is None or not _transient(cause) or clock() + pause >= until:
                    raise
                sleep(pause)

    fleet = call(f"reading SandboxFleet {target.fleet}", custom.get_namespaced_custom_object, L.FLEET_PLURAL, target.fleet)
    name = claim_name(run_id)
    body = {
        "apiVersion": L.API_VERSION, "kind": "SandboxClaim",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"envfarm.io/run": label_value(run_id), "envfarm.io/task": label_value(task_id)}},
        "spec": {"fleet": target.fleet, "image": image_key(fleet, image),
                 "deadlineSeconds": max(1, int(target.claim_timeout_s))},
    }
    call(f"creating SandboxClaim {name}", custom.create_namespaced_custom_object, L.CLAIM_PLURAL, body)
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        try:
            patient(f"releasing SandboxClaim {name}", clock() + max(timeout, 5.0), custom.patch_namespaced_custom_object,
                    L.CLAIM_PLURAL, name, {"spec": {"release": "Recycle"}}, _content_type="application/merge-patch+json")
        except SandboxError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, client.ApiException) and cause.status == 404):  # gone: nothing holds a pod
                raise SandboxError(exc.problem, "delete the claim by hand (kubectl delete sclaim); the fleet's ttlSeconds "
                                                "also reclaims it") from None
        released = True

    deadline = clock() + target.claim_timeout_s
    try:
        while True:
            claim = patient(f"reading SandboxClaim {name}", deadline, custom.get_namespaced_custom_object, L.CLAIM_PLURAL, name)
            status = claim.get("status") or {}
            if status.get("phase") == "Bound" and status.get("podName"):
                return str(status["podName"]), release
            failed = status.get("phase") == "Failed"
            if failed or clock() >= deadline:
                why = f"failed ({status.get('reason', 'no reason given')})" if failed else f"was not bound within {target.claim_timeout_s:g}s"
                raise SandboxError(f"SandboxClaim {ns}/{name} for image {image!r} on fleet {target.fleet} {why}",
                                   "check the fleet's status (kubectl get sfl) for failed or quarantined images and its maxPods")
            sleep(POLL_SECONDS)
    except BaseException:
        _delete_quietly(custom, ns, name, timeout)
        raise


def _delete_quietly(custom: Any, namespace: str, name: str, timeout: float) -> None:
    try:
        custom.delete_namespaced_custom_object(L.GROUP, L.VERSION, namespace, L.CLAIM_PLURAL, name, _request_timeout=timeout)
    except Exception:  # noqa: BLE001 - best effort: the claim's deadline makes the controller fail it anyway
        pass
