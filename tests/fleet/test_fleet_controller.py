"""The controller end to end on the FleetEmulator (official client, real HTTP, watches included):
convergence without over-creation, claims, faults, kill-and-restart, leader election, cleanup."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from envfarm.fleet import labels as L
from envfarm.testing.kube_emulator import Fault
from fleet_helpers import GROUP, NS, claim_status, creates, make_claim, make_fleet, ready_count, sandbox_pods, wait_until

def test_warm_pool_converges_without_over_creation_under_a_slow_watch(cluster, custom, controller_factory, kubelet) -> None:
    cluster.emulator.watch_delay = 0.01  # every event arrives late: reconciles run ahead of the cache
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 30}, {"name": "b", "image": "img-b", "warm": 10}])
    ctl = controller_factory()
    wait_until(lambda: ready_count(cluster) == 40, what="40 ready pods")
    time.sleep(0.5)  # more reconciles: nothing more may be created
    assert creates(cluster) == 40 and len(sandbox_pods(cluster)) == 40
    assert ctl.reconciles > 3
    for pod in sandbox_pods(cluster):  # every pod names its owner (DESIGN.md invariant)
        labels = pod["metadata"]["labels"]
        assert labels[L.OWNER] == "SandboxFleet.f" and labels[L.MANAGED_BY] == "envfarm-fleet"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "SandboxFleet"
        assert pod["spec"]["automountServiceAccountToken"] is False
    status = wait_until(lambda: (custom.get_namespaced_custom_object(*GROUP, "sandboxfleets", "f").get("status") or {})
                        if (custom.get_namespaced_custom_object(*GROUP, "sandboxfleets", "f").get("status") or {}).get("ready") == 40
                        else None, what="fleet status ready=40")
    assert status["warm"] == 40 and status["successRate"] == "1.000"


def test_claims_are_served_warm_then_on_demand_then_recycled(cluster, custom, controller_factory, kubelet) -> None:
    resets: list[str] = []
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 2}, {"name": "b", "image": "img-b", "warm": 0}])
    ctl = controller_factory(resetter=lambda ns, pod, cmd: resets.append(pod) or True)
    wait_until(lambda: ready_count(cluster) == 2, what="warm pool")
    for name, image in (("c0", "a"), ("c1", "a"), ("c2", "b"), ("c3", "b")):
        make_claim(custom, name, image=image)
    bound = wait_until(lambda: [claim_status(custom, f"c{i}") for i in range(4)]
                       if all(claim_status(custom, f"c{i}").get("phase") == "Bound" for i in range(4)) else None,
                       what="4 bound claims")
    assert [s["servedFrom"] for s in bound] == ["warm", "warm", "on-demand", "on-demand"]  # b has no pool: never "no stock"
    assert len({s["podName"] for s in bound}) == 4  # never one pod for two claims
    wait_until(lambda: ready_count(cluster) == 6, what="warm pool refilled")
    custom.patch_namespaced_custom_object(*GROUP, "sandboxclaims", "c0", {"spec": {"release": "Recycle"}},
                                          _content_type="application/merge-patch+json")
    wait_until(lambda: resets == [bound[0]["podName"]], what="reset of the released pod")
    wait_until(lambda: not claim_status(custom, "c0"), what="released claim reaped")
    recycled = bound[0]["podName"]
    wait_until(lambda: (view := ctl.pods.get(recycled)) is not None and not view.reset_pending and view.claim is None
               and recycled not in ctl.expectations.bindings("f"), what="the controller sees the reset pod as warm")
    make_claim(custom, "c9")
    served = wait_until(lambda: claim_status(custom, "c9") if claim_status(custom, "c9").get("phase") == "Bound" else None)
    assert served["servedFrom"] == "recycled" and served["podName"] == bound[0]["podName"]


def test_bad_image_is_quarantined_and_its_claims_fail_with_a_reason(cluster, custom, controller_factory, kubelet) -> None:
    make_fleet(custom, images=[{"name": "bad", "image": "img-bad", "warm": 2}, {"name": "a", "image": "img-a", "warm": 1}],
               failurePolicy={"quarantineAfter": 3})
    controller_factory()
    status = wait_until(lambda: (custom.get_namespaced_custom_object(*GROUP, "sandboxfleets", "f").get("status") or {})
                        if (custom.get_namespaced_custom_object(*GROUP, "sandboxfleets", "f").get("status") or {}).get("quarantinedCount")
                        else None, what="quarantine")
    assert status["quarantined"][0]["name"] == "bad" and status["failuresByClass"]["ImagePull"] >= 3
    made = creates(cluster)
    time.sleep(0.6)
    assert creates(cluster) == made  # not retried forever
    make_claim(custom, "cb", image="bad")
    failed = wait_until(lambda: claim_status(custom, "cb") if claim_status(custom, "cb").get("phase") == "Failed" else None)
    assert failed["reason"] == "ImageQuarantined"


def test_converges_exactly_through_429_storms_500s_conflicts_and_dropped_watches(cluster, custom, controller_factory, kubelet) -> None:
    emulator = cluster.emulator
    emulator.drop_watch_after = 7
    emulator.inject(Fault(verb="create", plural="pods", code=429, count=25, probability=0.5, retry_after=1),
                    Fault(verb="create", plural="pods", code=500, count=10, probability=0.3),
                    Fault(verb="update", plural="*", code=409, count=5, probability=0.5),
                    Fault(verb="list", plural="pods", code=503, count=2))
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 30}])
    ctl = controller_factory()
    wait_until(lambda: ready_count(cluster) == 30, timeout=30, what="30 ready pods through faults")
    time.sleep(0.5)
    names = [p["metadata"]["name"] for p in sandbox_pods(cluster)]
    assert len(names) == len(set(names)) == 30 and creates(cluster) == 30
    assert emulator.stats.calls[("create", "pods", 429)] > 0 and ctl.pods.rewatches > 3


def test_kill_and_restart_makes_no_duplicates_and_leaves_no_orphans(cluster, custom, controller_factory, kubelet) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 60}])
    first = controller_factory(qps=40, burst=5)
    wait_until(lambda: 10 <= len(sandbox_pods(cluster)) < 60, what="a half-built pool")
    first.stop(graceful=False)  # crash: queued writes are lost, in-flight ones may still land
    time.sleep(0.3)
    second = controller_factory()
    wait_until(lambda: ready_count(cluster) == 60, what="60 ready after restart")
    time.sleep(0.5)
    pods = sandbox_pods(cluster)
    assert len(pods) == 60 and len({p["metadata"]["name"] for p in pods}) == 60
    assert creates(cluster) == 60  # the restarted controller rebuilt its view; nothing was made twice
    assert second.sweep_orphans() == 0


def test_two_replicas_only_the_leader_acts_and_the_standby_takes_over(cluster, custom, controller_factory, kubelet) -> None:
    fast = dict(leader_elect=True, lease_duration=1.0, renew_deadline=0.8, retry_period=0.1)
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 10}])
    a = controller_factory(identity="replica-a", **fast)
    b = controller_factory(identity="replica-b", **fast)
    wait_until(lambda: a.is_leader or b.is_leader, what="a leader")
    time.sleep(0.5)
    assert a.is_leader != b.is_leader
    wait_until(lambda: ready_count(cluster) == 10)
    leader, standby = (a, b) if a.is_leader else (b, a)
    assert standby.reconciles == 0 or standby.executor.pending == 0
    leader.stop(graceful=False)  # the lease is not released: the standby waits for it to expire
    wait_until(lambda: standby.is_leader, timeout=10, what="takeover")
    make_claim(custom, "after-failover")
    wait_until(lambda: claim_status(custom, "after-failover").get("phase") == "Bound", what="claim served by new leader")
    assert creates(cluster) == 11 or creates(cluster) == 10  # at most the warm refill after the claim


def test_deleting_a_fleet_removes_every_pod_and_the_finalizer(cluster, custom, controller_factory, kubelet) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 8}])
    controller_factory()
    wait_until(lambda: ready_count(cluster) == 8)
    wait_until(lambda: L.FINALIZER in (custom.get_namespaced_custom_object(*GROUP, "sandboxfleets", "f")["metadata"]
                                       .get("finalizers") or []), what="finalizer added")
    custom.delete_namespaced_custom_object(*GROUP, "sandboxfleets", "f")
    wait_until(lambda: not sandbox_pods(cluster) and not cluster.objects("sandboxfleets", NS), what="fleet and pods gone")
    assert cluster.emulator.stats.calls[("delete", "pods", 200)] >= 8  # the controller deleted them itself


def test_orphans_are_swept(cluster, custom, core, controller_factory, kubelet) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 1}])
    core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "ghost-a-00000", "labels": {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.FLEET: "ghost", L.IMAGE: "a", L.ROLE: "sandbox"}},
        "spec": {"containers": [{"name": "c", "image": "img-a"}]}})
    controller_factory()
    wait_until(lambda: {p["metadata"]["name"] for p in sandbox_pods(cluster)} == {"f-a-00000"}, what="orphan swept")


def test_invalid_fleet_gets_a_condition_and_no_pods(cluster, custom, controller_factory) -> None:
    make_fleet(custom, images=[{"name": "Bad_Name", "image": "x"}])
    controller_factory()
    status = wait_until(lambda: custom.get_namespaced_custom_object(*GROUP, "sandboxfleets", "f").get("status"))
    condition = status["conditions"][0]
    assert condition["reason"] == "InvalidSpec" and "spec.images.0.name" in condition["message"] and "fix:" in condition["message"]
    assert sandbox_pods(cluster) == []


def test_metrics_report_pods_api_calls_and_success(cluster, custom, controller_factory, kubelet) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 3}])
    ctl = controller_factory()
    wait_until(lambda: ready_count(cluster) == 3)
    wait_until(lambda: b'envfarm_fleet_pods{fleet="f",phase="ready"} 3.0' in generate_latest(ctl.metrics.registry))
    text = generate_latest(ctl.metrics.registry).decode()
    assert 'envfarm_fleet_api_calls_total{code="201",resource="pods",verb="create"} 3.0' in text
    assert 'envfarm_fleet_success_rate{fleet="f"} 1.0' in text and "envfarm_fleet_pod_startup_seconds_bucket" in text
