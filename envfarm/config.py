"""Settings from the environment, validated once, with the embedded defaults of a single machine."""

from __future__ import annotations

import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field

from envfarm.errors import EnvfarmError

DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
BASE_REPOSITORY = "envfarm/base"
DEFAULT_SUITE = "bookworm"


def base_image_for(suite: str) -> str:
    """The moving alias of the base image built from Debian `suite`: the one place base image names are made
    (`envfarm images build base --suite S` tags it; recipes, sandboxes and the miner name it)."""
    return f"{BASE_REPOSITORY}:{suite}"


def _state_dir() -> Path:
    return Path(os.environ.get("ENVFARM_HOME", ".envfarm")).resolve()


class Settings(BaseModel):
    """Everything configurable, read from ENVFARM_* variables (and DOCKER_HOST, as every Docker tool does)."""

    home: Path = Field(default_factory=_state_dir)
    db_url: str = ""
    docker_host: str = ""
    base_image: str = base_image_for(DEFAULT_SUITE)  # ENVFARM_BASE_IMAGE overrides it for every caller, the miner too
    debian_suite: str = DEFAULT_SUITE
    sandbox_memory: str = "2g"
    sandbox_cpus: float = 1.0
    sandbox_pids: int = 512
    sandbox_file_size_limit: int = 2 << 30  # RLIMIT_FSIZE per file: a runaway write stops here
    sandbox_tmpfs_size: str = "512m"
    ca_bundle: Path = Path("/etc/ssl/certs/ca-certificates.crt")

    @classmethod
    def from_env(cls) -> "Settings":
        """Each ENVFARM_* value is checked here, so a bad one is an error naming that variable and a good
        value, not an engine refusal later (or worse, accepted: Docker reads pids -1 and memory 0 as
        "unlimited", which would start sandboxes without limits)."""
        home = _state_dir()
        if home.exists() and not home.is_dir():
            raise EnvfarmError(f"ENVFARM_HOME={str(home)!r} is a file, not a directory",
                               "set ENVFARM_HOME to a directory for envfarm's state, e.g. ENVFARM_HOME=~/.envfarm")
        values: dict[str, object] = {"home": home}
        values["db_url"] = os.environ.get("ENVFARM_DB_URL") or f"sqlite:///{home / 'envfarm.db'}"
        values["docker_host"] = os.environ.get("DOCKER_HOST", "")
        for key, env, parse in _FROM_ENV:
            raw = os.environ.get(env)
            if raw is not None and raw.strip():
                values[key] = parse(env, raw.strip())
        return cls.model_validate(values)


def _bad(env: str, raw: str, what: str, example: str) -> EnvfarmError:
    return EnvfarmError(f"{env}={raw!r} is not valid: {what}", f"set e.g. {example}, or unset {env} for the default")


def _pids(env: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise _bad(env, raw, "the sandbox process limit must be a whole number >= 1", f"{env}=512")
    return value


def _cpus(env: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise _bad(env, raw, "the sandbox CPU share must be a number > 0 (fractions allowed)", f"{env}=1 or {env}=0.5")
    return value


_SIZE = re.compile(r"(\d+)([bkmg])", re.IGNORECASE)
_UNIT = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MIN_MEMORY = 6 << 20  # the smallest memory limit Docker and Podman accept


def _memory(env: str, raw: str) -> str:
    match = _SIZE.fullmatch(raw)
    if match is None:
        raise _bad(env, raw, "the sandbox memory limit must be a whole number with a unit b, k, m or g", f"{env}=2g or {env}=512m")
    if int(match[1]) * _UNIT[match[2].lower()] < MIN_MEMORY:
        raise _bad(env, raw, "the sandbox memory limit must be at least 6m", f"{env}=2g or {env}=512m")
    return raw.lower()


def _image(env: str, raw: str) -> str:
    if any(c.isspace() for c in raw):
        raise _bad(env, raw, "an image name has no spaces", f"{env}={base_image_for(DEFAULT_SUITE)}")
    return raw


# (field, variable, parser): every ENVFARM_* value Settings reads, each checked by its parser.
_FROM_ENV: tuple[tuple[str, str, Callable[[str, str], object]], ...] = (
    ("base_image", "ENVFARM_BASE_IMAGE", _image),
    ("sandbox_memory", "ENVFARM_SANDBOX_MEMORY", _memory),
    ("sandbox_cpus", "ENVFARM_SANDBOX_CPUS", _cpus),
    ("sandbox_pids", "ENVFARM_SANDBOX_PIDS", _pids),
)


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()
