"""The reconcile decision, on synthetic views: warm pools, claims, priorities, failures, recycling."""

from __future__ import annotations

from typing import Any

from envfarm.fleet import labels as L
from envfarm.testing.kube_objects import image_pull_failure, running_status
from envfarm.fleet.planner import FleetPlanner, Plan
from envfarm.fleet.spec import parse_fleet_spec
from envfarm.fleet.views import ClaimView, PodView

NOW = 1_000_000.0


def fleet(**spec: Any) -> dict[str, Any]:
    base = {"maxPods": 20, "images": [{"name": "a", "image": "img-a", "warm": 3}, {"name": "b", "image": "img-b", "warm": 0}]}
    base.update(spec)
    return {"metadata": {"name": "f", "namespace": "ns", "uid": "fleet-uid", "generation": 1}, "spec": base}


def materialize(plan: Plan, status: dict[str, Any] | None = None, uid_prefix: str = "u") -> list[PodView]:
    """The pods of a plan's creates as the watch would show them."""
    out = []
    for create in plan.creates:
        pod = {**create.pod, "metadata": {**create.pod["metadata"], "uid": f"{uid_prefix}-{create.pod['metadata']['name']}",
                                          "resourceVersion": "1"}, "status": status or {}}
        out.append(PodView.from_pod(pod, NOW))
    return out


def claim(name: str, image: str = "a", created: float = NOW - 1, **status: Any) -> ClaimView:
    obj = {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": {"fleet": "f", "image": image, "deadlineSeconds": 60},
           "status": status}
    view = ClaimView.from_claim(obj, created)
    return view


def plan_for(planner: FleetPlanner, f: dict[str, Any], pods: list[PodView], claims: list[ClaimView] = (), **kw: Any) -> Plan:
    return planner.plan(f, parse_fleet_spec(f), pods, list(claims), NOW, **kw)


def test_warm_pool_fills_once_and_in_flight_creates_are_not_repeated() -> None:
    planner, f = FleetPlanner(), fleet()
    first = plan_for(planner, f, [])
    assert [c.pod["metadata"]["name"] for c in first.creates] == ["f-a-00000", "f-a-00001", "f-a-00002"]
    in_flight = {c.pod["metadata"]["name"]: c.pod for c in first.creates}
    again = plan_for(planner, f, [], in_flight_creates=in_flight)  # the watch has not delivered them yet
    assert again.creates == []
    seen = plan_for(planner, f, materialize(first, running_status()))
    assert seen.creates == [] and seen.deletes == [] and seen.status["warm"] == 3


def test_claim_takes_a_warm_pod_then_falls_back_to_on_demand() -> None:
    planner, f = FleetPlanner(), fleet()
    pods = materialize(plan_for(planner, f, []), running_status())
    claims = [claim(f"c{i}") for i in range(5)]
    plan = plan_for(planner, f, pods, claims)
    served = plan.served
    assert list(served.values()).count("warm") == 3 and list(served.values()).count("on-demand") == 2
    assert {p.patch["metadata"]["labels"][L.CLAIM] for p in plan.pod_patches} == {"c0", "c1", "c2"}
    assert all(p.patch["metadata"]["resourceVersion"] == "1" for p in plan.pod_patches)  # conditional binding
    on_demand = [c for c in plan.creates if c.claim]
    assert len(on_demand) == 2 and all(c.pod["metadata"]["labels"][L.CLAIM] in {"c3", "c4"} for c in on_demand)
    assert plan.claim_status["c0"]["phase"] == "Bound" and plan.claim_status["c3"]["phase"] == "Pending"
    # the warm pool is refilled after the claims, and nothing is created twice
    names = [c.pod["metadata"]["name"] for c in plan.creates]
    assert len(names) == len(set(names)) == 5


def test_claims_come_before_warm_pods_at_the_fleet_cap() -> None:
    planner, f = FleetPlanner(), fleet(maxPods=2)
    plan = plan_for(planner, f, [], [claim("c0"), claim("c1"), claim("c2")])
    assert [c.claim for c in plan.creates] == ["c0", "c1"]  # no warm pod took the room
    assert plan.claim_status["c2"]["reason"] == "FleetAtMaxPods" and plan.claim_status["c2"]["phase"] == "Pending"


