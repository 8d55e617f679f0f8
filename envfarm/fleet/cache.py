"""A list+watch cache (client-go's informer, which no Python client ships), one per kind.

One label-selected list, then one long watch from the list's resourceVersion; a dropped or timed-out
watch resumes from the last version it saw (no relist), a 410 Gone relists. A relist diffs against
the cache and reports what vanished as deletions, so a restart or a long disconnect never loses track
of a pod. Objects are stored through `transform` (compact views, see views.py) and indexed by
`index_key` (the fleet), so a reconcile touches only its fleet's objects.

`Cache` is the interface the controller reads through and `CacheSpec` what it asks a `CacheFactory`
for, so a caller can give the controller other caches (the simulator in `envfarm.testing.fleet_sim`
delivers modelled watch events into its own); `watch_caches` is the default, a WatchCache per kind.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Protocol, TypeVar

from envfarm.fleet.api import ApiCallError, KubeApi
from envfarm.fleet.ratelimit import backoff_delay

V = TypeVar("V")
EventHandler = Callable[[str, Any, Any], None]  # (type, old view | None, new view | None)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheSpec:
    """One kind the controller caches: what to watch, how to store it, whom to tell of changes."""

    kind: str  # "pods" or a custom resource plural
    transform: Callable[[dict[str, Any], float], Any]  # (object, now) -> the stored view
    index_key: Callable[[Any], str]  # view -> its fleet
    on_event: EventHandler  # called after each change is stored
    selector: str | None = None


class Cache(Protocol[V]):
    """What the controller needs of a cache: lifecycle, then reads by name and by fleet."""

    kind: str

    @property
    def synced(self) -> bool: ...

    def start(self) -> Any: ...

    def wait_synced(self, timeout: float = 30.0) -> bool: ...

    def stop(self) -> None: ...

    def get(self, name: str) -> V | None: ...

    def by_index(self, key: str) -> list[V]: ...

    def index_keys(self) -> list[str]: ...

    def items(self) -> list[V]: ...

    def __len__(self) -> int: ...


CacheFactory = Callable[[CacheSpec], Cache[Any]]


def watch_caches(api: KubeApi, namespace: str, watch_timeout: int = 300) -> CacheFactory:
    """The default: a list+watch WatchCache per kind, against the API server."""

    def make(spec: CacheSpec) -> Cache[Any]:
        return WatchCache(api, spec.kind, namespace, spec.transform, spec.index_key, spec.on_event,
                          selector=spec.selector, watch_timeout=watch_timeout)

    return make


class WatchCache(Generic[V]):
    def __init__(
        self,
        api: KubeApi,
        kind: str,
        namespace: str,
        transform: Callable[[dict[str, Any], float], V],
        index_key: Callable[[V], str],
        on_event: EventHandler,
        selector: str | None = None,
        watch_timeout: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api, self.kind, self.namespace, self.selector = api, kind, namespace, selector
        self.transform, self.index_key, self.on_event = transform, index_key, on_event
        self.watch_timeout, self.clock = watch_timeout, clock
        self._items: dict[str, V] = {}
        self._index: dict[str, dict[str, V]] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)
        self.resource_version = ""
        self.relists = 0
        self.rewatches = 0

    # ------------------------------------------------------------------------------------ reads
    def get(self, name: str) -> V | None:
        with self._lock:
            return self._items.get(name)

    def by_index(self, key: str) -> list[V]:
        with self._lock:
            return list(self._index.get(key, {}).values())

    def index_keys(self) -> list[str]:
        with self._lock:
            return list(self._index)

    def items(self) -> list[V]:
        with self._lock:
            return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    # -------------------------------------------------------------------------------- lifecycle
    def start(self) -> "WatchCache[V]":
        self._thread.start()
        return self

    def wait_synced(self, timeout: float = 30.0) -> bool:
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._stop.set()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    # ---------------------------------------------------------------------------------- internals
    def _store(self, name: str, view: V | None) -> V | None:
        with self._lock:
            old = self._items.pop(name, None)
            if old is not None:
                self._index.get(self.index_key(old), {}).pop(name, None)
            if view is not None:
                self._items[name] = view
                self._index.setdefault(self.index_key(view), {})[name] = view
            return old

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        view = None if kind == "DELETED" else self.transform(obj, self.clock())
        old = self._store(name, view)
        self.on_event(kind, old, view)

    def _relist(self) -> None:
        if self.kind == "pods":
            listing = self.api.list_pods(self.namespace, self.selector or "")
        else:
            listing = self.api.list_custom(self.namespace, self.kind)
        seen = set()
        for obj in listing.get("items", []):
            seen.add(obj["metadata"]["name"])
            self._apply("MODIFIED" if self.get(obj["metadata"]["name"]) is not None else "ADDED", obj)
        for name in [n for n in list(self._items) if n not in seen]:
            old = self._store(name, None)
            self.on_event("DELETED", old, None)
        self.resource_version = listing.get("metadata", {}).get("resourceVersion", "")
        self.relists += 1
        self._synced.set()

    def _watch_once(self) -> None:
        for event in self.api.watch(self.kind, self.namespace, self.resource_version, self.watch_timeout, self.selector):
            if self._stop.is_set():
                return
            obj = event.get("object") or {}
            rv = obj.get("metadata", {}).get("resourceVersion")
            if event.get("type") == "BOOKMARK":
                self.resource_version = rv or self.resource_version
                continue
            self._apply(event["type"], obj)
            if rv:
                self.resource_version = rv

    def _run(self) -> None:
        need_list, failures = True, 0
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                self._watch_once()  # returns when the server ends the watch (timeout or dropped)
                self.rewatches += 1
                failures = 0
            except ApiCallError as exc:
                if exc.status == 410:  # our version is older than the server's history: relist
                    need_list = True
                    continue
                failures += 1
                log.warning("%s watch: %s (attempt %d)", self.kind, exc, failures)
                self._stop.wait(backoff_delay(failures, exc.retry_after))
            except Exception as exc:  # noqa: BLE001 - keep the informer alive: relist from scratch
                failures += 1
                log.warning("%s watch broke (%s); relisting", self.kind, exc)
                need_list = True
                self._stop.wait(backoff_delay(failures))
