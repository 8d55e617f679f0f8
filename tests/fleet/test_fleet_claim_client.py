"""The claim client (`envfarm.sandbox.open` on a fleet: envfarm/sandbox/claim.py) against the real
FleetController on the emulator: the claim it writes, the pod it gets, what close() does, and the
failures a worker must see as one SandboxError with nothing left behind."""

from __future__ import annotations

from typing import Any

import pytest

from envfarm import sandbox
from envfarm.errors import SandboxError
from envfarm.fleet import labels as L
from envfarm.sandbox.backend import KubernetesTarget, SandboxBackend
from envfarm.sandbox.kubernetes import KubernetesSandbox
from envfarm.testing.kube_emulator import Fault
from fleet_helpers import GROUP, NS, make_fleet, ready_count, sandbox_pods, wait_until


def on_fleet(timeout: float = 20.0, fleet: str = "f") -> SandboxBackend:
    return SandboxBackend(backend="kubernetes", kubernetes=KubernetesTarget(fleet=fleet, namespace=NS, claim_timeout_s=timeout))


def claims(cluster: Any) -> list[dict]:
    return cluster.objects(L.CLAIM_PLURAL, NS)


def pod_named(cluster: Any, name: str) -> dict | None:
    return next((p for p in sandbox_pods(cluster) if p["metadata"]["name"] == name), None)


@pytest.mark.parametrize("recycle", [True, False], ids=["recycled", "deleted"])
def test_open_claims_a_bound_pod_and_close_releases_it(cluster, custom, controller_factory, kubelet, recycle) -> None:
    resets: list[str] = []
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 1}], recycle={"enabled": True, "maxUses": 5})
    controller_factory(resetter=(lambda ns, pod, cmd: resets.append(pod) or True) if recycle else None)
    wait_until(lambda: ready_count(cluster) == 1, what="the warm pod")

    box = sandbox.open("img-a", run_id="RL run 7", task_id="octo/repo#12", backend=on_fleet(), api_client=cluster.api_client())

    assert isinstance(box, KubernetesSandbox) and box.namespace == NS
    [claim] = claims(cluster)
    assert claim["spec"]["fleet"] == "f" and claim["spec"]["image"] == "a"  # the fleet's key for the image reference
    assert claim["metadata"]["labels"] == {"envfarm.io/run": "RL_run_7", "envfarm.io/task": "octo_repo_12"}
    assert claim["metadata"]["name"].startswith("rl-run-7-")
    assert claim["status"]["phase"] == "Bound" and claim["status"]["podName"] == box.pod
    bound = pod_named(cluster, box.pod)
    assert bound["metadata"]["labels"][L.CLAIM] == claim["metadata"]["name"]
    uid = bound["metadata"]["uid"]  # names are deterministic: a refilled warm pod may reuse the name

    box.close()
    released = custom.get_namespaced_custom_object(*GROUP, L.CLAIM_PLURAL, claim["metadata"]["name"])
    assert released["spec"]["release"] == "Recycle"
    box.close()  # idempotent: no second write, no error
    wait_until(lambda: not claims(cluster), what="the released claim reaped")
    if recycle:  # reset, then unbound: the same pod is warm again
        wait_until(lambda: resets == [box.pod] and any(p["metadata"]["uid"] == uid and L.CLAIM not in p["metadata"]["labels"]
                                                       for p in sandbox_pods(cluster)), what="the pod reset and unbound")
    else:  # no exec access to reset it: a released pod is never reused, it is deleted
        wait_until(lambda: all(p["metadata"]["uid"] != uid for p in sandbox_pods(cluster)), what="the released pod deleted")
        assert not resets


def test_an_image_the_fleet_does_not_serve_is_one_clear_error_and_no_claim(cluster, custom) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 0}])
    with pytest.raises(SandboxError) as err:
        sandbox.open("img-other", run_id="r", backend=on_fleet(), api_client=cluster.api_client())
    assert "serves no image 'img-other'" in err.value.problem and "a=img-a" in err.value.problem
    assert "spec.images" in err.value.fix
    assert claims(cluster) == []


def test_a_missing_fleet_is_one_clear_error(cluster) -> None:
    with pytest.raises(SandboxError) as err:
        sandbox.open("img-a", run_id="r", backend=on_fleet(fleet="nope"), api_client=cluster.api_client())
    assert "SandboxFleet nope" in err.value.problem and "404" in err.value.problem and err.value.fix
    assert claims(cluster) == []


def test_a_claim_never_bound_is_deleted_and_raises(cluster, custom) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 0}])  # and no controller running
    created: list[str] = []
    emulator = cluster.emulator
    with pytest.raises(SandboxError) as err:
        sandbox.open("a", run_id="r", backend=on_fleet(timeout=0.6), api_client=cluster.api_client())
    created = [key for key, n in emulator.stats.calls.items() if key[:2] == ("create", L.CLAIM_PLURAL) and n]
    assert created == [("create", L.CLAIM_PLURAL, 201)]  # it was created ...
    assert claims(cluster) == []  # ... and deleted again
    assert "was not bound within 0.6s" in err.value.problem and "kubectl get sfl" in err.value.fix


def test_a_claim_the_controller_fails_is_deleted_and_raises_with_its_reason(cluster, custom, controller_factory, kubelet) -> None:
    make_fleet(custom, images=[{"name": "bad", "image": "img-bad", "warm": 2}], failurePolicy={"quarantineAfter": 2})
    controller_factory()
    wait_until(lambda: (custom.get_namespaced_custom_object(*GROUP, L.FLEET_PLURAL, "f").get("status") or {})
               .get("quarantinedCount"), what="the bad image quarantined")
    with pytest.raises(SandboxError) as err:
        sandbox.open("img-bad", run_id="r", backend=on_fleet(), api_client=cluster.api_client())
    assert "failed (ImageQuarantined)" in err.value.problem
    assert claims(cluster) == []


def test_transient_api_errors_while_waiting_and_releasing_are_retried(cluster, custom, controller_factory, kubelet) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 1}])
    controller_factory()
    wait_until(lambda: ready_count(cluster) == 1, what="the warm pod")
    cluster.emulator.inject(Fault(verb="get", plural=L.CLAIM_PLURAL, code=503, count=2),
                            Fault(verb="update", plural=L.CLAIM_PLURAL, code=429, count=1, retry_after=1))
    box = sandbox.open("a", run_id="r", backend=on_fleet(), api_client=cluster.api_client())
    [claim] = claims(cluster)
    box.close()
    assert cluster.emulator.stats.calls[("get", L.CLAIM_PLURAL, 503)] == 2
    assert cluster.emulator.stats.calls[("update", L.CLAIM_PLURAL, 429)] == 1
    released = custom.get_namespaced_custom_object(*GROUP, L.CLAIM_PLURAL, claim["metadata"]["name"])
    assert released["spec"]["release"] == "Recycle"


def test_a_permanent_error_while_waiting_deletes_the_claim(cluster, custom) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 0}])
    cluster.emulator.inject(Fault(verb="get", plural=L.CLAIM_PLURAL, code=403, count=1))
    with pytest.raises(SandboxError) as err:
        sandbox.open("a", run_id="r", backend=on_fleet(), api_client=cluster.api_client())
    assert "403" in err.value.problem
    assert claims(cluster) == []  # nothing left to hold a pod once the worker gave up