def test_claim_past_its_deadline_fails_with_a_reason() -> None:
    planner, f = FleetPlanner(), fleet(maxPods=0)
    plan = plan_for(planner, f, [], [claim("late", created=NOW - 120)])
    assert plan.claim_status["late"]["phase"] == "Failed" and plan.claim_status["late"]["reason"] == "DeadlineExceeded"


def test_unknown_image_claim_fails() -> None:
    plan = plan_for(FleetPlanner(), fleet(), [], [claim("x", image="nope")])
    assert plan.claim_status["x"]["reason"] == "UnknownImage"


def test_bad_image_is_quarantined_and_not_retried_forever() -> None:
    planner, f = FleetPlanner(), fleet(images=[{"name": "bad", "image": "img-bad", "warm": 2}],
                                       failurePolicy={"quarantineAfter": 3})
    creates_total, pods = 0, []
    for round_ in range(6):
        plan = plan_for(planner, f, pods)
        creates_total += len(plan.creates)
        pods = materialize(plan, image_pull_failure("manifest unknown"), uid_prefix=f"r{round_}")
    assert "bad" in planner.accounting.quarantined
    assert creates_total <= 4  # 2 + 2 replacements, then quarantined: no more creates
    assert plan_for(planner, f, [], [claim("c", image="bad")]).claim_status["c"]["reason"] == "ImageQuarantined"
    assert planner.accounting.status_fields()["failuresByClass"]["ImagePull"] >= 3


def test_transient_failure_is_replaced_and_counted_once() -> None:
    planner, f = FleetPlanner(), fleet()
    pods = materialize(plan_for(planner, f, []), running_status())
    evicted = PodView.from_pod({"metadata": {"name": pods[0].name, "uid": pods[0].uid, "labels": {L.FLEET: "f", L.IMAGE: "a"}},
                                "status": {"phase": "Failed", "reason": "Evicted"}}, NOW)
    plan = plan_for(planner, f, [evicted, *pods[1:]])
    assert [d.name for d in plan.deletes] == [pods[0].name] and len(plan.creates) == 1
    plan_for(planner, f, [evicted, *pods[1:]], in_flight_deletes={pods[0].name})
    assert planner.accounting.failures == {"Evicted": 1} and "a" not in planner.accounting.quarantined


