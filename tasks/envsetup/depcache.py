"""Tooling layers from Debian packages, and pre-filled dependency caches (a Go module cache, a cargo home) packed into them.

Why a tar with zeroed times and owners: the tooling layer's tag is a hash of its files, so the same
cache must give the same bytes on every run, or every mining run would rebuild every env.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from envfarm.errors import EnvfarmError
from envfarm.images.recipe import ImageRecipe


def cache_tar(variable: str, must_have: str, what: str, fix: str, tops: tuple[str, ...] = ("",)) -> bytes | None:
    """The folder named by the environment variable `variable` (its `tops` subfolders) as stable tar bytes.

    None when the variable is unset; an EnvfarmError naming the variable when the folder lacks `must_have`.
    """
    path = os.environ.get(variable, "")
    if not path:
        return None
    root = Path(path)
    if not (root / must_have).is_dir():
        raise EnvfarmError(f"{variable}={path} is not {what} (no {must_have} folder in it)", fix)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for top in tops:
            base = root / top
            for item in sorted(base.rglob("*")) if base.is_dir() else []:
                if not (item.is_file() or item.is_dir()) or item.is_symlink():
                    continue
                info = tar.gettarinfo(str(item), arcname=str(item.relative_to(root)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if item.is_file():
                    with item.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def debian_tooling(name: str, base_image: str, packages: str, check: str, cache: bytes | None, cache_file: str, cache_dir: str) -> ImageRecipe:
    """A tooling layer: Debian `packages` installed over the base (`check` proves them), plus a pre-filled
    dependency cache (tar bytes, `cache_file` in the image) unpacked into `cache_dir` when given."""
    steps = [f"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {packages}"
             " > /tmp/apt.log 2>&1 || { tail -n 20 /tmp/apt.log; exit 1; };"
             f" rm -rf /var/lib/apt/lists/* /tmp/apt.log && mkdir -p {cache_dir} && {check}"]
    if cache:
        steps.append(f"tar -C {cache_dir} -xf {cache_file} && rm -f {cache_file}")
    return ImageRecipe(kind="env", name=name, parent=base_image, network=True, steps=tuple(steps),
                       files=((cache_file, cache),) if cache else ())
