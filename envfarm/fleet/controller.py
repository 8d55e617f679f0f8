"""The fleet controller: watches -> per-fleet work queue -> planner -> rate-limited executor.

Handler-per-event, kopf-style: `_on_pod`, `_on_fleet`, `_on_claim` only record what changed and mark
the fleet dirty; one reconcile loop coalesces bursts of events into one plan per fleet (at 10k pods a
plan per event would be quadratic). Everything the controller decides comes from `FleetPlanner`; this
module only wires it to the API, keeps expectations, and acts only while it holds the lease.

The caches it reads and the executor it writes through are constructor parameters (`caches`,
`executor`; the defaults are a WatchCache per kind and the threaded `Executor`), so the simulator in
`envfarm.testing.fleet_sim` drives this same class in simulated time without touching its internals.

Run it: `envfarm fleet controller --namespace envfarm-sandboxes --leader-elect` (or
`python -m envfarm.fleet.controller` with the same options).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from envfarm.errors import EnvfarmError
from envfarm.fleet import labels as L
from envfarm.fleet.accounting import FleetAccounting
from envfarm.fleet.api import ApiCallError, KubeApi
from envfarm.fleet.cache import Cache, CacheFactory, CacheSpec, watch_caches
from envfarm.fleet.executor import PRIO_CLAIM, PRIO_DELETE, PRIO_STATUS, PRIO_WARM, Executor, ExecutorFactory
from envfarm.fleet.expectations import Expectations
from envfarm.fleet.leader import LeaderElector
from envfarm.fleet.metrics import FleetMetrics
from envfarm.fleet.planner import FleetPlanner, Plan, PlannerMemory
from envfarm.fleet.prepull import build_prepull_daemonset
from envfarm.fleet.ratelimit import TokenBucket
from envfarm.fleet.spec import FleetSpec, parse_fleet_spec
from envfarm.fleet.views import ClaimView, PodView

log = logging.getLogger("envfarm.fleet")

# reset(namespace, pod name, shell command) -> True when the pod's state was restored
Resetter = Callable[[str, str, str], bool]


@dataclass
class ControllerConfig:
    namespace: str = "envfarm-sandboxes"
    qps: float = 50.0
    burst: int = 100
    max_in_flight: int = 64
    leader_elect: bool = False
    lease_namespace: str = "envfarm-system"
    lease_name: str = "envfarm-fleet-controller"
    identity: str = field(default_factory=lambda: os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}")
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    resync_seconds: float = 5.0
    orphan_sweep_seconds: float = 60.0
    status_interval: float = 1.0
    coalesce_seconds: float = 0.05
    watch_timeout: int = 300


class FleetController:
    def __init__(self, api: KubeApi, config: ControllerConfig, resetter: Resetter | None = None,
                 clock: Callable[[], float] = time.time, *, caches: CacheFactory | None = None,
                 executor: ExecutorFactory | None = None) -> None:
        """`caches` builds the pod, fleet and claim caches from their CacheSpec (default: list+watch
        against `api`); `executor(bucket, max_in_flight, on_depth)` builds the write queue (default:
        `Executor`, a thread pool). Both exist so another driver (the simulator) can run this class."""
        self.api, self.config, self.resetter, self.clock = api, config, resetter, clock
        self.metrics = api.metrics
        self.expectations = Expectations(clock=clock)
        self.bucket = TokenBucket(config.qps, config.burst, clock=clock)
        self.executor = (executor or Executor)(self.bucket, config.max_in_flight, self.metrics.in_flight.set)
        self.planners: dict[str, tuple[str, FleetPlanner]] = {}  # fleet -> (uid, planner)
        make_cache = caches or watch_caches(api, config.namespace, config.watch_timeout)
        self.pods: Cache[PodView] = make_cache(CacheSpec("pods", PodView.from_pod, lambda v: v.fleet, self._on_pod,
                                                         selector=L.SELECTOR))
        self.fleets: Cache[dict[str, Any]] = make_cache(CacheSpec(L.FLEET_PLURAL, lambda obj, now: obj,
                                                                  lambda obj: "all", self._on_fleet))
        self.claims: Cache[ClaimView] = make_cache(CacheSpec(L.CLAIM_PLURAL, ClaimView.from_claim, lambda c: c.fleet,
                                                             self._on_claim))
        self._dirty: set[str] = set()
        self._wake = threading.Condition()
        self._acting = threading.Event()
        self._stop = threading.Event()
        self._busy: set[tuple[str, str]] = set()  # (op kind, object) in flight that plans do not track
        self._busy_lock = threading.Lock()
        self._status_sent: dict[str, tuple[float, dict[str, Any]]] = {}
        self._prepull_applied: dict[str, str] = {}
        self._specs: dict[str, FleetSpec] = {}  # each fleet's spec as of its last full plan
        self._plan_lock = threading.RLock()  # full plans (reconcile thread) vs fast binds (claim watch)
        self._elector: LeaderElector | None = None
        self._threads: list[threading.Thread] = []
        self.reconciles = 0

    # ------------------------------------------------------------------------------ lifecycle
    def start(self, sync_timeout: float = 30.0, loops: bool = True) -> "FleetController":
        """Sync the caches, start the executor, take (or contend for) the lease, start the loops.
        loops=False starts no reconcile or resync thread: the caller drives `take_dirty`,
        `reconcile_dirty` and `enqueue_all` itself (the simulator does, in simulated time)."""
        for cache in (self.fleets, self.claims, self.pods):
            cache.start()
        for cache in (self.fleets, self.claims, self.pods):
            if not cache.wait_synced(sync_timeout):
                raise EnvfarmError(f"the {cache.kind} watch did not sync within {sync_timeout:.0f}s",
                                   "check that the API server is reachable and the CRDs are installed (`kubectl apply -k k8s/`)")
        self.executor.start()
        if self.config.leader_elect:
            self._elector = LeaderElector(self.api, self.config.lease_namespace, self.config.lease_name,
                                          self.config.identity, self._became_leader, self._lost_leadership,
                                          self.config.lease_duration, self.config.renew_deadline,
                                          self.config.retry_period).start()
        else:
            self._became_leader()
        if not loops:
            return self
        for target, name in ((self._reconcile_loop, "reconcile"), (self._resync_loop, "resync")):
            thread = threading.Thread(target=target, name=f"fleet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, graceful: bool = True) -> None:
        """graceful=False is a crash: nothing is flushed, the lease is not released."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._elector is not None:
            self._elector.stop(release=graceful)
        if graceful:
            self.executor.wait_idle(10.0)
        self._acting.clear()
        self.executor.stop()
        for cache in (self.fleets, self.claims, self.pods):
            cache.stop()

    @property
    def is_leader(self) -> bool:
        return self._acting.is_set()

    def _became_leader(self) -> None:
        self.metrics.leader.set(1)
        self._acting.set()
        self.enqueue_all()

    def _lost_leadership(self) -> None:
        self.metrics.leader.set(0)
        self._acting.clear()
        self.executor.drain()

    # ------------------------------------------------------------------------- event handlers
    def _on_pod(self, kind: str, old: PodView | None, new: PodView | None) -> None:
        view = new or old
        if view is None:
            return
        rv = view.resource_version
        self.expectations.observed(view.fleet, view.name, deleted=new is None,
                                   claim=new.claim if new else None, reset_pending=new.reset_pending if new else False,
                                   resource_version=int(rv) if rv.isdigit() else 0)
        if new is None and old is not None and old.fleet in self.planners:
            self.planners[old.fleet][1].forget_pod(old.uid)  # bounded memory over a long run
        if new is not None and new.ready and (old is None or not old.ready) and kind != "ADDED":
            self.metrics.startup.observe(max(0.0, self.clock() - new.created))
        self.enqueue(view.fleet)

    def _on_fleet(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        self.enqueue(((new or old) or {}).get("metadata", {}).get("name", ""))

    def _on_claim(self, kind: str, old: ClaimView | None, new: ClaimView | None) -> None:
        if new is not None and old is None and self._acting.is_set():
            self.fast_bind(new)
        self.enqueue((new or old).fleet if (new or old) else "")

    def fast_bind(self, claim: ClaimView) -> bool:
        """Bind a new claim the moment it is watched, to a ready warm pod the last full plan left
        spare, instead of waiting for the next full plan (O(pods): tens of ms at scale, then the
        coalescing pause). Claims this cannot serve (no spare ready pod, a claim some plan already
        acted on, a deleted fleet) wait for the full plan, which sees a fast binding through the
        expectations and the claim status sent, as if it had made the decision itself."""
        with self._plan_lock:
            current = self.planners.get(claim.fleet)
            spec = self._specs.get(claim.fleet)
            fleet = self.fleets.get(claim.fleet)
            if current is None or spec is None or fleet is None or fleet["metadata"].get("deletionTimestamp") \
                    or current[0] != fleet["metadata"].get("uid", ""):
                return False
            planner = current[1]
            bindings = self.expectations.bindings(claim.fleet)
            _, deleting = self.expectations.pending(claim.fleet)

            def take(seen: PodView) -> PodView | None:
                view = self.pods.get(seen.name)
                if view is None or view.resource_version != seen.resource_version or not view.ready \
                        or view.claim or view.reset_pending or view.deleting or view.failure is not None \
                        or view.name in bindings or view.name in deleting:
                    return None
                return view

            plan = planner.fast_bind(spec, claim, take, self.clock())
            if plan is None:
                return False
            self._apply_claims(claim.fleet, spec, planner, plan)
            return True

    def enqueue(self, fleet: str) -> None:
        if not fleet:
            return
        with self._wake:
            self._dirty.add(fleet)
            self._wake.notify()

    def enqueue_all(self) -> None:
        for fleet in self.fleets.items():
            self.enqueue(fleet["metadata"]["name"])

    # ---------------------------------------------------------------------------------- loops
    def take_dirty(self, wait: float = 0.0) -> set[str]:
        """The fleets marked dirty since the last call, waiting up to `wait` seconds for one."""
        with self._wake:
            if wait > 0:
                self._wake.wait_for(lambda: bool(self._dirty) or self._stop.is_set(), timeout=wait)
            dirty, self._dirty = self._dirty, set()
        return dirty

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            dirty = self.take_dirty(wait=1.0)
            if not self._acting.is_set():
                continue
            started = time.monotonic()
            self.reconcile_dirty(dirty)
            self._stop.wait(self.coalesce_delay(time.monotonic() - started, self.claims_waiting()))

    def reconcile_dirty(self, dirty: set[str]) -> None:
        for fleet in sorted(dirty):
            try:
                self.reconcile(fleet)
            except Exception:  # noqa: BLE001 - one bad fleet must not stop the others
                log.exception("reconcile of fleet %s failed", fleet)

    def coalesce_delay(self, last_pass_seconds: float, claims_waiting: bool = False) -> float:
        """Wait four times as long as the last pass took (a 50k-pod fleet's plan is O(pods): this caps
        reconciling at about a fifth of a core however fast events arrive), but only as long while
        claims wait: a rollout worker's latency is worth the CPU, warm-pool upkeep is not."""
        return max(self.config.coalesce_seconds, (1 if claims_waiting else 4) * last_pass_seconds)

    def claims_waiting(self) -> bool:
        return any(claim.phase == "Pending" and not claim.pod_name for claim in self.claims.items())

    def _create_room(self) -> int:
        """Plan only the creates the budget can send in about two seconds: the queue (and memory)
        stays small, and later plans decide from fresher state."""
        queued = self.expectations.in_flight()
        return max(0, int(max(self.config.burst, 2 * self.config.qps)) - queued)

    def _resync_loop(self) -> None:
        last_sweep = 0.0
        while not self._stop.wait(self.config.resync_seconds):
            self.enqueue_all()  # time-based decisions: deadlines, TTLs, startup timeouts
            if self._acting.is_set() and time.monotonic() - last_sweep > self.config.orphan_sweep_seconds:
                self.sweep_orphans()
                last_sweep = time.monotonic()

    # ------------------------------------------------------------------------------ reconcile
    def reconcile(self, name: str) -> Plan | None:
        with self._plan_lock:
            return self._reconcile(name)

    def _reconcile(self, name: str) -> Plan | None:
        self.reconciles += 1
        fleet = self.fleets.get(name)
        if fleet is None:
            self.planners.pop(name, None)
            self.expectations.forget(name)
            return None
        meta = fleet["metadata"]
        if meta.get("deletionTimestamp"):
            self._finalize(fleet)
            return None
        if L.FINALIZER not in (meta.get("finalizers") or []):
            self._once("finalizer", name, PRIO_CLAIM, lambda: self.api.patch_custom(
                self.config.namespace, L.FLEET_PLURAL, name,
                {"metadata": {"finalizers": [*(meta.get("finalizers") or []), L.FINALIZER],
                              "resourceVersion": meta["resourceVersion"]}}))
        try:
            spec = parse_fleet_spec(fleet)
        except EnvfarmError as exc:
            self._write_status(name, {"conditions": [{"type": "Valid", "status": "False", "reason": "InvalidSpec",
                                                      "message": exc.line()[:500]}]}, force=True)
            return None
        planner = self._planner(fleet)
        self._specs[name] = spec
        adds, dels = self.expectations.pending(name)
        plan = planner.plan(fleet, spec, self.pods.by_index(name), self.claims.by_index(name), self.clock(),
                            adds, dels, self.expectations.bindings(name), max_creates=self._create_room())
        self._apply(fleet, spec, planner, plan)
        return plan

    def _planner(self, fleet: dict[str, Any]) -> FleetPlanner:
        name, uid = fleet["metadata"]["name"], fleet["metadata"].get("uid", "")
        current = self.planners.get(name)
        if current is None or current[0] != uid:
            current = (uid, FleetPlanner(PlannerMemory(accounting=FleetAccounting.from_status(fleet.get("status")))))
            self.planners[name] = current
        return current[1]

    def _apply(self, fleet: dict[str, Any], spec: FleetSpec, planner: FleetPlanner, plan: Plan) -> None:
        name, ns = fleet["metadata"]["name"], self.config.namespace
        self._apply_claims(name, spec, planner, plan)  # bindings and claim status first, then creates
        for create in plan.creates:
            self._create(name, create.pod, PRIO_CLAIM if create.claim else PRIO_WARM)
        for delete in plan.deletes:
            self._delete(name, delete.name, delete.reason)
        for claim_name in plan.claim_deletes:
            self._once("delete-claim", claim_name, PRIO_STATUS, lambda c=claim_name: self._ignore_404(
                lambda: self.api.delete_custom(ns, L.CLAIM_PLURAL, c)))
        for view, failure in plan.failures:
            self.metrics.failures.labels(name, failure.cls.value).inc()
            log.info("fleet %s: pod %s failed: %s (%s)", name, view.name, failure.cls.value, failure.message)
        for image in plan.quarantined_now:
            log.warning("fleet %s: image %s quarantined: %s", name, image, planner.accounting.quarantined[image])
        for phase in ("ready", "pending", "claimed", "warm"):
            self.metrics.pods.labels(name, phase).set(plan.status.get(phase, 0))
        rate = planner.accounting.success_rate()
        if rate is not None:
            self.metrics.success_rate.labels(name).set(rate)
        self.metrics.quarantined.labels(name).set(len(planner.accounting.quarantined))
        status = {**plan.status, "conditions": [{"type": "Valid", "status": "True", "reason": "SpecAccepted"}]}
        self._write_status(name, status, force=bool(plan.quarantined_now))
        self._ensure_prepull(fleet, spec)

    def _apply_claims(self, name: str, spec: FleetSpec, planner: FleetPlanner, plan: Plan) -> None:
        """The claim side of a plan (full or fast): pod bindings, claim status, latency metrics."""
        ns, now = self.config.namespace, self.clock()
        for patch in plan.pod_patches:
            self.expectations.expect_binding(name, patch.name, patch.binding)

            def bind(p: Any = patch) -> None:
                written = self.api.patch_pod(ns, p.name, p.patch)
                rv = str((written or {}).get("metadata", {}).get("resourceVersion", "0"))
                self.expectations.binding_written(name, p.name, int(rv) if rv.isdigit() else 0)

            def bound(ok: bool, exc: Exception | None, p: Any = patch) -> None:
                if not ok:
                    self._binding_failed(name, p.name)

            self.executor.submit(PRIO_CLAIM, f"bind {patch.name}", bind, bound)
        for claim_name, status in plan.claim_status.items():
            claim = self.claims.get(claim_name)
            key = (claim.uid or claim.name) if claim else claim_name
            self.executor.submit(PRIO_CLAIM, f"claim {claim_name}",
                                 lambda c=claim_name, s=status: self._ignore_404(
                                     lambda: self.api.patch_custom_status(ns, L.CLAIM_PLURAL, c, s)),
                                 lambda ok, exc, k=key: None if ok else planner.forget_claim_status(k),
                                 retry_conflict=True)
        for pod_name in plan.resets:
            self._reset(name, spec, pod_name, plan.reset_patches.get(pod_name))
        for claim_name, served in plan.served.items():
            claim = self.claims.get(claim_name)
            if claim is not None:
                self.metrics.claim_latency.labels(served).observe(max(0.0, now - claim.created))

    # -------------------------------------------------------------------------------- writes
    def _create(self, fleet: str, pod: dict[str, Any], priority: int) -> None:
        self.expectations.expect_create(fleet, pod)
        pod_name = pod["metadata"]["name"]

        def call() -> None:
            try:
                self.api.create_pod(self.config.namespace, pod)
            except ApiCallError as exc:
                if exc.status != 409:  # AlreadyExists: a retried create that had succeeded
                    raise

        def done(ok: bool, exc: Exception | None) -> None:
            if ok:
                self.metrics.creates.labels(fleet).inc()
            else:
                log.warning("create %s failed: %s", pod_name, exc)
                self.expectations.create_failed(fleet, pod_name)
                self.enqueue(fleet)

        self.executor.submit(priority, f"create {pod_name}", call, done)

    def _delete(self, fleet: str, pod_name: str, reason: str) -> None:
        self.expectations.expect_delete(fleet, pod_name)

        def done(ok: bool, exc: Exception | None) -> None:
            if ok:
                self.metrics.deletes.labels(fleet, reason.split(":")[0]).inc()
            else:
                self.expectations.delete_failed(fleet, pod_name)
                self.enqueue(fleet)

        self.executor.submit(PRIO_DELETE, f"delete {pod_name}",
                             lambda: self._ignore_404(lambda: self.api.delete_pod(self.config.namespace, pod_name)), done)

    def _binding_failed(self, fleet: str, pod_name: str) -> None:
        self.expectations.binding_failed(fleet, pod_name)
        self.enqueue(fleet)

    def _reset(self, fleet: str, spec: FleetSpec, pod_name: str, release: Any = None) -> None:
        """Reset a released pod (it still carries its finished claim's label, so nothing binds it
        meanwhile), then unbind it and mark it idle in one patch. Until the watch shows that patch
        (a version at least as new as the one written) the expectations show the pod as resetting:
        warm supply, not bindable, so no bind is sent against its old resourceVersion."""
        ns = self.config.namespace
        if self.resetter is None or release is None:  # no exec access: a released pod cannot be reused safely
            self._delete(fleet, pod_name, "released (no reset)")
            return
        with self._busy_lock:
            if ("reset", pod_name) in self._busy:
                return
            self._busy.add(("reset", pod_name))
        _, _, uses, idle_since = release.binding
        self.expectations.expect_binding(fleet, pod_name, (None, True, uses, idle_since))

        def call() -> None:
            if not self.resetter(ns, pod_name, spec.template.reset_command):
                raise RuntimeError(f"reset of {pod_name} failed")
            now = self.clock()
            meta = {k: v for k, v in release.patch["metadata"].items() if k != "resourceVersion"}
            meta["annotations"] = {**meta["annotations"], L.ANN_IDLE_SINCE: f"{now:.3f}"}
            written = self.api.patch_pod(ns, pod_name, {"metadata": meta})  # still "resetting" until watched
            rv = str((written or {}).get("metadata", {}).get("resourceVersion", "0"))
            self.expectations.binding_written(fleet, pod_name, int(rv) if rv.isdigit() else 0)

        def done(ok: bool, exc: Exception | None) -> None:
            with self._busy_lock:
                self._busy.discard(("reset", pod_name))
            if not ok:
                log.warning("reset of %s failed (%s); deleting it", pod_name, exc)
                self.expectations.binding_failed(fleet, pod_name)
                self._delete(fleet, pod_name, "reset failed")

        self.executor.submit(PRIO_CLAIM, f"reset {pod_name}", call, done)

    def _once(self, kind: str, target: str, priority: int, call: Callable[[], Any]) -> None:
        """Submit a write unless the same one is still in flight (for writes no expectation tracks)."""
        key = (kind, target)
        with self._busy_lock:
            if key in self._busy:
                return
            self._busy.add(key)

        def done(ok: bool, exc: Exception | None) -> None:
            with self._busy_lock:
                self._busy.discard(key)

        self.executor.submit(priority, f"{kind} {target}", call, done, retry_conflict=False)

    @staticmethod
    def _ignore_404(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ApiCallError as exc:
            if exc.status != 404:
                raise
            return None

    def _write_status(self, fleet: str, status: dict[str, Any], force: bool = False) -> None:
        """At most one status write per fleet per status_interval, and none when nothing changed."""
        last = self._status_sent.get(fleet)
        now = self.clock()
        if last is not None and last[1] == status:
            return
        if last is not None and not force and now - last[0] < self.config.status_interval:
            return  # the next resync writes it
        self._status_sent[fleet] = (now, status)

        def done(ok: bool, exc: Exception | None) -> None:
            if not ok:
                self._status_sent.pop(fleet, None)

        self.executor.submit(PRIO_STATUS, f"status {fleet}", lambda: self._ignore_404(
            lambda: self.api.patch_custom_status(self.config.namespace, L.FLEET_PLURAL, fleet, status)),
            done, retry_conflict=True)

    def _ensure_prepull(self, fleet: dict[str, Any], spec: FleetSpec) -> None:
        daemonset = build_prepull_daemonset(fleet, spec)
        if daemonset is None:
            return
        digest = hashlib.sha256(json.dumps(daemonset, sort_keys=True).encode()).hexdigest()
        name = fleet["metadata"]["name"]
        if self._prepull_applied.get(name) == digest:
            return
        self._prepull_applied[name] = digest

        def done(ok: bool, exc: Exception | None) -> None:
            if not ok:
                self._prepull_applied.pop(name, None)

        self.executor.submit(PRIO_STATUS, f"prepull {name}",
                             lambda: self.api.apply_daemonset(self.config.namespace, daemonset), done)

    # ------------------------------------------------------------------------- cleanup paths
    def _finalize(self, fleet: dict[str, Any]) -> None:
        """The fleet is being deleted: delete its pods now (not only via the garbage collector, which
        a busy cluster runs late), fail its open claims, then let the fleet go."""
        name, meta = fleet["metadata"]["name"], fleet["metadata"]
        _, in_flight_deletes = self.expectations.pending(name)
        remaining = self.pods.by_index(name)
        for view in remaining:
            if view.name not in in_flight_deletes and not view.deleting:
                self._delete(name, view.name, "fleet deleted")
        for claim in self.claims.by_index(name):
            if claim.phase not in ("Failed", "Released") and not claim.deleting:
                self._once("fail-claim", claim.name, PRIO_CLAIM, lambda c=claim.name: self._ignore_404(
                    lambda: self.api.patch_custom_status(self.config.namespace, L.CLAIM_PLURAL, c,
                                                         {"phase": "Failed", "reason": "FleetDeleted"})))
        if not remaining and L.FINALIZER in (meta.get("finalizers") or []):
            self._once("unfinalize", name, PRIO_CLAIM, lambda: self._ignore_404(lambda: self.api.patch_custom(
                self.config.namespace, L.FLEET_PLURAL, name,
                {"metadata": {"finalizers": [f for f in meta["finalizers"] if f != L.FINALIZER],
                              "resourceVersion": meta["resourceVersion"]}})))

    def sweep_orphans(self) -> int:
        """Delete pods whose fleet no longer exists (e.g. created by a controller that crashed while
        the fleet was being deleted, or whose garbage collection failed)."""
        if not (self.pods.synced and self.fleets.synced):
            return 0
        count = 0
        for fleet in self.pods.index_keys():
            if self.fleets.get(fleet) is not None:
                continue
            _, in_flight = self.expectations.pending(fleet)
            for view in self.pods.by_index(fleet):
                if view.name not in in_flight and not view.deleting:
                    self._delete(fleet, view.name, "orphan")
                    count += 1
        return count


def exec_resetter(api: KubeApi, timeout: float = 120.0) -> Resetter:
    """Reset a released pod through the exec API (the same path KubernetesSandbox uses)."""
    from envfarm.sandbox.kubernetes import KubernetesSandbox

    def reset(namespace: str, pod: str, command: str) -> bool:
        sandbox = KubernetesSandbox(api.api_client, namespace, pod)
        return sandbox.exec(command, timeout=timeout).ok

    return reset


def load_api_client(kubeconfig: str | None, max_in_flight: int, context: str | None = None) -> Any:
    """An ApiClient from `kubeconfig`, else the in-cluster service account, else KUBECONFIG / ~/.kube/config."""
    from kubernetes import client, config as kube_config

    if kubeconfig and not os.path.exists(kubeconfig):
        raise EnvfarmError(f"the kubeconfig file {kubeconfig} does not exist", "pass --kubeconfig a file that exists")
    configuration = client.Configuration()
    try:
        if kubeconfig or context:
            kube_config.load_kube_config(kubeconfig, context=context, client_configuration=configuration)
        else:
            try:
                kube_config.load_incluster_config(client_configuration=configuration)
            except kube_config.ConfigException:
                kube_config.load_kube_config(client_configuration=configuration)
    except Exception as exc:  # noqa: BLE001 - ConfigException, a missing file, bad YAML read the same to the user
        raise EnvfarmError(f"no usable Kubernetes configuration ({exc})",
                           "run in-cluster, or pass --kubeconfig (and --context) for a reachable cluster") from None
    configuration.connection_pool_maxsize = max_in_flight + 8  # writer threads + three watches
    return client.ApiClient(configuration)


def run_controller(namespace: str = "envfarm-sandboxes", qps: float = 50.0, burst: int = 100, max_in_flight: int = 64,
                   leader_elect: bool = False, lease_namespace: str = "envfarm-system", metrics_port: int = 9090,
                   kubeconfig: str | None = None, stop: threading.Event | None = None) -> None:
    """Run the controller until `stop` is set (or Ctrl-C); EnvfarmError when it cannot start."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_client = load_api_client(kubeconfig, max_in_flight)
    metrics = FleetMetrics()
    if metrics_port:
        metrics.serve(metrics_port)
    api = KubeApi(api_client, metrics)
    cfg = ControllerConfig(namespace=namespace, qps=qps, burst=burst, max_in_flight=max_in_flight,
                           leader_elect=leader_elect, lease_namespace=lease_namespace)
    controller = FleetController(api, cfg, resetter=exec_resetter(api)).start()
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    controller.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envfarm.fleet.controller",
                                     description="Run the envfarm sandbox fleet controller (also: envfarm fleet controller).")
    parser.add_argument("--namespace", default="envfarm-sandboxes")
    parser.add_argument("--qps", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--leader-elect", action="store_true")
    parser.add_argument("--lease-namespace", default="envfarm-system")
    parser.add_argument("--metrics-port", type=int, default=9090, help="0: no metrics endpoint")
    parser.add_argument("--kubeconfig", default=None, help="default: in-cluster config, then ~/.kube/config")
    args = parser.parse_args(argv)
    try:
        run_controller(args.namespace, args.qps, args.burst, args.max_in_flight, args.leader_elect,
                       args.lease_namespace, args.metrics_port, args.kubeconfig)
    except EnvfarmError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
