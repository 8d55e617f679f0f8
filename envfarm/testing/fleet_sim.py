"""A discrete-event model of an API server and a cluster, driving the real controller code.

Test and benchmark tooling (bench/fleet.py, tests/fleet), not runtime code: it lives in
`envfarm.testing` so that `envfarm/fleet/` holds only what a controller runs. It needs no kmock.

The controller is the real `FleetController`, built with two injected parts instead of patched
internals: its caches (`SimStore`, filled by the modelled watch through `deliver`) and its executor
(`SimExecutor`); it is started with `start(loops=False)` and `ReconcileLoop` drives its reconcile
passes in simulated time through the public `take_dirty` / `reconcile_dirty` / `enqueue_all`.

What is real: `FleetController.reconcile` and `_apply` (so the planner, expectations, pod specs,
claim handling, status throttling), the event handlers, `PodView` transforms, the `TokenBucket` and the
backoff policy. What is modelled: the executor's thread pool (max_in_flight concurrent slots, each
attempt taking a bucket token, retries after `backoff_delay`), the watch (events delivered after a
delay, to an indexed store with the WatchCache's interface), the API server (latency distribution, a
server-side QPS ceiling answering 429 with Retry-After, call accounting), and the cluster (scheduler
throughput, node capacity, image pulls cached vs cold with pre-pull DaemonSets, failure classes).

All times are simulated seconds; the clock starts at a real epoch so timestamps parse as on a cluster.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from envfarm.fleet import labels as L
from envfarm.fleet.api import ApiCallError
from envfarm.fleet.cache import CacheSpec
from envfarm.fleet.controller import ControllerConfig, FleetController
from envfarm.fleet.executor import Op
from envfarm.fleet.metrics import FleetMetrics
from envfarm.fleet.ratelimit import MAX_ATTEMPTS, TokenBucket, backoff_delay, is_retryable
from envfarm.testing.kube_objects import merge_patch, running_status

EPOCH = 1_800_000_000.0


@dataclass
class ClusterModel:
    nodes: int = 1000
    pods_per_node: int = 110
    scheduler_pods_per_s: float = 500.0
    api_latency_median: float = 0.015
    api_latency_sigma: float = 0.6
    server_qps_ceiling: float = 2000.0  # APF share of this client; above it: 429 Retry-After 1
    watch_delay_median: float = 0.05
    start_cached_median: float = 1.0  # container start with the image on the node
    pull_cold_median: float = 25.0  # image pull when it is not
    pull_sigma: float = 0.5
    prepull_hit: float = 1.0  # share of pods whose node already holds the image (pre-pull DaemonSet done)
    p_evicted: float = 0.004
    p_crash: float = 0.004
    p_oom: float = 0.002
    p_node_lost: float = 0.001
    bad_images: frozenset[str] = frozenset()  # permanent pull failure ("manifest unknown")
    reset_seconds: float = 2.0  # exec reset of a released pod (recycling)


class Sim:
    def __init__(self, seed: int = 0) -> None:
        self.now = EPOCH
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.rng = random.Random(seed)

    def clock(self) -> float:
        return self.now

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (max(when, self.now), next(self._seq), fn, args))

    def run_until(self, stop: Callable[[], bool], limit: float) -> None:
        end = self.now + limit
        while self._queue and not stop():
            when, _, fn, args = heapq.heappop(self._queue)
            if when > end:
                heapq.heappush(self._queue, (when, 0, fn, args))
                self.now = end
                return
            self.now = when
            fn(*args)

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(self.rng.gauss(0.0, sigma))


class SimStore:
    """The controller's `Cache` over objects the simulated watch delivers (always synced: no list)."""

    def __init__(self, spec: CacheSpec, clock: Callable[[], float]) -> None:
        self.spec, self.kind, self.clock = spec, spec.kind, clock
        self.index_key = spec.index_key
        self._items: dict[str, Any] = {}
        self._index: dict[str, dict[str, Any]] = {}
        self.synced = True

    def start(self) -> "SimStore":
        return self

    def wait_synced(self, timeout: float = 30.0) -> bool:
        return True

    def stop(self) -> None:
        pass

    def deliver(self, name: str, obj: dict[str, Any] | None) -> None:
        """One watch event (obj None: DELETED): store its view, then tell the controller, as WatchCache does."""
        view = None if obj is None else self.spec.transform(obj, self.clock())
        old = self.put(name, view)
        kind = "DELETED" if view is None else "ADDED" if old is None else "MODIFIED"
        self.spec.on_event(kind, old, view)

    def put(self, name: str, view: Any | None) -> Any | None:
        old = self._items.pop(name, None)
        if old is not None:
            self._index.get(self.index_key(old), {}).pop(name, None)
        if view is not None:
            self._items[name] = view
            self._index.setdefault(self.index_key(view), {})[name] = view
        return old

    def get(self, name: str) -> Any | None:
        return self._items.get(name)

    def by_index(self, key: str) -> list[Any]:
        return list(self._index.get(key, {}).values())

    def index_keys(self) -> list[str]:
        return list(self._index)

    def items(self) -> list[Any]:
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class SimPod:
    obj: dict[str, Any]
    image: str
    created: float
    node: int = -1
    phase: str = "Pending"
    ready_at: float | None = None
    failed: bool = False


