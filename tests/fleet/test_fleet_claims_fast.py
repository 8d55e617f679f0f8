"""Claims are bound between full plans (the fast path) and their writes go before warm-pool creates.
Driven in simulated time (envfarm/testing/fleet_sim.py) through the real controller; no timing thresholds."""

from __future__ import annotations

from envfarm.fleet import labels as L
from envfarm.testing.fleet_sim import ClusterModel, ReconcileLoop, Sim, SimCluster, build_controller
from envfarm.fleet.views import ClaimView

NS = "envfarm-sandboxes"


def warm_fleet(warm: int = 4) -> tuple[Sim, SimCluster, object, ReconcileLoop]:
    sim = Sim(1)
    cluster = SimCluster(sim, ClusterModel(nodes=10, p_evicted=0, p_crash=0, p_oom=0, p_node_lost=0), NS)
    ctl = build_controller(sim, cluster, qps=100, burst=100, max_in_flight=16)
    cluster.create_fleet("f", {"maxPods": 50, "images": [{"name": "a", "image": "img-a", "warm": warm}]})
    cluster.prepulled.add("img-a")
    loop = ReconcileLoop(sim, ctl, cluster.counters)
    sim.run_until(lambda: cluster.running() >= warm, limit=120)
    sim.run_until(lambda: False, limit=2)  # the watch delivers every ready pod and a full plan sees them
    return sim, cluster, ctl, loop


def bound_pods(cluster: SimCluster, claim: str) -> list[str]:
    return [name for name, pod in cluster.pods.items() if (pod.obj["metadata"].get("labels") or {}).get(L.CLAIM) == claim]


def claim_writes(cluster: SimCluster) -> int:
    return cluster.counters.total("patch", "sandboxclaims/status")


def test_a_new_claim_is_bound_without_waiting_for_a_full_plan() -> None:
    sim, cluster, ctl, loop = warm_fleet()
    loop.stopped = True  # no full plan from here on: only the claim watch can bind it
    passes = ctl.reconciles
    cluster.worker_create_claim("c1", "f", "a")
    sim.run_until(lambda: "c1" in cluster.claim_bound_at, limit=5)
    assert ctl.reconciles == passes
    status = cluster.claims["c1"]["status"]
    assert status["phase"] == "Bound" and status["servedFrom"] == "warm"
    assert bound_pods(cluster, "c1") == [status["podName"]]
    writes, creates = claim_writes(cluster), cluster.counters.creates_ok
    # the next full plans agree with the fast decision: no second pod, no second status write
    for _ in range(3):
        ctl.reconcile("f")
        sim.run_until(lambda: False, limit=1)
    assert bound_pods(cluster, "c1") == [status["podName"]]
    assert claim_writes(cluster) == writes
    assert cluster.counters.creates_ok == creates + 1  # the warm pool is refilled once
    assert cluster.counters.max_live <= 50


def test_two_claims_never_get_the_same_pod_and_the_pool_running_dry_falls_back_to_plans() -> None:
    sim, cluster, ctl, loop = warm_fleet(warm=2)
    for n in range(5):
        cluster.worker_create_claim(f"c{n}", "f", "a")
    sim.run_until(lambda: len(cluster.claim_bound_at) >= 5, limit=120)
    pods = [cluster.claims[f"c{n}"]["status"]["podName"] for n in range(5)]
    assert len(set(pods)) == 5
    assert all(bound_pods(cluster, f"c{n}") == [pods[n]] for n in range(5))


def test_claim_writes_are_queued_before_warm_pool_creates() -> None:
    sim, cluster, ctl, loop = warm_fleet()
    loop.stopped = True
    # a claim the fast path did not see (as if delivered in a relist): the full plan binds it and
    # refills the pool in the same pass
    obj = {"metadata": {"name": "c1", "uid": "c1", "resourceVersion": "1", "creationTimestamp": "2027-01-15T08:00:00Z"},
           "spec": {"fleet": "f", "image": "a", "deadlineSeconds": 10**9}, "status": {}}
    cluster.claims["c1"] = obj
    ctl.claims.put("c1", ClaimView.from_claim(obj, sim.now))
    order: list[str] = []
    submit = ctl.executor.submit

    def record(priority, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        order.append(name.split()[0])
        return submit(priority, name, *args, **kwargs)

    ctl.executor.submit = record  # type: ignore[method-assign]
    ctl.reconcile("f")
    assert "bind" in order and "claim" in order and "create" in order
    assert max(order.index("bind"), order.index("claim")) < order.index("create")


def test_recycle_resets_under_the_old_label_then_frees_the_pod_with_one_patch() -> None:
    sim = Sim(2)
    cluster = SimCluster(sim, ClusterModel(nodes=10, p_evicted=0, p_crash=0, p_oom=0, p_node_lost=0, reset_seconds=2.0), NS)
    resets: list[str] = []
    ctl = build_controller(sim, cluster, qps=100, burst=100, max_in_flight=16,
                           resetter=lambda ns, pod, cmd: resets.append(pod) or True)
    cluster.create_fleet("f", {"maxPods": 50, "images": [{"name": "a", "image": "img-a", "warm": 1}],
                               "recycle": {"enabled": True, "maxUses": 5}})
    cluster.prepulled.add("img-a")
    ReconcileLoop(sim, ctl, cluster.counters)
    cluster.worker_create_claim("c1", "f", "a")
    sim.run_until(lambda: "c1" in cluster.claim_bound_at, limit=60)
    sim.run_until(lambda: False, limit=1)
    pod = cluster.claims["c1"]["status"]["podName"]
    patched: list[str] = []
    patch_pod = cluster.patch_pod

    def record(namespace, name, patch):  # type: ignore[no-untyped-def]
        patched.append(name)
        return patch_pod(namespace, name, patch)

    cluster.patch_pod = record  # type: ignore[method-assign]
    cluster.worker_release_claim("c1", "Recycle")
    sim.run_until(lambda: False, limit=0.5)  # the release is seen and the 2 s reset is under way
    assert not resets and ("reset", pod) in ctl._busy
    cluster.worker_create_claim("c2", "f", "a")  # arrives while the pod is being reset
    sim.run_until(lambda: "c2" in cluster.claim_bound_at, limit=60)
    assert cluster.claims["c2"]["status"]["podName"] != pod  # never handed out before it is clean
    sim.run_until(lambda: False, limit=5)
    labels = cluster.pods[pod].obj["metadata"]["labels"]
    ann = cluster.pods[pod].obj["metadata"]["annotations"]
    assert labels.get(L.CLAIM) is None and ann.get(L.ANN_RESET) is None
    assert patched.count(pod) == 1  # one write per recycle, after the reset (none to mark it pending)
    cluster.worker_create_claim("c3", "f", "a")
    sim.run_until(lambda: "c3" in cluster.claim_bound_at, limit=60)
    assert cluster.claims["c3"]["status"]["podName"] == pod
    assert cluster.claims["c3"]["status"]["servedFrom"] == "recycled"
