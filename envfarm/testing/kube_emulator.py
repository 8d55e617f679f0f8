"""kmock's KubernetesEmulator with the server-side behaviour our controller relies on, plus faults.

No API server can run on our machines, so the controller's tests talk to this over real HTTP with the
official client. kmock's emulator stores objects as posted (no namespace from the URL, no uid or
resourceVersion, duplicate create = 500, placeholder list resourceVersion, watch filtering by the
object's own namespace). This subclass keeps kmock's HTTP server, URL parsing and streaming, and
replaces its storage with a versioned one that behaves as the Kubernetes API documentation says:

- create fills metadata.namespace (from the URL), uid, resourceVersion, creationTimestamp, generation,
  honours generateName, and answers 409 AlreadyExists for a live duplicate;
- every write bumps one global resourceVersion; a write carrying metadata.resourceVersion that is not
  current answers 409 Conflict (optimistic concurrency); PUT replaces, PATCH is a JSON merge patch
  (RFC 7386: null deletes), a dict sent as application/json-patch+json is a 400 as on a real server;
- the status subresource: writes to the main resource ignore .status, writes to /status change only
  .status; spec changes bump metadata.generation;
- list filters by labelSelector (equality and existence terms) and returns the current
  resourceVersion; watch starts after ?resourceVersion=, replays from an event log, answers an ERROR
  410 Gone event when that version is older than the log, honours timeoutSeconds and labelSelector;
- delete with finalizers sets deletionTimestamp; removing the last finalizer then removes the object;
  removing an object deletes its dependents (ownerReferences uid), like the garbage collector
  (immediately here, asynchronously on a real cluster).

Fault injection (429 with Retry-After, 5xx, 409s, dropped watches) is part of the class so tests and
local runs can reproduce the storms the controller must survive.

It subclasses kmock's emulator and uses one private kmock module (`kmock._internal.rendering`, the
parsed request), so it is pinned with kmock in the `test` extra and never imported by runtime code.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import random
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from envfarm.errors import EnvfarmError
from envfarm.testing.kube_objects import image_pull_failure, merge_patch, running_status, selector_matches

try:
    import aiohttp.web
    import attrs
    import kmock
    from kmock._internal import rendering
except ImportError as _missing:  # the runtime install has no test extra
    raise EnvfarmError(f"envfarm.testing.kube_emulator needs kmock, which is not installed ({_missing})",
                       "pip install 'envfarm[test]' (kmock and pytest-asyncio are test-only dependencies)") from None

ResKey = tuple[str, str, str]  # (group, version, plural)
ObjKey = tuple[ResKey, str | None, str]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.retry_after = code, reason, message, retry_after


@dataclass
class Fault:
    """Answer matching requests with `code` (for `count` of them, with `probability` each)."""

    verb: str = "*"  # create | update | delete | list | watch | get | *
    plural: str = "*"
    code: int = 500
    count: int = 1
    probability: float = 1.0
    retry_after: float | None = None


@dataclass
class Stats:
    calls: collections.Counter[tuple[str, str, int]] = field(default_factory=collections.Counter)

    def total(self, verb: str | None = None, plural: str | None = None) -> int:
        return sum(n for (v, p, _), n in self.calls.items()
                   if (verb is None or v == verb) and (plural is None or p == plural))


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class FleetEmulator(kmock.KubernetesEmulator):
    event_log_size: int = 200_000
    drop_watch_after: int | None = None  # close every watch stream after this many events
    watch_delay: float = 0.0  # seconds each watch event is held back (a slow, lagging watch)
    seed: int = 0

    _store: dict[ObjKey, dict[str, Any]] = attrs.field(factory=dict, init=False)
    _log: collections.deque[tuple[int, ResKey, str, dict[str, Any]]] = attrs.field(factory=collections.deque, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _rng: random.Random = attrs.field(factory=random.Random, init=False)
    closing: bool = attrs.field(default=False, init=False)
    stats: Stats = attrs.field(factory=Stats, init=False)

    # ----------------------------------------------------------------------------------- faults
    def inject(self, *faults: Fault) -> None:
        self._faults.extend(faults)

    def clear_faults(self) -> None:
        self._faults.clear()

    def _maybe_fault(self, verb: str, plural: str) -> None:
        for fault in self._faults:
            if fault.count <= 0 or fault.verb not in ("*", verb) or fault.plural not in ("*", plural):
                continue
            if self._rng.random() >= fault.probability:
                continue
            fault.count -= 1
            reasons = {429: "TooManyRequests", 409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable"}
            raise ApiError(fault.code, reasons.get(fault.code, "InjectedFault"), f"injected fault {fault.code}",
                           fault.retry_after)

    # ------------------------------------------------------------------------------ direct access
    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """A snapshot, for assertions (safe from any thread: dict copies of immutable snapshots)."""
        return [copy.deepcopy(obj) for (res, ns, _), obj in list(self._store.items())
                if res[2] == plural and (namespace is None or ns == namespace)]

    # ----------------------------------------------------------------------------------- serving
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if self._changed is None:
            self._changed = asyncio.Condition()
            self._rng.seed(self.seed)
        is_put = request.method is not None and request.method.value.upper() == "PUT" and request.name is not None
        if request.resource is None or (request.action is None and not is_put):
            return await kmock.KubernetesScaffold._handle(self, request)
        action = request.action.value.lower() if request.action is not None else "update"  # kmock leaves PUT unnamed
        verb = {"list": "list", "watch": "watch", "fetch": "get", "create": "create",
                "update": "update", "delete": "delete"}.get(action, action)
        plural = request.resource.plural or ""
        try:
            self._maybe_fault(verb, plural)
            if verb == "watch":
                self.stats.calls[(verb, plural, 200)] += 1
                return await kmock.KubernetesScaffold._handle(self, request)
            payload = await self._dispatch(verb, request)
        except ApiError as exc:
            self.stats.calls[(verb, plural, exc.code)] += 1
            return self._error_response(exc)
        code = 201 if verb == "create" else 200
        self.stats.calls[(verb, plural, code)] += 1
        return aiohttp.web.json_response(payload, status=code)

    @staticmethod
    def _error_response(exc: ApiError) -> aiohttp.web.StreamResponse:
        body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "code": exc.code, "reason": exc.reason, "message": exc.message}
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
        return aiohttp.web.json_response(body, status=exc.code, headers=headers)

    async def _dispatch(self, verb: str, request: rendering.Request) -> dict[str, Any]:
        res = request.resource
        key_res: ResKey = (res.group or "", res.version or "", res.plural or "")
        if verb == "list":
            return self._list(key_res, request.namespace, request.params.get("labelSelector"))
        if verb == "create":
            return await self._create(key_res, request.namespace, request.data)
        if verb == "get":
            return copy.deepcopy(self._get(key_res, request.namespace, request.name))
        if verb == "update":
            content_type = request.headers.get("Content-Type", "")
            if "json-patch" in content_type and not isinstance(request.data, list):
                raise ApiError(400, "BadRequest", "the body of a json-patch must be a JSON array")
            replace = request.method.value.upper() == "PUT"
            return await self._update(key_res, request.namespace, request.name, request.data,
                                      request.subresource, replace)
        if verb == "delete":
            return await self._delete(key_res, request.namespace, request.name)
        raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported by the emulator")

    # ------------------------------------------------------------------------------- operations
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _emit(self, res: ResKey, kind: str, obj: dict[str, Any]) -> None:
        self._log.append((int(obj["metadata"]["resourceVersion"]), res, kind, copy.deepcopy(obj)))
        while len(self._log) > self.event_log_size:
            self._log.popleft()
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def _get(self, res: ResKey, ns: str | None, name: str | None) -> dict[str, Any]:
        obj = self._store.get((res, ns, name or ""))
        if obj is None:
            raise ApiError(404, "NotFound", f'{res[2]} "{name}" not found')
        return obj

    def _list(self, res: ResKey, ns: str | None, selector: str | None) -> dict[str, Any]:
        items = [copy.deepcopy(obj) for (r, o_ns, _), obj in self._store.items()
                 if r == res and (ns is None or o_ns == ns)
                 and selector_matches(selector, obj["metadata"].get("labels") or {})]
        return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    async def _create(self, res: ResKey, ns: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if ns is not None:
            if meta.get("namespace") not in (None, ns):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
            meta["namespace"] = ns
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        key = (res, ns, meta["name"])
        if key in self._store:
            raise ApiError(409, "AlreadyExists", f'{res[2]} "{meta["name"]}" already exists')
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), creationTimestamp=_now(), generation=1)
        meta.pop("deletionTimestamp", None)
        self._store[key] = obj
        await self._emit(res, "ADDED", obj)
        return copy.deepcopy(obj)

    async def _update(self, res: ResKey, ns: str | None, name: str | None, body: Any,
                      subresource: str | None, replace: bool) -> dict[str, Any]:
        current = self._get(res, ns, name)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "only JSON merge patches and replacements are supported")
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res[2]} "{name}": '
                                            "the object has been modified; please apply your changes to the latest version")
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = body.get("status") if replace else merge_patch(current.get("status"), body.get("status", {}))
        else:
            body = {k: v for k, v in body.items() if k != "status"}
            new = copy.deepcopy(body) if replace else merge_patch(current, body)
            if replace:
                new["status"] = copy.deepcopy(current.get("status"))
                new = {k: v for k, v in new.items() if v is not None}
            meta = new.setdefault("metadata", {})
            for field_name in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp", "generation"):
                if field_name in current["metadata"]:
                    meta[field_name] = current["metadata"][field_name]
            if new.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self._store[(res, ns, name or "")]
            await self._emit(res, "DELETED", new)
            await self._collect_dependents(new["metadata"]["uid"])
            return copy.deepcopy(new)
        self._store[(res, ns, name or "")] = new
        await self._emit(res, "MODIFIED", new)
        return copy.deepcopy(new)

    async def _delete(self, res: ResKey, ns: str | None, name: str | None) -> dict[str, Any]:
        current = self._get(res, ns, name)
        meta = current["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._store[(res, ns, name or "")] = new
                await self._emit(res, "MODIFIED", new)
                return copy.deepcopy(new)
            return copy.deepcopy(current)
        del self._store[(res, ns, name or "")]
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        await self._emit(res, "DELETED", gone)
        await self._collect_dependents(meta["uid"])
        return gone

    async def _collect_dependents(self, owner_uid: str) -> None:
        for (res, ns, name), obj in list(self._store.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in owners) and (res, ns, name) in self._store:
                await self._delete(res, ns, name)

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""
        res = request.resource
        key_res: ResKey = (res.group or "", res.version or "", res.plural or "")
        selector = request.params.get("labelSelector")
        since_param = request.params.get("resourceVersion")
        timeout = float(request.params.get("timeoutSeconds", 0) or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        sent = 0
        if not since_param or since_param == "0":
            # no version: synthetic ADDED events for the current state, then changes (documented behaviour)
            since = self._rv
            for (r, ns, _), obj in list(self._store.items()):
                if r == key_res and (request.namespace is None or ns == request.namespace) \
                        and selector_matches(selector, obj["metadata"].get("labels") or {}):
                    yield {"type": "ADDED", "object": copy.deepcopy(obj)}
        else:
            since = int(since_param)
            oldest = self._log[0][0] if self._log else self._rv + 1
            if since < oldest - 1 and since < self._rv:
                yield {"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 410,
                                                    "reason": "Expired", "message": f"too old resource version: {since} ({oldest - 1})"}}
                return
        assert self._changed is not None
        while not self.closing:
            for rv, r, kind, obj in list(self._log):
                if rv <= since:
                    continue
                since = rv
                if r != key_res or (request.namespace is not None and obj["metadata"].get("namespace") != request.namespace):
                    continue
                if not selector_matches(selector, obj["metadata"].get("labels") or {}):
                    continue
                if self.watch_delay:
                    await asyncio.sleep(self.watch_delay)
                yield {"type": kind, "object": obj}
                sent += 1
                if self.drop_watch_after is not None and sent >= self.drop_watch_after:
                    return  # a dropped watch: the client must resume from its last resourceVersion
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=min(remaining or 1.0, 1.0))
                except asyncio.TimeoutError:
                    pass

    # ------------------------------------------------------------------ in-process writes (kubelet)
    async def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any],
                         group: str = "", version: str = "v1") -> None:
        """What a kubelet's status update does; used by `FakeKubelet`, bypasses faults."""
        try:
            await self._update((group, version, plural), namespace, name, {"status": status}, "status", False)
        except ApiError:
            pass  # the pod went away meanwhile


