"""Create/delete expectations: what this controller has asked for and not yet seen in its watch.

This is the fix for agent-sandbox's warm-pool over-creation (17k pods for an 8k target): a reconcile
that runs before the watch delivers the pods it just created must count them anyway. Unlike client-go,
which refuses to reconcile until expectations are met, we fold in-flight objects into the view, so a
slow watch slows nothing down; deterministic pod names make a lost create response harmless too.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

DEFAULT_TTL = 300.0

# (claim label or None, reset pending, uses, idle since): a pod patch sent but not yet watched
Binding = tuple[str | None, bool, int, float]  # like client-go: an expectation nobody confirms in 5 minutes is dropped


class Expectations:
    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._adds: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
        self._dels: dict[str, dict[str, float]] = {}
        self._bindings: dict[str, dict[str, tuple[float, Binding]]] = {}
        self._binding_rv: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def expect_create(self, fleet: str, pod: dict[str, Any]) -> None:
        """Keeps the pod's compact view (built once here), not the pod, for the planner."""
        from envfarm.fleet.views import PodView

        with self._lock:
            now = self._clock()
            self._adds.setdefault(fleet, {})[pod["metadata"]["name"]] = (now, PodView.from_pod(pod, now))

    def expect_delete(self, fleet: str, name: str) -> None:
        with self._lock:
            self._dels.setdefault(fleet, {})[name] = self._clock()

    def expect_binding(self, fleet: str, name: str, binding: Binding) -> None:
        """A claim was bound to (or released from) a pod: until the watch shows the new labels, the
        planner must not hand the same pod to a second claim."""
        with self._lock:
            self._bindings.setdefault(fleet, {})[name] = (self._clock(), binding)

    def observed(self, fleet: str, name: str, deleted: bool, claim: str | None = None,
                 reset_pending: bool = False, resource_version: int = 0) -> None:
        """Called by the watch for every pod event. A binding is confirmed by seeing its labels, or by
        any version at least as new as the one the server gave our patch (after a relist the
        intermediate state may never be seen)."""
        with self._lock:
            self._adds.get(fleet, {}).pop(name, None)
            if deleted:
                self._dels.get(fleet, {}).pop(name, None)
            expected = self._bindings.get(fleet, {}).get(name)
            if expected is None:
                return
            written_rv = self._binding_rv.get((fleet, name), 0)
            state = (expected[1][0], expected[1][1])
            # a reset in flight (None, True) ends with the pod seen unbound: only the patch sent after the
            # reset unbinds a released pod, and the watch may show it before the patch's response arrives
            if deleted or state == (claim, reset_pending) or (state == (None, True) and (claim, reset_pending) == (None, False)) \
                    or (written_rv and resource_version >= written_rv):
                del self._bindings[fleet][name]
                self._binding_rv.pop((fleet, name), None)

    def binding_written(self, fleet: str, name: str, resource_version: int) -> None:
        with self._lock:
            if name in self._bindings.get(fleet, {}):
                self._binding_rv[(fleet, name)] = resource_version

    def binding_failed(self, fleet: str, name: str) -> None:
        with self._lock:
            self._bindings.get(fleet, {}).pop(name, None)

    def bindings(self, fleet: str) -> dict[str, Binding]:
        with self._lock:
            horizon = self._clock() - self._ttl
            current = self._bindings.get(fleet, {})
            for name in [n for n, (at, _) in current.items() if at < horizon]:
                del current[name]
            return {name: binding for name, (_, binding) in current.items()}

    def create_failed(self, fleet: str, name: str) -> None:
        with self._lock:
            self._adds.get(fleet, {}).pop(name, None)

    def delete_failed(self, fleet: str, name: str) -> None:
        with self._lock:
            self._dels.get(fleet, {}).pop(name, None)

    def pending(self, fleet: str) -> tuple[dict[str, Any], set[str]]:
        """(pods created but unseen, names deleted but still seen), after dropping stale entries."""
        with self._lock:
            horizon = self._clock() - self._ttl
            adds = self._adds.get(fleet, {})
            dels = self._dels.get(fleet, {})
            for name in [n for n, (at, _) in adds.items() if at < horizon]:
                del adds[name]
            for name in [n for n, at in dels.items() if at < horizon]:
                del dels[name]
            return {name: pod for name, (_, pod) in adds.items()}, set(dels)

    def forget(self, fleet: str) -> None:
        with self._lock:
            self._adds.pop(fleet, None)
            self._dels.pop(fleet, None)
            self._bindings.pop(fleet, None)

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._adds.values()) + sum(len(v) for v in self._dels.values())
