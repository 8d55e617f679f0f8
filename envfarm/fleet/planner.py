"""The reconcile decision for one fleet: what the controller has seen, plus an explicit memory, in; a plan out.

Given the fleet, its pods (from the watch cache, plus the expectations of creates, deletes and
bindings still in flight), its claims and the time, `FleetPlanner.plan` says what to create, delete,
patch and write. It performs no I/O, so the real controller (threads over the official client) and
the discrete-event simulator call exactly the same code.

It is not a pure function: what it must remember between plans is one named object, `PlannerMemory`
(lifetime accounting, failures already counted, claim statuses already sent, the ready pods the last
plan left spare for `fast_bind`, and a pod-template cache), created with the planner and changed only
by `plan`, `fast_bind` and the `forget_*` methods. What that memory buys is idempotence: planning again
over the same world (nothing new watched, nothing recorded in flight) makes the same pod decisions
(the same creates under the same deterministic names, so a repeat is an AlreadyExists; the same
bindings, conditional on the resourceVersion seen; the same deletes) and sends no claim status the
previous plan already sent. Events (a failure counted, an image quarantined) are reported once.

Order of service, highest first: claims already bound, pending claims (warm ready pod, then warm
pending pod, then an on-demand create that is never refused while the fleet has room), then the
warm pools. A claim is never answered "no stock".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from envfarm.fleet import labels as L
from envfarm.fleet.accounting import FleetAccounting
from envfarm.fleet.expectations import Binding
from envfarm.fleet.failures import Failure, FailureClass
from envfarm.fleet.podspec import build_pod, pod_metadata
from envfarm.fleet.spec import FleetSpec
from envfarm.fleet.views import ClaimView, PodView

CLAIM_RETENTION_SECONDS = 600.0  # released/failed claims are reaped this long after they finished


@dataclass
class Create:
    pod: dict[str, Any]
    claim: str | None  # set for an on-demand pod; the controller queues those before warm-pool creates


@dataclass
class Delete:
    name: str
    reason: str


@dataclass
class PodPatch:
    name: str
    patch: dict[str, Any]
    binding: Binding


@dataclass
class Plan:
    creates: list[Create] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    pod_patches: list[PodPatch] = field(default_factory=list)
    claim_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    claim_deletes: list[str] = field(default_factory=list)
    resets: list[str] = field(default_factory=list)
    reset_patches: dict[str, PodPatch] = field(default_factory=dict)  # pod -> release patch sent after its reset
    failures: list[tuple[PodView, Failure]] = field(default_factory=list)
    quarantined_now: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    served: dict[str, str] = field(default_factory=dict)  # claim -> warm | recycled | on-demand


@dataclass
class PlannerMemory:
    """Everything a fleet's planner keeps between plans; the rest of a plan is recomputed from the world.

    - `accounting`: lifetime ready/failed counts and quarantines; also written to the fleet's status,
      so a restarted controller resumes from `FleetAccounting.from_status`.
    - `counted_failures`: uids of failed pods already counted: a failed pod is seen by every plan
      until its delete is watched, and must be counted (and reported) once.
    - `claim_status_sent`: per claim (uid, else name), the last status sent whose write has not failed:
      a plan sends no second write of a status while the watch has not shown the first.
    - `spare_ready`: per image, the ready warm pods the last full plan left unclaimed: where
      `fast_bind` serves a new claim before the next full plan; `spares_sorted` names the images
      whose list is already in serving order (sorted lazily, by the first fast bind that needs it).
    - `templates`: pod specs built once per (fleet uid, generation, image): a cache, never a decision.
    """

    accounting: FleetAccounting = field(default_factory=FleetAccounting)
    counted_failures: set[str] = field(default_factory=set)
    claim_status_sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    spare_ready: dict[str, list[PodView]] = field(default_factory=dict)
    spares_sorted: set[str] = field(default_factory=set)
    templates: dict[tuple[Any, Any, str], dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Pass:
    """Scratch state of one plan (never kept between plans)."""

    create_budget: int
    sorted_pools: set[int] = field(default_factory=set)  # ids of pools already ordered for claims


def _free_indices(used: set[int]) -> Iterator[int]:
    index = 0
    while True:
        if index not in used:
            yield index
        index += 1


def binding_patch(view: PodView, claim: str | None, reset_pending: bool, uses: int, now: float) -> PodPatch:
    """Bind or release a pod with one merge patch, conditional on the resourceVersion we saw (a
    concurrent change makes it fail with 409 instead of double-binding)."""
    annotations: dict[str, Any] = {L.ANN_USES: str(uses), L.ANN_RESET: "pending" if reset_pending else None}
    if claim is None:
        annotations[L.ANN_IDLE_SINCE] = f"{now:.3f}"
    else:
        annotations[L.ANN_BOUND_AT] = f"{now:.3f}"
    patch = {"metadata": {"resourceVersion": view.resource_version, "labels": {L.CLAIM: claim},
                          "annotations": annotations}}
    return PodPatch(view.name, patch, (claim, reset_pending, uses, now if claim is None else view.idle_since))


class FleetPlanner:
    """One fleet's planner: `memory` is all it keeps between plans (see PlannerMemory)."""

    def __init__(self, memory: PlannerMemory | None = None) -> None:
        self.memory = memory if memory is not None else PlannerMemory()

    @property
    def accounting(self) -> FleetAccounting:
        return self.memory.accounting

    def forget_pod(self, uid: str) -> None:
        """The pod is gone from the cluster: drop what was kept about it (bounded memory over a long run)."""
        self.memory.accounting.forget_pod(uid)
        self.memory.counted_failures.discard(uid)

    def plan(
        self,
        fleet: dict[str, Any],
        spec: FleetSpec,
        pods: Iterable[PodView],
        claims: Iterable[ClaimView],
        now: float,
        in_flight_creates: dict[str, dict[str, Any]] | None = None,
        in_flight_deletes: set[str] | None = None,
        in_flight_bindings: dict[str, Binding] | None = None,
        max_creates: int | None = None,
    ) -> Plan:
        plan = Plan()
        memory = self.memory
        acc = memory.accounting
        in_flight_deletes = in_flight_deletes or set()
        in_flight_bindings = in_flight_bindings or {}
        views: dict[str, PodView] = {}
        for view in pods:
            binding = in_flight_bindings.get(view.name) if in_flight_bindings else None
            views[view.name] = view.with_binding(*binding) if binding else view
        unobserved: set[str] = set()  # created by us, not yet seen: never bind a claim to these
        for name, pod in (in_flight_creates or {}).items():
            if name not in views:
                views[name] = pod if isinstance(pod, PodView) else PodView.from_pod(pod, now)
                unobserved.add(name)
        used_indices: dict[str, set[int]] = {}

        claims_by_name = {claim.name: claim for claim in claims}
        live = 0
        bound: dict[str, PodView] = {}
        claim_failures: dict[str, int] = {}
        warm_ready: dict[str, list[PodView]] = {}
        warm_pending: dict[str, list[PodView]] = {}
        resetting: dict[str, int] = {}
        arriving: dict[str, int] = {}  # warm pods whose create is in flight
        ready = pending = claimed = warm = 0
        counted_ready = acc.counted_ready
        startup_horizon = now - spec.startup_timeout_seconds
        idle_horizon = now - spec.idle_timeout_seconds if spec.idle_timeout_seconds else None

        # The hot loop (one pass over every pod of the fleet): locals and early exits on purpose.
        for view in views.values():
            if view.index >= 0:
                indices = used_indices.get(view.image)
                if indices is None:
                    indices = used_indices[view.image] = set()
                indices.add(view.index)
            if view.deleting or view.name in in_flight_deletes:
                continue
            failure = view.failure
            if failure is None and not view.ready and view.phase == "Pending" and view.created < startup_horizon:
                failure = Failure(FailureClass.UNSCHEDULABLE if view.unschedulable else FailureClass.STARTUP_TIMEOUT,
                                  False, f"not ready after {spec.startup_timeout_seconds}s")
            if failure is not None:
                if view.uid not in memory.counted_failures:
                    memory.counted_failures.add(view.uid)
                    plan.failures.append((view, failure))
                    if acc.record_failure(view.image, failure, spec.failure_policy.quarantine_after):
                        plan.quarantined_now.append(view.image)
                plan.deletes.append(Delete(view.name, f"failed: {failure.cls.value}"))
                if view.claim:
                    claim_failures[view.claim] = claim_failures.get(view.claim, 0) + 1
                continue
            live += 1
            if view.ready:
                ready += 1
                if view.uid and view.uid not in counted_ready:
                    acc.record_ready(view.uid, view.image)
            else:
                pending += 1
            if view.claim:
                claim = claims_by_name.get(view.claim)
                if claim is None or claim.deleting or claim.release or claim.phase in ("Failed", "Released") \
                        or self._bound_too_long(claim, spec, now):
                    if self._release(plan, spec, view, claim, acc, now):  # being reset: warm supply soon
                        resetting[view.image] = resetting.get(view.image, 0) + 1
                    continue
                bound[view.claim] = view
                claimed += 1
            elif view.reset_pending:
                resetting[view.image] = resetting.get(view.image, 0) + 1
            elif idle_horizon is not None and view.ready and view.idle_since < idle_horizon:
                plan.deletes.append(Delete(view.name, "idle timeout"))
                live -= 1
            elif view.name in unobserved:
                warm += 1
                arriving[view.image] = arriving.get(view.image, 0) + 1
            else:
                warm += 1
                pools = warm_ready if view.ready else warm_pending
                pool = pools.get(view.image)
                if pool is None:
                    pool = pools[view.image] = []
                pool.append(view)
        counts = {"ready": ready, "pending": pending, "claimed": claimed, "warm": warm}

        room = spec.max_pods - live
        scratch = _Pass(max_creates if max_creates is not None else 1 << 60)  # pools are ordered lazily
        free = {entry.name: _free_indices(used_indices.get(entry.name, set())) for entry in spec.images}

        for claim in sorted(claims_by_name.values(), key=lambda c: (c.created, c.name)):
            room = self._serve_claim(plan, scratch, fleet, spec, claim, bound, warm_ready, warm_pending, arriving,
                                     free, claim_failures.get(claim.name, 0), room, now)

        for entry in spec.images:
            if entry.name in acc.quarantined:
                for view in warm_ready.get(entry.name, []) + warm_pending.get(entry.name, []):
                    plan.deletes.append(Delete(view.name, "image quarantined"))
                continue
            ready, pending = warm_ready.get(entry.name, []), warm_pending.get(entry.name, [])
            supply = len(ready) + len(pending) + resetting.get(entry.name, 0) + arriving.get(entry.name, 0)
            for _ in range(max(0, entry.warm - supply)):
                if room <= 0 or scratch.create_budget <= 0:
                    break
                scratch.create_budget -= 1
                pod = self._build(fleet, spec, entry, next(free[entry.name]), None, now)
                plan.creates.append(Create(pod, None))
                room -= 1
            excess = supply - entry.warm
            if excess <= 0:
                continue
            # trim the least proven first: pods still starting, then fresh ready ones (recycled pods stay)
            for view in (pending[::-1] + sorted(ready, key=lambda v: (v.uses, -v.idle_since)))[:excess]:
                plan.deletes.append(Delete(view.name, "warm pool above target"))

        trimmed = {d.name for d in plan.deletes}
        memory.spares_sorted = set()
        memory.spare_ready = {image: [v for v in pool if v.name not in trimmed]
                              for image, pool in warm_ready.items()}  # sorted by the first fast_bind that uses it
        counts["failedTotal"] = acc.failed_total
        plan.status = {**counts, **acc.status_fields(),
                       "observedGeneration": fleet.get("metadata", {}).get("generation", 0)}
        return plan

    @staticmethod
    def _bound_too_long(claim: ClaimView, spec: FleetSpec, now: float) -> bool:
        bound_at = claim.status.get("boundAtEpoch")
        return bool(spec.ttl_seconds) and claim.phase == "Bound" and bound_at is not None and now - float(bound_at) > spec.ttl_seconds

    def _release(self, plan: Plan, spec: FleetSpec, view: PodView, claim: ClaimView | None,
                 acc: FleetAccounting, now: float) -> bool:
        """Recycle (reset, then one patch that unbinds the pod and marks it idle) or delete the pod of a
        finished claim. The pod keeps its old claim label while the reset runs, so it is never bound to a
        new claim before it is clean; one pod write per recycle, not two (mark pending, then idle)."""
        recycle = (claim is not None and claim.release == "Recycle" and spec.recycle.enabled and view.ready
                   and view.uses < spec.recycle.max_uses and view.image not in acc.quarantined)
        if recycle:
            plan.reset_patches[view.name] = binding_patch(view, None, False, view.uses, now)
            plan.resets.append(view.name)
        else:
            plan.deletes.append(Delete(view.name, "claim released" if claim and claim.release else "claim gone or expired"))
        if claim is not None and not claim.deleting and claim.phase not in ("Failed", "Released"):
            reason = "Released" if claim.release else "TTLExpired"
            self._set_claim(plan, claim, {"phase": "Released", "reason": reason, "podName": view.name})
        return recycle

    def _serve_claim(self, plan: Plan, scratch: _Pass, fleet: dict[str, Any], spec: FleetSpec, claim: ClaimView,
                     bound: dict[str, PodView], warm_ready: dict[str, list[PodView]],
                     warm_pending: dict[str, list[PodView]], arriving: dict[str, int],
                     free: dict[str, Iterator[int]], new_failures: int, room: int, now: float) -> int:
        if claim.deleting:
            return room
        if claim.phase in ("Failed", "Released"):
            finished = float(claim.status.get("finishedAtEpoch", claim.created))
            if claim.release or now - finished > CLAIM_RETENTION_SECONDS:
                plan.claim_deletes.append(claim.name)
            return room
        if claim.release and claim.name not in bound:
            self._set_claim(plan, claim, {"phase": "Released", "reason": "Released"}, now)
            return room
        attempts = claim.attempts + new_failures
        entry = spec.image(claim.image)
        if entry is None:
            return self._fail(plan, claim, "UnknownImage", f"fleet has no image named {claim.image!r}", now, room)
        if claim.image in self.accounting.quarantined:
            return self._fail(plan, claim, "ImageQuarantined", self.accounting.quarantined[claim.image], now, room)
        if attempts > spec.failure_policy.retry_budget:
            return self._fail(plan, claim, "RetryBudgetExhausted",
                              f"{attempts} sandbox pods failed for this claim", now, room)
        view = bound.get(claim.name)
        if view is not None:
            if claim.pod_name == view.name and claim.attempts == attempts \
                    and claim.phase == ("Bound" if view.ready else "Pending"):
                return room  # the common case at scale: already recorded, nothing to build or compare
            sent = self.memory.claim_status_sent.get(claim.uid or claim.name) or {}
            if sent.get("podName") == view.name and sent.get("attempts", 0) == attempts \
                    and sent.get("phase") == ("Bound" if view.ready else "Pending"):
                return room  # our write saying exactly this is in flight or not yet watched: no second write
            status = {"phase": "Bound" if view.ready else "Pending", "podName": view.name, "attempts": attempts}
            if view.ready:
                status["podIP"] = view.pod_ip
                # stable across passes while our last write is not yet watched: no rewrite per pass
                status["boundAtEpoch"] = claim.status.get("boundAtEpoch") or sent.get("boundAtEpoch") or f"{now:.3f}"
            self._set_claim(plan, claim, status)
            return room
        if now - claim.created > claim.deadline_seconds:
            return self._fail(plan, claim, "DeadlineExceeded",
                              f"no sandbox ready within {claim.deadline_seconds}s", now, room)
        for pool, source in ((warm_ready.get(claim.image), "warm"), (warm_pending.get(claim.image), "warm")):
            if pool:
                if id(pool) not in scratch.sorted_pools:  # recycled pods first (proven), then longest idle
                    pool.sort(key=lambda v: (v.uses, -v.idle_since))
                    scratch.sorted_pools.add(id(pool))
                view = pool.pop()
                served = "recycled" if view.uses > 0 else source
                plan.pod_patches.append(binding_patch(view, claim.name, False, view.uses + 1, now))
                plan.served[claim.name] = served
                status = {"phase": "Bound" if view.ready else "Pending", "podName": view.name,
                          "servedFrom": served, "attempts": attempts}
                if view.ready:
                    status.update(podIP=view.pod_ip, boundAtEpoch=f"{now:.3f}")
                self._set_claim(plan, claim, status)
                return room
        if arriving.get(claim.image, 0) > 0:  # a warm pod is being created: take it once it is seen
            arriving[claim.image] -= 1
            return room
        if room <= 0:
            self._set_claim(plan, claim, {"phase": "Pending", "reason": "FleetAtMaxPods", "attempts": attempts})
            return room
        if scratch.create_budget <= 0:
            return room  # the write queue is full; the next plan creates it
        scratch.create_budget -= 1
        pod = self._build(fleet, spec, entry, next(free[entry.name]), claim.name, now)
        plan.creates.append(Create(pod, claim.name))
        plan.served[claim.name] = "on-demand"
        self._set_claim(plan, claim, {"phase": "Pending", "podName": pod["metadata"]["name"],
                                      "servedFrom": "on-demand", "attempts": attempts})
        return room - 1

    def fast_bind(self, spec: FleetSpec, claim: ClaimView, take: Any, now: float) -> Plan | None:
        """Serve one new claim between full plans, from the ready warm pods the last plan left spare.

        `take(view)` returns the pod's current view if it is still what the last plan saw (the
        controller checks it against the watch cache and the expectations), else None. Only claims no plan has acted on yet: the
        next full plan sees the binding through the expectations and the status we sent, exactly
        as if it had made the decision itself."""
        if claim.deleting or claim.release or claim.pod_name or claim.phase != "Pending" or claim.attempts:
            return None
        memory = self.memory
        if (claim.uid or claim.name) in memory.claim_status_sent or now - claim.created > claim.deadline_seconds:
            return None
        if spec.image(claim.image) is None or claim.image in memory.accounting.quarantined:
            return None
        pool = memory.spare_ready.get(claim.image)
        if not pool:
            return None
        if claim.image not in memory.spares_sorted:  # the order _serve_claim uses: pop() gives the same pod
            pool.sort(key=lambda v: (v.uses, -v.idle_since))
            memory.spares_sorted.add(claim.image)
        view = None
        while pool and view is None:
            view = take(pool.pop())
        if view is None:
            return None
        plan = Plan()
        served = "recycled" if view.uses > 0 else "warm"
        plan.pod_patches.append(binding_patch(view, claim.name, False, view.uses + 1, now))
        plan.served[claim.name] = served
        self._set_claim(plan, claim, {"phase": "Bound", "podName": view.name, "servedFrom": served,
                                      "attempts": 0, "podIP": view.pod_ip, "boundAtEpoch": f"{now:.3f}"})
        return plan

    def _build(self, fleet: dict[str, Any], spec: FleetSpec, entry: Any, index: int, claim: str | None,
               now: float) -> dict[str, Any]:
        """build_pod, with the pod spec built once per (fleet generation, image) and shared: creating
        thousands of pods per second must not rebuild identical specs (nothing mutates them)."""
        meta = fleet["metadata"]
        key = (meta.get("uid"), meta.get("generation"), entry.name)
        templates = self.memory.templates
        template = templates.get(key)
        if template is None:
            template = templates[key] = build_pod(fleet, spec, entry, 0, now=now)["spec"]
        pod = pod_metadata(fleet, entry, index, claim, now)
        pod["spec"] = template
        return pod

    def forget_claim_status(self, claim_uid_or_name: str) -> None:
        """A status write failed: let the next plan send it again."""
        self.memory.claim_status_sent.pop(claim_uid_or_name, None)

    def _fail(self, plan: Plan, claim: ClaimView, reason: str, message: str, now: float, room: int) -> int:
        self._set_claim(plan, claim, {"phase": "Failed", "reason": reason, "message": message[:300]}, now)
        return room

    def _set_claim(self, plan: Plan, claim: ClaimView, status: dict[str, Any], finished_at: float | None = None) -> None:
        """Write a claim's status only when it changes (frugal with the API server)."""
        merged = {**claim.status, **status}
        if finished_at is not None:
            merged["finishedAtEpoch"] = f"{finished_at:.3f}"
        comparable = {k: v for k, v in merged.items() if k != "finishedAtEpoch"}
        sent = self.memory.claim_status_sent
        previous = sent.get(claim.uid or claim.name)
        current = {k: v for k, v in claim.status.items() if k != "finishedAtEpoch"}
        if comparable == current or comparable == previous:
            return
        sent[claim.uid or claim.name] = comparable
        plan.claim_status[claim.name] = merged
