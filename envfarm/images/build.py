"""Build a recipe into the engine once: content-hash tags make the cache, a file lock de-duplicates builders.

Builds go through the Docker Engine API (`/build`), so the same code serves Docker and Podman. Builds
that install packages run with host networking and get the host's CA bundle and proxy settings, because a
TLS-intercepting proxy stands between our machines and the package registries.
"""

from __future__ import annotations

import fcntl
import io
import os
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import docker
from docker.errors import APIError, ImageNotFound

from envfarm.config import settings
from envfarm.engine import connect
from envfarm.errors import EnvfarmError, ImageMissing
from envfarm.images.recipe import ImageRecipe

HOST_CA_PATH = "/etc/ssl/certs/envfarm-host-ca.crt"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class ImageBuildError(EnvfarmError):
    """A build step failed; `log` holds the build output so callers can classify the failure."""

    def __init__(self, problem: str, fix: str = "", log: str = "") -> None:
        self.log = log
        super().__init__(problem, fix)


@dataclass(frozen=True)
class BuildResult:
    tag: str
    cached: bool
    seconds: float
    log: str = ""


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def image_id(client: docker.DockerClient, ref: str) -> str:
    try:
        return client.images.get(ref).id
    except ImageNotFound:
        raise ImageMissing(
            f"image {ref} is not in the engine",
            "run 'make setup' (base image) or 'envfarm images build' for the layer it needs",
        ) from None


def layer_bytes(tag: str, parent: str, client: docker.DockerClient | None = None) -> int:
    """What `tag` adds on top of `parent`, in bytes (the engine's image sizes; 0 if it reports less)."""
    client = client or connect()
    try:
        return max(0, int(client.images.get(tag).attrs.get("Size", 0)) - int(client.images.get(parent).attrs.get("Size", 0)))
    except ImageNotFound as exc:
        raise ImageMissing(f"image {exc.explanation or tag} is not in the engine", "build it first (envfarm images build)") from None


@contextmanager
def build_lock(key: str) -> Iterator[None]:
    """Serialise builds of one tag across processes on this host (Ray workers share the engine)."""
    lock_dir = settings().home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{key.replace('/', '_').replace(':', '_')}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _context(recipe: ImageRecipe, dockerfile: str, ca_bundle: bytes | None) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", dockerfile.encode())
        for index, (_path, content) in enumerate(recipe.files):
            add(f"file{index}", content)
        if ca_bundle is not None:
            add("host-ca.crt", ca_bundle)
    buffer.seek(0)
    return buffer


def ensure_image(
    recipe: ImageRecipe,
    client: docker.DockerClient | None = None,
    on_log: Callable[[str], None] | None = None,
    timeout: float = 3600,
) -> BuildResult:
    """Return the recipe's tag, building it only if no image with that content hash exists yet."""
    client = client or connect()
    parent = image_id(client, recipe.parent)
    tag = recipe.tag(parent)
    if image_exists(client, tag):
        return BuildResult(tag, cached=True, seconds=0.0)
    with build_lock(tag):
        if image_exists(client, tag):  # another worker built it while we waited
            return BuildResult(tag, cached=True, seconds=0.0)
        return _build(client, recipe, tag, on_log, timeout)


def _build(
    client: docker.DockerClient,
    recipe: ImageRecipe,
    tag: str,
    on_log: Callable[[str], None] | None,
    timeout: float,
) -> BuildResult:
    extra_env: dict[str, str] = {}
    ca_bundle: bytes | None = None
    ca_path = settings().ca_bundle
    if recipe.network and ca_path.exists():
        ca_bundle = ca_path.read_bytes()
        extra_env = {
            "PIP_CERT": HOST_CA_PATH,
            "SSL_CERT_FILE": HOST_CA_PATH,
            "REQUESTS_CA_BUNDLE": HOST_CA_PATH,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
    dockerfile = recipe.dockerfile(extra_env)
    if ca_bundle is not None:
        dockerfile = dockerfile.replace("\n", f"\nCOPY host-ca.crt {HOST_CA_PATH}\n", 1)
    labels = {
        "envfarm.io/kind": recipe.kind,
        "envfarm.io/name": recipe.name,
        "envfarm.io/recipe-hash": tag.rsplit(":", 1)[1],
        "envfarm.io/parent": recipe.parent,
    }
    buildargs = {k: v for k in PROXY_VARS if (v := os.environ.get(k))} if recipe.network else {}
    started = time.monotonic()
    log: list[str] = []
    try:
        stream = client.api.build(
            fileobj=_context(recipe, dockerfile, ca_bundle),
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            labels=labels,
            buildargs=buildargs,
            network_mode="host" if recipe.network else "none",
            decode=True,
            timeout=int(timeout),
        )
        for chunk in stream:
            line = chunk.get("stream") or chunk.get("status") or ""
            if line:
                log.append(line)
                if on_log:
                    on_log(line.rstrip())
            if "error" in chunk or "errorDetail" in chunk:
                message = chunk.get("error") or str(chunk.get("errorDetail"))
                log.append(message)
                raise ImageBuildError(
                    f"building {tag} failed: {message.strip()[:300]}",
                    "read the build log above; fix the recipe step that failed",
                    log="".join(log),
                )
    except APIError as exc:
        raise ImageBuildError(
            f"building {tag} failed: {exc.explanation or exc}", "read the build log", log="".join(log)
        ) from None
    if not image_exists(client, tag):
        raise ImageBuildError(f"building {tag} produced no image", "read the build log", log="".join(log))
    return BuildResult(tag, cached=False, seconds=time.monotonic() - started, log="".join(log))
