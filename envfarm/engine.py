"""Connection to the container engine through the Docker Engine API (Docker, or Podman's compatible socket)."""

from __future__ import annotations

import os
import threading

import docker
from docker.errors import DockerException

from envfarm.config import DEFAULT_SOCKETS, settings
from envfarm.errors import EngineUnavailable

_lock = threading.Lock()
_clients: dict[str, docker.DockerClient] = {}


def engine_url() -> str:
    """DOCKER_HOST if set, else the first local socket that exists (Docker's, then Podman's)."""
    if settings().docker_host or os.environ.get("DOCKER_HOST"):
        return os.environ.get("DOCKER_HOST") or settings().docker_host
    for path in DEFAULT_SOCKETS:
        if os.path.exists(path):
            return f"unix://{path}"
    return f"unix://{DEFAULT_SOCKETS[-1]}"


def connect(url: str | None = None, timeout: int = 120) -> docker.DockerClient:
    """A pinged client, shared per URL; one clear error when the engine is not there."""
    url = url or engine_url()
    with _lock:
        client = _clients.get(url)
        if client is not None:
            return client
        try:
            client = docker.DockerClient(base_url=url, timeout=timeout)
            client.ping()
        except (DockerException, OSError) as exc:
            raise EngineUnavailable(
                f"no container engine answers at {url} ({type(exc).__name__})",
                "run 'make setup' to start Podman's Docker-API socket, or set DOCKER_HOST to a running engine",
            ) from None
        _clients[url] = client
        return client
