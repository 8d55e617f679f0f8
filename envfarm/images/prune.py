"""Remove images nothing needs: env/instance layers no task in the store references.

Base images are kept unless `remove_all`: they are expensive to rebuild (debootstrap) and any suite's
base may be named by recipes that are not in this store yet.
"""

from __future__ import annotations

import docker
from docker.errors import APIError, NotFound
from sqlalchemy import select

from envfarm.images.base import base_tags
from envfarm.store.db import Store
from envfarm.store.models import TaskRow


def referenced_tags(store: Store) -> set[str]:
    with store.session() as session:
        tags = set(session.scalars(select(TaskRow.image)))
        env_tags: set[str] = set()
        for spec in session.scalars(select(TaskRow.spec)):
            if isinstance(spec, dict):
                install = spec.get("install") if isinstance(spec.get("install"), dict) else {}
                env_tags |= {spec.get("env_image") or "", install.get("env_image") or "", install.get("base_image") or ""}
    return {t for t in tags | env_tags if t}


def prune(
    client: docker.DockerClient,
    store: Store,
    remove_all: bool = False,
    dry_run: bool = False,
    name_prefix: str = "",
) -> list[str]:
    """`name_prefix` limits pruning to images whose envfarm.io/name starts with it (one repository, say)."""
    keep = set() if remove_all else referenced_tags(store) | set(base_tags())
    removed: list[str] = []
    images = [
        image
        for image in client.images.list(filters={"label": "envfarm.io/kind"})
        if (image.labels or {}).get("envfarm.io/name", "").startswith(name_prefix)
        and (remove_all or (image.labels or {}).get("envfarm.io/kind") != "base")
    ]
    # Instances first, then env, then base: children before parents so removal is not refused.
    order = {"instance": 0, "env": 1, "base": 2}
    images.sort(key=lambda image: order.get((image.labels or {}).get("envfarm.io/kind", ""), 3))
    for image in images:
        # Tags, not images: identical recipes under different names share one image id (the engine's
        # layer cache), so one image can carry a kept tag and a stale one; only the stale tag goes.
        for tag in image.tags or []:
            if _short(tag) in keep:
                continue
            if not dry_run:
                try:
                    client.images.remove(tag)
                except NotFound:
                    continue
                except APIError:  # still used by a container or a child image
                    continue
            removed.append(tag)
    return removed


def _short(tag: str) -> str:
    """The tag as envfarm names it (engines may report docker.io/ or localhost/ prefixes)."""
    for prefix in ("docker.io/", "localhost/"):
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return tag
