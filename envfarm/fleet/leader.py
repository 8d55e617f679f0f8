"""Leader election on a coordination.k8s.io Lease, so two controller replicas never both act.

The same protocol as client-go's leaderelection: take the Lease when it is absent or its holder has
not renewed within leaseDurationSeconds, renew every `renew_every` seconds with an optimistic-
concurrency replace (the resourceVersion we read), and stop acting as soon as a renewal has not
succeeded within `renew_deadline` (before anyone else may take over).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any, Callable

from envfarm.fleet.api import ApiCallError, KubeApi

log = logging.getLogger(__name__)


def _micro(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class LeaderElector:
    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str,
                 on_started: Callable[[], None], on_stopped: Callable[[], None],
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.on_started, self.on_stopped = on_started, on_stopped
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.is_leader = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> "LeaderElector":
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.is_leader:
            self.is_leader = False
            self.on_stopped()
            if release:
                try:  # let a standby take over at once instead of after lease_duration
                    lease = self.api.get_lease(self.namespace, self.name)
                    lease["spec"]["leaseDurationSeconds"] = 1
                    lease["spec"]["renewTime"] = _micro(0)
                    self.api.replace_lease(self.namespace, self.name, lease)
                except ApiCallError:
                    pass

    def _lease(self, now: float, previous: dict[str, Any] | None) -> dict[str, Any]:
        spec = (previous or {}).get("spec", {})
        same_holder = spec.get("holderIdentity") == self.identity
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {**({"resourceVersion": previous["metadata"]["resourceVersion"]} if previous else {}),
                         "name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                     "acquireTime": spec.get("acquireTime") if same_holder and spec.get("acquireTime") else _micro(now),
                     "renewTime": _micro(now),
                     "leaseTransitions": int(spec.get("leaseTransitions", 0)) + (0 if same_holder else 1)},
        }

    def try_acquire_or_renew(self) -> bool:
        now = time.time()
        try:
            current = self.api.get_lease(self.namespace, self.name)
        except ApiCallError as exc:
            if exc.status != 404:
                return False
            try:
                self.api.create_lease(self.namespace, self._lease(now, None))
                return True
            except ApiCallError:
                return False
        spec = current.get("spec", {})
        expired = _parse(spec.get("renewTime")) + float(spec.get("leaseDurationSeconds", self.lease_duration)) < now
        if spec.get("holderIdentity") not in (self.identity, None, "") and not expired:
            return False
        try:
            self.api.replace_lease(self.namespace, self.name, self._lease(now, current))
            return True
        except ApiCallError:
            return False  # someone else wrote it first (409) or the server is unwell

    def _run(self) -> None:
        last_renew = 0.0
        while not self._stop.is_set():
            ok = self.try_acquire_or_renew()
            now = time.monotonic()
            if ok:
                last_renew = now
                if not self.is_leader:
                    self.is_leader = True
                    log.info("%s became leader", self.identity)
                    self.on_started()
            elif self.is_leader and now - last_renew > self.renew_deadline:
                self.is_leader = False
                log.warning("%s lost the lease", self.identity)
                self.on_stopped()
            self._stop.wait(self.retry_period if not self.is_leader else self.retry_period)
