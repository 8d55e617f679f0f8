"""Prometheus metrics of the fleet controller, on their own registry (one per controller, so tests and
the simulator can run several side by side); `serve()` exposes them on an HTTP port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STARTUP_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
CLAIM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class FleetMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pods = Gauge("envfarm_fleet_pods", "Sandbox pods by fleet and phase", ["fleet", "phase"], registry=r)
        self.creates = Counter("envfarm_fleet_pod_creates", "Pods created (rate() gives creates/s)", ["fleet"], registry=r)
        self.deletes = Counter("envfarm_fleet_pod_deletes", "Pods deleted, by reason", ["fleet", "reason"], registry=r)
        self.api_calls = Counter("envfarm_fleet_api_calls", "Kubernetes API calls by verb, resource and HTTP code",
                                 ["verb", "resource", "code"], registry=r)
        self.startup = Histogram("envfarm_fleet_pod_startup_seconds", "Pod creation to Ready",
                                 buckets=STARTUP_BUCKETS, registry=r)
        self.claim_latency = Histogram("envfarm_fleet_claim_bind_seconds", "Claim creation to bound pod chosen",
                                       ["served_from"], buckets=CLAIM_BUCKETS, registry=r)
        self.failures = Counter("envfarm_fleet_pod_failures", "Failed sandbox pods by class", ["fleet", "class"], registry=r)
        self.success_rate = Gauge("envfarm_fleet_success_rate", "ready / (ready + failed) over the fleet's life",
                                  ["fleet"], registry=r)
        self.quarantined = Gauge("envfarm_fleet_quarantined_images", "Images quarantined", ["fleet"], registry=r)
        self.in_flight = Gauge("envfarm_fleet_requests_in_flight", "API writes queued or running", registry=r)
        self.leader = Gauge("envfarm_fleet_leader", "1 while this replica holds the lease", registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
