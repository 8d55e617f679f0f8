"""npm packages for the offline CDN shim: registry metadata, version resolution, and a
content-addressed cache of unpacked tarballs.

Pages under test import from CDNs (unpkg, jsDelivr, esm.sh, ...), and every one of those serves files
out of npm tarballs. So the shim needs only the npm registry, which our machines reach (a cluster
without it is filled beforehand with `envfarm verify cdn-prefetch`). Layout under the cache root
(ENVFARM_HOME/cdn by default):

    meta/<name>.json        the registry's abbreviated metadata (dist-tags, versions, dist), kept so that
                            resolution works with no registry at all
    tarballs/<algo>-<hex>.tgz   each tarball once, named by its `dist.integrity` (checked on download)
    files/<algo>-<hex>/     the tarball unpacked, its top folder (usually `package/`) stripped

Versions resolve as the CDNs resolve them: a dist-tag (`latest`, `next`), an exact version, or an npm
range read by npm's rules (`^0.160.0` is >=0.160.0 <0.161.0; PEP 440 reads carets not at all) through
`node-semver`, a port of npm's own resolver; the highest satisfying version wins.

ENVFARM_NPM_REGISTRY=off never asks a registry (an air-gapped cluster with a prefetched cache, where a
connection attempt could hang until its timeout): the stored metadata and tarballs are all there is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import ssl
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import nodesemver

from envfarm.errors import EnvfarmError

DEFAULT_REGISTRY = "https://registry.npmjs.org"
OFFLINE = ("off", "none", "offline")  # ENVFARM_NPM_REGISTRY values that mean: the cache alone
ABBREVIATED = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
META_FRESH_S = 600.0  # stored metadata younger than this is used without asking the registry
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # the host's bundle: the registry sits behind a TLS proxy


class PackageNotFound(EnvfarmError):
    """The package, version or range does not exist (the CDN would answer 404)."""


class RegistryUnavailable(EnvfarmError):
    """The registry could not be reached and nothing usable is cached."""


def _cache_root() -> Path:
    return Path(os.environ.get("ENVFARM_HOME", ".envfarm")).resolve() / "cdn"


def _tls() -> ssl.SSLContext | bool:
    bundle = os.environ.get("SSL_CERT_FILE") or (str(CA_BUNDLE) if CA_BUNDLE.is_file() else "")
    return ssl.create_default_context(cafile=bundle) if bundle else True


def integrity_key(dist: dict[str, Any]) -> tuple[str, str, str]:
    """(file key, hashlib algorithm, expected hex digest) from a version's `dist`: its strongest
    `integrity` (sha512 for anything published since 2017), else the legacy sha1 `shasum`."""
    for entry in str(dist.get("integrity", "")).split():
        algo, _, b64 = entry.partition("-")
        if algo in ("sha512", "sha384", "sha256") and b64:
            digest = base64.b64decode(b64).hex()
            return f"{algo}-{digest}", algo, digest
    if dist.get("shasum"):
        return f"sha1-{dist['shasum']}", "sha1", str(dist["shasum"])
    raise EnvfarmError(f"registry metadata gives no integrity for {dist.get('tarball')}", "check the registry answers the npm metadata format")


class NpmCache:
    """Thread-safe: verifications running side by side share one cache."""

    def __init__(self, root: Path | None = None, registry: str | None = None, client: httpx.Client | None = None) -> None:
        self.root = Path(root) if root is not None else _cache_root()
        self.registry = (registry or os.environ.get("ENVFARM_NPM_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")
        self.offline = self.registry.lower() in OFFLINE
        self._client = client
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._meta: dict[str, dict[str, Any]] = {}

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0), verify=_tls(), follow_redirects=True)
        return self._client

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    # -- metadata ---------------------------------------------------------------------------------
    def metadata(self, name: str) -> dict[str, Any]:
        """The package's metadata: from memory, from the stored copy while fresh, else the registry
        (stored again); a stale stored copy is still used when the registry cannot be reached."""
        if name in self._meta:
            return self._meta[name]
        path = self.root / "meta" / f"{quote(name, safe='@')}.json"
        with self._lock("meta:" + name):
            stored = json.loads(path.read_text()) if path.is_file() else None
            if stored is not None and (self.offline or time.time() - path.stat().st_mtime < META_FRESH_S):
                self._meta[name] = stored
                return stored
            if self.offline:
                raise RegistryUnavailable(f"{name} is not in the offline CDN cache {self.root}", "run `envfarm verify cdn-prefetch` for it where the registry is reachable, and copy the cache over")
            url = f"{self.registry}/{quote(name, safe='@')}"
            try:
                resp = self.client.get(url, headers={"Accept": ABBREVIATED})
            except httpx.HTTPError as exc:
                if stored is not None:
                    self._meta[name] = stored
                    return stored
                raise RegistryUnavailable(
                    f"npm registry {self.registry} unreachable for {name} ({type(exc).__name__})",
                    "run `envfarm verify cdn-prefetch` where the registry is reachable, or set ENVFARM_NPM_REGISTRY",
                ) from exc
            if resp.status_code == 404:
                raise PackageNotFound(f"npm package {name} does not exist", "check the package name in the page's CDN URL")
            if resp.status_code >= 400:
                if stored is not None:
                    return stored
                raise RegistryUnavailable(f"npm registry answered HTTP {resp.status_code} for {name}", "retry later, or prefetch the package")
            meta = resp.json()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(meta))
            tmp.replace(path)
            self._meta[name] = meta
            return meta

    def resolve(self, name: str, spec: str = "") -> str:
        """The version a CDN serves for `name@spec`: dist-tag, exact version, or highest in the range."""
        meta = self.metadata(name)
        versions = list(meta.get("versions", {}))
        spec = spec.strip() or "latest"
        tags = meta.get("dist-tags", {})
        if spec in tags:
            return tags[spec]
        if spec in meta.get("versions", {}):
            return spec
        try:
            best = nodesemver.max_satisfying(versions, spec, loose=True)
        except (ValueError, TypeError):  # node-semver raises ValueError on a spec that is not a range
            best = None
        if best is None:
            raise PackageNotFound(f"no version of {name} matches {spec!r}", f"use one of its dist-tags {sorted(tags)} or a published version")
        return best

    # -- files ------------------------------------------------------------------------------------
    def package_dir(self, name: str, version: str) -> Path:
        """The unpacked package folder, downloading and checking the tarball the first time."""
        info = self.metadata(name).get("versions", {}).get(version)
        if info is None:
            raise PackageNotFound(f"{name}@{version} is not published", "check the version in the page's CDN URL")
        dist = info.get("dist", {})
        key, algo, digest = integrity_key(dist)
        files = self.root / "files" / key
        if files.is_dir():
            return files
        with self._lock("files:" + key):
            if files.is_dir():
                return files
            tarball = self.root / "tarballs" / f"{key}.tgz"
            if not tarball.is_file():
                self._download(dist["tarball"], tarball, algo, digest, f"{name}@{version}")
            self._unpack(tarball, files)
        return files

    def _download(self, url: str, dest: Path, algo: str, digest: str, what: str) -> None:
        if self.offline:
            raise RegistryUnavailable(f"the tarball of {what} is not in the offline CDN cache {self.root}", "run `envfarm verify cdn-prefetch` for it where the registry is reachable")
        try:
            resp = self.client.get(url)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"tarball of {what} unreachable at {url} ({type(exc).__name__})", "prefetch the package where the registry is reachable") from exc
        if resp.status_code != 200:
            raise RegistryUnavailable(f"tarball of {what} answered HTTP {resp.status_code}", "retry later, or prefetch the package")
        if hashlib.new(algo, resp.content).hexdigest() != digest:
            raise EnvfarmError(f"tarball of {what} does not match its registry integrity ({algo})", "the registry or a proxy altered it: retry, or clear the cache entry")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(resp.content)
        tmp.replace(dest)

    def _unpack(self, tarball: Path, dest: Path) -> None:
        """Unpack into a temporary sibling, then rename: a reader never sees half a package."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
            tops = [p for p in tmp.iterdir()]
            # npm strips the tarball's single top folder (`package/` almost always; some use the name).
            src = tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp
            src.replace(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def prefetch(self, name: str, spec: str = "") -> tuple[str, Path]:
        """Resolve and fetch one package; force fresh metadata so the cache can resolve offline later."""
        self._meta.pop(name, None)
        path = self.root / "meta" / f"{quote(name, safe='@')}.json"
        if path.is_file():
            os.utime(path, (0, 0))  # stale: ask the registry again
        version = self.resolve(name, spec)
        return version, self.package_dir(name, version)


def split_spec(text: str) -> tuple[str, str]:
    """`three@^0.160`, `@scope/pkg@1`, `pkg` -> (name, spec)."""
    at = text.find("@", 1)
    return (text, "") if at < 0 else (text[:at], text[at + 1 :])
