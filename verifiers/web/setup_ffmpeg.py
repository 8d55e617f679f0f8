"""Link Debian's ffmpeg where Playwright looks for its own, so video recording works offline.

`playwright install` cannot download here; Playwright only needs *an* ffmpeg at
`<browsers path>/ffmpeg-<revision>/ffmpeg-linux`, with the revision pinned in the driver's browsers.json.
Reading the revision (rather than hard-coding 1013) keeps this right across Playwright upgrades.
Idempotent: re-running leaves a correct link alone and repairs a wrong one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from envfarm.errors import EnvfarmError


def playwright_browsers_json() -> Path:
    import playwright

    return Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"


def ffmpeg_revision(browsers_json: Path | None = None) -> str:
    path = browsers_json or playwright_browsers_json()
    try:
        entries = json.loads(path.read_text())["browsers"]
    except (OSError, KeyError, ValueError) as exc:
        raise EnvfarmError(
            f"cannot read the ffmpeg revision from {path}: {exc}",
            "reinstall playwright into the venv (pip install playwright==<pinned version>)",
        ) from exc
    for entry in entries:
        if entry.get("name") == "ffmpeg":
            return str(entry["revision"])
    raise EnvfarmError(f"{path} names no ffmpeg entry", "check the playwright version pinned in pyproject.toml")


def browsers_root() -> Path:
    """Playwright's own lookup rule: PLAYWRIGHT_BROWSERS_PATH, else ~/.cache/ms-playwright."""
    env = os.environ.get("PLAYWRIGHT_BROWSERS_PATH")
    if env and env != "0":
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ms-playwright"


def ffmpeg_link_path() -> Path:
    return browsers_root() / f"ffmpeg-{ffmpeg_revision()}" / "ffmpeg-linux"


def ensure_ffmpeg_link(system_ffmpeg: str | None = None) -> Path:
    """Create (or repair) the link and return its path."""
    source = system_ffmpeg or shutil.which("ffmpeg")
    if not source:
        raise EnvfarmError("ffmpeg is not installed", "apt-get install ffmpeg (or run make setup)")
    source_path = Path(source).resolve()
    link = ffmpeg_link_path()
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() == source_path:
            return link
        link.unlink()
    link.symlink_to(source_path)
    # Playwright checks for a marker file before trusting a browser directory; harmless if unused.
    (link.parent / "INSTALLATION_COMPLETE").touch()
    return link


def video_ready() -> bool:
    """True when Playwright will find an ffmpeg it can run (used by tests to skip with a reason)."""
    try:
        link = ffmpeg_link_path()
    except EnvfarmError:
        return False
    return link.exists() and os.access(link, os.X_OK)


def main() -> int:
    try:
        link = ensure_ffmpeg_link()
    except EnvfarmError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 1
    print(f"ffmpeg for Playwright: {link} -> {link.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
