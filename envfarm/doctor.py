"""`envfarm doctor`: every dependency checked, each missing one printed with the command that fixes it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from envfarm.config import settings
from envfarm.errors import EnvfarmError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _engine() -> Check:
    from envfarm.engine import connect, engine_url

    try:
        client = connect()
        version = client.version()
        name = (version.get("Components") or [{}])[0].get("Name", "engine")
        return Check("container engine", True, f"{name} {version.get('Version', '?')} at {engine_url()}")
    except EnvfarmError as exc:
        return Check("container engine", False, exc.problem, exc.fix)


def _base_image() -> Check:
    from envfarm.engine import connect
    from envfarm.images.base import base_tags, has_base

    try:
        ok = has_base(connect())
    except EnvfarmError as exc:
        return Check("base image", False, exc.problem, exc.fix)
    hashed, alias = base_tags()
    return Check("base image", ok, f"{alias} ({hashed})" if ok else f"{hashed} is missing", "" if ok else "make setup")


def _interpreters() -> Check:
    """Which Python minors this machine can give a task environment: a Debian base per suite (built now,
    or buildable on demand with debootstrap), and every other minor only where uv may download them."""
    from envfarm.engine import connect
    from envfarm.images.base import SUITE_PYTHON, has_base

    try:
        client = connect()
        built = [f"{python} ({suite})" for suite, python in SUITE_PYTHON.items() if has_base(client, suite)]
    except EnvfarmError as exc:
        return Check("interpreters", False, exc.problem, exc.fix)
    missing = [f"{python} ({suite})" for suite, python in SUITE_PYTHON.items() if f"{python} ({suite})" not in built]
    detail = f"built: {', '.join(built) or 'none'}"
    if missing:
        how = "built on demand when a task needs one" if shutil.which("debootstrap") else "need debootstrap to be built"
        detail += f"; {', '.join(missing)} {how}"
    downloads = os.environ.get("ENVFARM_PYTHON_DOWNLOADS", "") in ("1", "true", "yes")
    detail += ("; other minors (3.6-3.14) from uv downloads" if downloads else
               "; other minors: none (set ENVFARM_PYTHON_DOWNLOADS=1 where uv can download interpreters)")
    return Check("interpreters", bool(built) or shutil.which("debootstrap") is not None, detail,
                 "" if built else "envfarm images build base --suite bookworm")


def _store() -> Check:
    from envfarm.store.db import Store, redact

    try:
        Store(settings().db_url, migrate=False)
        return Check("store", True, redact(settings().db_url))
    except EnvfarmError as exc:
        return Check("store", False, exc.problem, exc.fix)


def _browser() -> Check:
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if chromium is None:
        return Check("browser", False, "Debian's chromium is not installed", "make setup (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        return Check("browser", False, "playwright is not installed in the venv", "make setup")
    import playwright

    browsers = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    try:
        revision = next(b["revision"] for b in json.loads(browsers.read_text())["browsers"] if b["name"] == "ffmpeg")
    except (OSError, StopIteration, KeyError, ValueError):
        return Check("browser", True, f"{chromium} (could not read Playwright's ffmpeg revision)")
    ffmpeg = Path.home() / ".cache" / "ms-playwright" / f"ffmpeg-{revision}" / "ffmpeg-linux"
    if not ffmpeg.exists():
        return Check("browser", False, f"{chromium}; no ffmpeg at {ffmpeg} (video recording off)", "make setup")
    return Check("browser", True, f"{chromium}; video via {ffmpeg}")


def _ray() -> Check:
    if importlib.util.find_spec("ray") is None:
        return Check("ray", False, "ray is not installed in the venv", "make setup")
    import ray

    address = os.environ.get("RAY_ADDRESS", "local (started on demand)")
    return Check("ray", True, f"ray {ray.__version__}, cluster: {address}")


def _tool(name: str, package: str) -> Check:
    path = shutil.which(name)
    return Check(name, path is not None, path or f"{name} not found", "" if path else f"make setup (apt-get install {package})")


def run_checks() -> list[Check]:
    return [
        _engine(),
        _base_image(),
        _interpreters(),
        _store(),
        _browser(),
        _ray(),
        _tool("debootstrap", "debootstrap"),
        _tool("kubectl", "kubernetes-client"),
        _tool("ffmpeg", "ffmpeg"),
    ]