@dataclass
class Counters:
    calls: dict[tuple[str, str, int], int] = field(default_factory=dict)
    sent_at: list[float] = field(default_factory=list)  # when each controller request left
    max_live: int = 0
    duplicate_creates: int = 0
    creates_ok: int = 0
    controller_cpu: float = 0.0

    def add(self, verb: str, resource: str, code: int) -> None:
        key = (verb, resource, code)
        self.calls[key] = self.calls.get(key, 0) + 1

    def total(self, verb: str | None = None, resource: str | None = None, code: int | None = None) -> int:
        return sum(n for (v, r, c), n in self.calls.items()
                   if (verb is None or v == verb) and (resource is None or r == resource) and (code is None or c == code))


class SimCluster:
    """The API server and the cluster behind it; also delivers watch events to the controller."""

    def __init__(self, sim: Sim, model: ClusterModel, namespace: str) -> None:
        self.sim, self.model, self.namespace = sim, model, namespace
        self.metrics = FleetMetrics()
        self.counters = Counters()
        self.pods: dict[str, SimPod] = {}
        self.fleets: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, dict[str, Any]] = {}
        self.node_free = [model.pods_per_node] * model.nodes
        self._next_node = 0
        self.sched_queue: list[str] = []
        self._sched_busy_until = EPOCH
        self._server_bucket = TokenBucket(model.server_qps_ceiling, int(model.server_qps_ceiling), clock=sim.clock)
        self._rv = itertools.count(1000)
        self.prepulled: set[str] = set()  # images with a pre-pull DaemonSet
        self.cold_pulled: set[tuple[int, str]] = set()
        self.controller: FleetController | None = None
        self.stores: dict[str, SimStore] = {}  # kind -> the controller's cache of it
        self.claim_bound_at: dict[str, float] = {}
        self.on_bound: Callable[[str, float], None] | None = None  # (claim, time the worker sees it)
        self.claim_created_at: dict[str, float] = {}
        self.live = 0
        self.running_count = 0
        self._last_delivery: dict[str, float] = {}

    # -------------------------------------------------------------------------- watch delivery
    def _deliver(self, kind: str, name: str, obj: dict[str, Any] | None) -> None:
        """A watch delivers late but in order: never before an earlier event of the same stream."""
        delay = self.sim.lognormal(self.model.watch_delay_median, 0.4)
        when = max(self.sim.now + delay, self._last_delivery.get(kind, 0.0))
        self._last_delivery[kind] = when
        self.sim.at(when, self._on_watch, kind, name, obj)

    def _on_watch(self, kind: str, name: str, obj: dict[str, Any] | None) -> None:
        store = self.stores.get(kind)
        if store is None:
            return
        started = time.process_time()
        store.deliver(name, obj)
        self.counters.controller_cpu += time.process_time() - started

    def _meta(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = dict(obj.get("metadata") or {})
        meta["resourceVersion"] = str(next(self._rv))
        return meta

    # ---------------------------------------------------------------------------- API server
    def _admit(self, verb: str, resource: str) -> None:
        if self._server_bucket.reserve() > 0:  # over the server's ceiling for this client
            self.counters.add(verb, resource, 429)
            raise ApiCallError(429, "TooManyRequests", retry_after=1.0)

    def _ok(self, verb: str, resource: str, code: int = 200) -> None:
        self.counters.add(verb, resource, code)

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        self._admit("create", "pods")
        name = pod["metadata"]["name"]
        if name in self.pods:
            self.counters.add("create", "pods", 409)
            self.counters.duplicate_creates += 1
            raise ApiCallError(409, "AlreadyExists")
        meta = self._meta(pod)
        meta.update(uid=uuid.UUID(int=self.sim.rng.getrandbits(128)).hex, namespace=namespace,
                    creationTimestamp=datetime.fromtimestamp(self.sim.now, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        obj = {"metadata": meta, "spec": pod["spec"], "status": {"phase": "Pending"}}
        self.pods[name] = SimPod(obj, pod["spec"]["containers"][0]["image"], self.sim.now)
        self.live += 1
        self.counters.max_live = max(self.counters.max_live, self.live)
        self.counters.creates_ok += 1
        self._ok("create", "pods", 201)
        self._deliver("pods", name, obj)
        self.sched_queue.append(name)
        self._kick_scheduler()
        return obj

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any]:
        self._admit("delete", "pods")
        pod = self.pods.pop(name, None)
        if pod is None:
            self.counters.add("delete", "pods", 404)
            raise ApiCallError(404, "NotFound")
        if pod.node >= 0:
            self.node_free[pod.node] += 1
        if not pod.failed:
            self.live -= 1
        if pod.ready_at is not None:
            self.running_count -= 1
        self._ok("delete", "pods")
        self._deliver("pods", name, None)
        return pod.obj

    def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self._admit("patch", "pods")
        pod = self.pods.get(name)
        if pod is None:
            self.counters.add("patch", "pods", 404)
            raise ApiCallError(404, "NotFound")
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != pod.obj["metadata"]["resourceVersion"]:
            self.counters.add("patch", "pods", 409)
            raise ApiCallError(409, "Conflict")
        body = {k: v for k, v in patch.items() if k != "status"}
        meta = merge_patch(pod.obj["metadata"], body.get("metadata", {}))
        meta["resourceVersion"] = str(next(self._rv))
        pod.obj = {**pod.obj, "metadata": meta}
        self._ok("patch", "pods")
        self._deliver("pods", name, pod.obj)
        return pod.obj

    def patch_custom(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self._admit("patch", plural)
        store = self.fleets if plural == L.FLEET_PLURAL else self.claims
        obj = store[name]
        obj = {**obj, "metadata": {**merge_patch(obj["metadata"], patch.get("metadata", {})),
                                   "resourceVersion": str(next(self._rv))}}
        if "spec" in patch:
            obj["spec"] = merge_patch(obj.get("spec"), patch["spec"])
        store[name] = obj
        self._ok("patch", plural)
        self._deliver(plural, name, obj)
        return obj

    def patch_custom_status(self, namespace: str, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self._admit("patch", f"{plural}/status")
        store = self.fleets if plural == L.FLEET_PLURAL else self.claims
        if name not in store:
            self.counters.add("patch", f"{plural}/status", 404)
            raise ApiCallError(404, "NotFound")
        obj = store[name]
        obj = {**obj, "status": merge_patch(obj.get("status"), status),
               "metadata": {**obj["metadata"], "resourceVersion": str(next(self._rv))}}
        store[name] = obj
        self._ok("patch", f"{plural}/status")
        if plural == L.CLAIM_PLURAL:
            if obj["status"].get("phase") == "Bound" and name not in self.claim_bound_at:
                # the worker sees it after one more watch delay
                self.claim_bound_at[name] = self.sim.now + self.sim.lognormal(self.model.watch_delay_median, 0.4)
                if self.on_bound is not None:
                    self.on_bound(name, self.claim_bound_at[name])
            self._deliver(L.CLAIM_PLURAL, name, obj)
        else:
            self._deliver(plural, name, obj)
        return obj

    def delete_custom(self, namespace: str, plural: str, name: str) -> dict[str, Any]:
        self._admit("delete", plural)
        store = self.fleets if plural == L.FLEET_PLURAL else self.claims
        obj = store.pop(name, None)
        if obj is None:
            raise ApiCallError(404, "NotFound")
        self._ok("delete", plural)
        self._deliver(plural, name, None)
        return obj

    def apply_daemonset(self, namespace: str, daemonset: dict[str, Any]) -> dict[str, Any]:
        self._admit("create", "daemonsets")
        self._ok("create", "daemonsets", 201)
        for container in daemonset["spec"]["template"]["spec"].get("initContainers", []):
            self.prepulled.add(container["image"])
        return daemonset

    # workers' calls (not the controller's budget)
    def worker_create_claim(self, name: str, fleet: str, image: str, deadline: int = 300) -> None:
        obj = {"metadata": {"name": name, "uid": name, "resourceVersion": str(next(self._rv)),
                            "creationTimestamp": datetime.fromtimestamp(self.sim.now, tz=timezone.utc).isoformat()},
               "spec": {"fleet": fleet, "image": image, "deadlineSeconds": deadline}, "status": {}}
        self.claims[name] = obj
        self.claim_created_at[name] = self.sim.now
        self.counters.add("create", "sandboxclaims(worker)", 201)
        self._deliver(L.CLAIM_PLURAL, name, obj)

    def worker_release_claim(self, name: str, release: str) -> None:
        obj = self.claims.get(name)
        if obj is None:
            return
        obj = {**obj, "spec": {**obj["spec"], "release": release}, "metadata": {**obj["metadata"], "resourceVersion": str(next(self._rv))}}
        self.claims[name] = obj
        self.counters.add("patch", "sandboxclaims(worker)", 200)
        self._deliver(L.CLAIM_PLURAL, name, obj)

    def create_fleet(self, name: str, spec: dict[str, Any]) -> None:
        obj = {"apiVersion": L.API_VERSION, "kind": "SandboxFleet",
               "metadata": {"name": name, "namespace": self.namespace, "uid": f"uid-{name}", "generation": 1,
                            "resourceVersion": str(next(self._rv))}, "spec": spec}
        self.fleets[name] = obj
        self._deliver(L.FLEET_PLURAL, name, obj)

    # ------------------------------------------------------------------------------- cluster
    def _kick_scheduler(self) -> None:
        if self.sched_queue and self._sched_busy_until <= self.sim.now:
            self._sched_busy_until = self.sim.now + 1.0 / self.model.scheduler_pods_per_s
            self.sim.at(self._sched_busy_until, self._schedule_one)

    def _schedule_one(self) -> None:
        while self.sched_queue:
            name = self.sched_queue.pop(0)
            pod = self.pods.get(name)
            if pod is None:
                continue
            node = self._pick_node()
            if node < 0:
                self.sched_queue.insert(0, name)
                self.sim.at(self.sim.now + 1.0, self._kick_scheduler)
                return
            pod.node = node
            self.node_free[node] -= 1
            self.sim.at(self.sim.now + self._start_time(node, pod.image), self._start, name, pod)
            break
        self._kick_scheduler()

    def _pick_node(self) -> int:
        for _ in range(self.model.nodes):
            node = self._next_node
            self._next_node = (self._next_node + 1) % self.model.nodes
            if self.node_free[node] > 0:
                return node
        return -1

    def _start_time(self, node: int, image: str) -> float:
        start = self.sim.lognormal(self.model.start_cached_median, 0.3)
        cached = image in self.prepulled and self.sim.rng.random() < self.model.prepull_hit
        if not cached and (node, image) not in self.cold_pulled:
            self.cold_pulled.add((node, image))
            start += self.sim.lognormal(self.model.pull_cold_median, self.model.pull_sigma)
        return start

    def _start(self, name: str, pod: SimPod) -> None:
        if self.pods.get(name) is not pod:
            return
        m, r = self.model, self.sim.rng.random()
        if pod.image in m.bad_images:
            status = {"phase": "Pending", "containerStatuses": [{"name": "sandbox", "state": {"waiting": {
                "reason": "ErrImagePull", "message": "manifest unknown: manifest unknown"}}}]}
        elif r < m.p_evicted:
            status = {"phase": "Failed", "reason": "Evicted", "message": "node had disk pressure"}
        elif r < m.p_evicted + m.p_crash:
            status = {"phase": "Failed", "containerStatuses": [{"name": "sandbox", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
        elif r < m.p_evicted + m.p_crash + m.p_oom:
            status = {"phase": "Failed", "containerStatuses": [{"name": "sandbox", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        elif r < m.p_evicted + m.p_crash + m.p_oom + m.p_node_lost:
            status = {"phase": "Unknown", "reason": "NodeLost"}
        else:
            status = running_status(f"10.{pod.node // 250}.{pod.node % 250}.1")
            pod.ready_at = self.sim.now
            self.running_count += 1
        if pod.ready_at is None:
            pod.failed = True
            self.live -= 1
        pod.phase = status["phase"]
        pod.obj = {**pod.obj, "status": status, "metadata": {**pod.obj["metadata"], "resourceVersion": str(next(self._rv))}}
        self._deliver("pods", name, pod.obj)

    def running(self) -> int:
        return self.running_count


class SimExecutor:
    """The Executor's behaviour in simulated time: max_in_flight slots, a token per attempt,
    priority order, tenacity-equivalent retries with the same backoff policy."""

    def __init__(self, sim: Sim, cluster: SimCluster, bucket: TokenBucket, max_in_flight: int) -> None:
        self.sim, self.cluster, self.bucket, self.max_in_flight = sim, cluster, bucket, max_in_flight
        self._queue: list[Op] = []
        self._seq = itertools.count()
        self.running = 0

    @property
    def pending(self) -> int:
        return len(self._queue) + self.running

    def submit(self, priority: int, name: str, call: Callable[[], Any],
               done: Callable[[bool, Exception | None], None] | None = None, retry_conflict: bool = False) -> None:
        heapq.heappush(self._queue, Op(priority, next(self._seq), name, call, done or (lambda ok, exc: None), retry_conflict))
        self._pump()

    def drain(self) -> None:
        self._queue.clear()

    def start(self) -> "SimExecutor":
        return self

    def stop(self) -> None:
        self._queue.clear()

    def wait_idle(self, timeout: float) -> bool:
        return self.pending == 0  # simulated time only advances in Sim.run_until

    def _pump(self) -> None:
        while self.running < self.max_in_flight and self._queue:
            op = heapq.heappop(self._queue)
            self.running += 1
            self._send(op, 1)

    def _send(self, op: Op, attempt: int) -> None:
        wait = self.bucket.reserve()
        sent = self.sim.now + wait
        self.cluster.counters.sent_at.append(sent)
        latency = self.sim.lognormal(self.cluster.model.api_latency_median, self.cluster.model.api_latency_sigma)
        if op.name.startswith("reset "):  # an exec that restores the repository and scratch state
            latency += self.cluster.model.reset_seconds
        self.sim.at(sent + latency, self._complete, op, attempt)

    def _complete(self, op: Op, attempt: int) -> None:
        started = time.process_time()
        try:
            op.call()
        except ApiCallError as exc:
            if exc.status == 429:
                self.bucket.pause(exc.retry_after or 1.0)
            if is_retryable(exc.status) and (exc.status != 409 or op.retry_conflict) and attempt < MAX_ATTEMPTS:
                self.sim.at(self.sim.now + backoff_delay(attempt, exc.retry_after, rng=self.sim.rng), self._send, op, attempt + 1)
                return
            self._finish(op, False, exc)
        except RuntimeError as exc:  # e.g. a reset that failed
            self._finish(op, False, exc)
        else:
            self._finish(op, True, None)
        finally:
            self.cluster.counters.controller_cpu += time.process_time() - started

    def _finish(self, op: Op, ok: bool, exc: Exception | None) -> None:
        op.done(ok, exc)
        self.running -= 1
        self._pump()


def build_controller(sim: Sim, cluster: SimCluster, qps: float, burst: int, max_in_flight: int,
                     resetter: Callable[[str, str, str], bool] | None = None) -> FleetController:
    config = ControllerConfig(namespace=cluster.namespace, qps=qps, burst=burst, max_in_flight=max_in_flight,
                              status_interval=1.0, coalesce_seconds=0.05)

    def store(spec: CacheSpec) -> SimStore:
        cluster.stores[spec.kind] = SimStore(spec, sim.clock)
        return cluster.stores[spec.kind]

    ctl = FleetController(cluster, config, resetter=resetter, clock=sim.clock,  # type: ignore[arg-type] # SimCluster has KubeApi's methods
                          caches=store, executor=lambda bucket, slots, on_depth: SimExecutor(sim, cluster, bucket, slots))
    cluster.controller = ctl
    return ctl.start(loops=False)  # caches "synced", no lease (leader_elect is off): it acts at once


class ReconcileLoop:
    """The controller's reconcile loop in simulated time; its pause adapts to the measured CPU cost
    of the last pass, as `FleetController.coalesce_delay` does in the real loop."""

    def __init__(self, sim: Sim, ctl: FleetController, counters: Counters, resync: float = 5.0) -> None:
        self.sim, self.ctl, self.counters, self.resync = sim, ctl, counters, resync
        self.passes = 0
        self.stopped = False
        sim.at(sim.now, self._tick)
        sim.at(sim.now + resync, self._resync)

    def _tick(self) -> None:
        if self.stopped:
            return
        dirty = self.ctl.take_dirty()
        cost = 0.0
        if dirty:
            started = time.process_time()
            self.ctl.reconcile_dirty(dirty)
            cost = time.process_time() - started
            self.counters.controller_cpu += cost
            self.passes += 1
        self.sim.at(self.sim.now + cost + self.ctl.coalesce_delay(cost, self.ctl.claims_waiting()), self._tick)

    def _resync(self) -> None:
        if self.stopped:
            return
        self.ctl.enqueue_all()
        self.sim.at(self.sim.now + self.resync, self._resync)