class EmulatedCluster:
    """A FleetEmulator served over loopback HTTP from a background event loop, for synchronous code."""

    def __init__(self, **emulator_kwargs: Any) -> None:
        self.emulator = FleetEmulator(**emulator_kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kmock-emulator", daemon=True)
        self._server: kmock.Server | None = None
        self.url = ""

    def __enter__(self) -> "EmulatedCluster":
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        await self.emulator.__aenter__()
        self._server = kmock.Server(self.emulator)
        await self._server.__aenter__()
        self.url = str(self._server.url).rstrip("/")

    async def _stop(self) -> None:
        self.emulator.closing = True  # ends every open watch stream
        if self.emulator._changed is not None:
            async with self.emulator._changed:
                self.emulator._changed.notify_all()
        await asyncio.sleep(0.05)
        if self._server is not None:
            await self._server.__aexit__(None, None, None)
        try:
            await self.emulator.__aexit__(None, None, None)
        except BaseException:  # noqa: BLE001 - errors were already answered to the client
            pass

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.retries = 0
        configuration.connection_pool_maxsize = 128  # writer threads + watches share one pool
        return client.ApiClient(configuration)

    def set_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.run(self.emulator.set_status("pods", namespace, name, status))

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.run(self._snapshot("pods", namespace))

    async def _snapshot(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return self.emulator.objects(plural, namespace)

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.run(self._snapshot(plural, namespace))


class FakeKubelet:
    """Moves pending pods to Running (or an image-pull failure for images in `bad_images`) every
    `interval` seconds, through the status subresource as a kubelet would."""

    def __init__(self, cluster: EmulatedCluster, bad_images: set[str] | None = None, interval: float = 0.05) -> None:
        self.cluster = cluster
        self.bad_images = bad_images or set()
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)

    def __enter__(self) -> "FakeKubelet":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.cluster.run(self._tick(), timeout=10)
            except Exception:  # noqa: BLE001 - the cluster is shutting down
                return

    async def _tick(self) -> None:
        emulator = self.cluster.emulator
        for index, pod in enumerate(emulator.objects("pods")):
            if (pod.get("status") or {}).get("phase") or pod["metadata"].get("deletionTimestamp"):
                continue
            image = pod["spec"]["containers"][0]["image"]
            status = image_pull_failure() if image in self.bad_images else running_status(f"10.0.{index // 250}.{index % 250}")
            await emulator.set_status("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], status)


__all__ = ["ApiError", "EmulatedCluster", "FakeKubelet", "Fault", "FleetEmulator",
           "image_pull_failure", "running_status", "merge_patch", "selector_matches"]