def test_claim_fails_after_its_retry_budget() -> None:
    planner, f = FleetPlanner(), fleet(failurePolicy={"retryBudget": 1})
    c = claim("c", attempts=1)
    crashed = PodView.from_pod({"metadata": {"name": "f-a-00009", "uid": "x", "labels": {L.FLEET: "f", L.IMAGE: "a", L.CLAIM: "c"}},
                                "status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 2}}}]}}, NOW)
    plan = plan_for(planner, f, [crashed], [c])
    assert plan.claim_status["c"]["reason"] == "RetryBudgetExhausted"


def test_release_recycles_a_ready_pod_or_deletes_it() -> None:
    planner, f = FleetPlanner(), fleet()
    pod = {"metadata": {"name": "f-a-00000", "uid": "p0", "resourceVersion": "7",
                        "labels": {L.FLEET: "f", L.IMAGE: "a", L.CLAIM: "c"}, "annotations": {L.ANN_USES: "1"}},
           "status": running_status()}
    view = PodView.from_pod(pod, NOW)
    released = ClaimView.from_claim({"metadata": {"name": "c", "uid": "uc"},
                                     "spec": {"fleet": "f", "image": "a", "release": "Recycle"},
                                     "status": {"phase": "Bound"}}, NOW)
    recycle = plan_for(planner, f, [view], [released])
    assert recycle.resets == ["f-a-00000"] and recycle.deletes == []
    assert recycle.pod_patches == []  # the pod keeps its label until the reset is done: one patch after it
    assert recycle.reset_patches["f-a-00000"].patch["metadata"]["labels"][L.CLAIM] is None
    assert recycle.claim_status["c"]["phase"] == "Released"
    delete = plan_for(FleetPlanner(), f, [view], [ClaimView.from_claim(
        {"metadata": {"name": "c", "uid": "uc"}, "spec": {"fleet": "f", "image": "a", "release": "Delete"},
         "status": {"phase": "Bound"}}, NOW)])
    assert [d.name for d in delete.deletes] == ["f-a-00000"] and delete.resets == []
    gone = plan_for(FleetPlanner(), f, [view], [])  # the claim object was deleted
    assert [d.reason for d in gone.deletes] == ["claim gone or expired"]


def test_recycled_pod_is_served_first_and_marked_recycled() -> None:
    planner, f = FleetPlanner(), fleet()
    fresh = materialize(plan_for(planner, f, []), running_status())
    used = PodView.from_pod({"metadata": {"name": "f-a-00005", "uid": "r", "resourceVersion": "3",
                                          "labels": {L.FLEET: "f", L.IMAGE: "a"}, "annotations": {L.ANN_USES: "2"}},
                             "status": running_status()}, NOW)
    plan = plan_for(planner, f, [*fresh, used], [claim("c")])
    assert plan.served == {"c": "recycled"} and plan.pod_patches[0].name == "f-a-00005"


def test_planning_twice_over_the_same_world_repeats_the_pod_decisions_and_no_claim_write() -> None:
    """The docstring's idempotence, on one planner: the second plan sees the same world (nothing watched
    in between, nothing recorded in flight) and the memory the first plan left."""
    f = fleet(maxPods=6)  # 1 ready + 3 starting warm pods and an evicted one: 4 claims bound, 2 on demand, 1 unknown
    planner = FleetPlanner()
    warm = materialize(plan_for(FleetPlanner(), f, []), {"phase": "Pending"})
    ready = PodView.from_pod({"metadata": {"name": "f-a-00007", "uid": "r7", "resourceVersion": "4",
                                           "labels": {L.FLEET: "f", L.IMAGE: "a"}}, "status": running_status()}, NOW)
    evicted = PodView.from_pod({"metadata": {"name": "f-a-00008", "uid": "e8", "labels": {L.FLEET: "f", L.IMAGE: "a"}},
                                "status": {"phase": "Failed", "reason": "Evicted"}}, NOW)
    world = [*warm, ready, evicted]
    claims = [claim(f"c{i}") for i in range(6)] + [claim("x", image="nope")]

    def decisions(plan: Plan) -> tuple:
        return ([(c.pod["metadata"]["name"], c.claim) for c in plan.creates], [(d.name, d.reason) for d in plan.deletes],
                [(p.name, p.patch) for p in plan.pod_patches], plan.served, plan.resets)

    first = plan_for(planner, f, world, claims)
    second = plan_for(planner, f, world, claims)
    assert first.creates and first.pod_patches and first.deletes and first.claim_status  # the check has teeth
    assert decisions(second) == decisions(first)
    assert decisions(first) == decisions(plan_for(FleetPlanner(), f, world, claims))  # memory changes no pod decision
    assert second.claim_status == {}  # every status the first plan sent is remembered, none is sent twice
    assert [v.name for v, _ in first.failures] == ["f-a-00008"] and second.failures == []  # counted once
    assert planner.accounting.failures == {"Evicted": 1}
    planner.forget_claim_status("uid-c0")  # that write failed: the next plan sends it again, and only it
    assert list(plan_for(planner, f, world, claims).claim_status) == ["c0"]


def test_warm_pool_above_target_is_trimmed_and_idle_pods_are_reaped() -> None:
    planner = FleetPlanner()
    f = fleet(images=[{"name": "a", "image": "img-a", "warm": 1}], idleTimeoutSeconds=60)
    pods = [PodView.from_pod({"metadata": {"name": f"f-a-0000{i}", "uid": f"u{i}", "labels": {L.FLEET: "f", L.IMAGE: "a"},
                                           "annotations": {L.ANN_IDLE_SINCE: str(NOW - (100 if i == 0 else 1))}},
                              "status": running_status()}, NOW) for i in range(3)]
    plan = plan_for(planner, f, pods)
    reasons = sorted(d.reason for d in plan.deletes)
    assert reasons == ["idle timeout", "warm pool above target"]


def test_a_claim_is_never_bound_to_a_pod_whose_create_is_still_in_flight() -> None:
    planner, f = FleetPlanner(), fleet()
    first = plan_for(planner, f, [])
    in_flight = {c.pod["metadata"]["name"]: c.pod for c in first.creates}
    plan = plan_for(planner, f, [], [claim("c0")], in_flight_creates=in_flight)
    assert plan.pod_patches == []  # binding it would race the create (404) and could livelock
    assert [c.claim for c in plan.creates] == [None]  # refill for the pod the claim will take; no on-demand
    seen = materialize(first, running_status())
    assert plan_for(planner, f, seen, [claim("c0")]).served == {"c0": "warm"}
