"""The base image, made without any registry: debootstrap a minimal Debian and import it through the API.

Why debootstrap: no container registry is reachable from our machines, but Debian's package mirror is.
The result has python3, venv, pip, git and certificates, plus an unprivileged `agent` user (uid 1000)
that sandboxes run as where the image allows it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import docker

from envfarm.config import base_image_for, settings
from envfarm.engine import connect
from envfarm.errors import EnvfarmError
from envfarm.images.build import build_lock, image_exists

BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "git", "ca-certificates", "procps", "patch")
# The python3 each reachable Debian suite ships (buster and older are gone from the mirrors).
SUITE_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
RECIPE_VERSION = 2  # bump when the steps below change
AGENT_UID = 1000


def base_recipe_hash(suite: str, packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    doc = {"suite": suite, "packages": sorted(packages), "version": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def base_tags(suite: str | None = None) -> tuple[str, str]:
    """(content-hash tag, the moving alias that sandboxes and recipes name)."""
    suite = suite or settings().debian_suite
    return f"{base_image_for(suite)}-{base_recipe_hash(suite)}", base_image_for(suite)


def has_base(client: docker.DockerClient | None = None, suite: str | None = None) -> bool:
    client = client or connect()
    hashed, alias = base_tags(suite)
    return image_exists(client, hashed) and image_exists(client, alias)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise EnvfarmError(f"{what} failed: {' | '.join(tail)}", "check network access to Debian's mirror and that you are root")


def build_base(
    suite: str | None = None,
    client: docker.DockerClient | None = None,
    on_log: Callable[[str], None] = print,
) -> str:
    """Build and import the base image unless its hash tag exists; returns the alias tag."""
    suite = suite or settings().debian_suite
    if suite not in SUITE_PYTHON:
        raise EnvfarmError(f"unknown Debian suite {suite!r} for the base image",
                           f"use one of {', '.join(SUITE_PYTHON)} (older suites are gone from Debian's mirrors)")
    client = client or connect()
    hashed, alias = base_tags(suite)
    with build_lock(hashed):
        if image_exists(client, hashed):
            client.images.get(hashed).tag(*alias.split(":"))
            return alias
        if shutil.which("debootstrap") is None:
            raise EnvfarmError("debootstrap is not installed", "run 'make setup' (installs Debian's debootstrap)")
        with tempfile.TemporaryDirectory(prefix="envfarm-rootfs-", dir=str(settings().home.parent)) as tmp:
            rootfs = Path(tmp) / "rootfs"
            on_log(f"debootstrap {suite} (minbase + {', '.join(BASE_PACKAGES)}) into {rootfs} ...")
            _run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", suite, str(rootfs)],
                "debootstrap",
            )
            _run(["chroot", str(rootfs), "useradd", "-m", "-u", str(AGENT_UID), "-s", "/bin/bash", "agent"], "useradd agent")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(rootfs / junk, ignore_errors=True)
                (rootfs / junk).mkdir(parents=True, exist_ok=True)
            tarball = Path(tmp) / "rootfs.tar"
            _run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], "tar rootfs")
            on_log(f"importing {tarball.stat().st_size >> 20} MiB as {hashed} ...")
            repo, tag = hashed.split(":")
            changes = [
                'CMD ["/bin/bash"]',
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                # One LABEL per change: Podman reads "LABEL a=1 b=2" as a single label.
                "LABEL envfarm.io/kind=base",
                f"LABEL envfarm.io/recipe-hash={base_recipe_hash(suite)}",
                f"LABEL envfarm.io/user={AGENT_UID}",
            ]
            response = client.api.import_image_from_file(str(tarball), repository=repo, tag=tag, changes=changes)
            _tag_imported(client, response, hashed)
        if not image_exists(client, hashed):
            raise EnvfarmError(f"import of {hashed} produced no image", "check the engine's log")
        client.images.get(hashed).tag(*alias.split(":"))
        on_log(f"base image ready: {alias} ({hashed})")
        return alias


def _tag_imported(client: docker.DockerClient, response: object, ref: str) -> None:
    """Podman's compatible import ignores `tag`; find the new image id in the response and tag it ourselves."""
    if image_exists(client, ref):
        return
    ids = re.findall(r"(?:sha256:)?([0-9a-f]{64})", str(response))
    if not ids:
        return
    image = client.images.get(ids[-1])
    repo, tag = ref.split(":")
    image.tag(repo, tag)
    for stray in image.tags:
        if stray.endswith(":latest") and "envfarm/base" in stray:
            client.images.remove(stray, noprune=True)
