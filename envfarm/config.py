"""Settings from the environment, validated once, with the embedded defaults of a single machine."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

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
        home = _state_dir()
        values: dict[str, object] = {"home": home}
        values["db_url"] = os.environ.get("ENVFARM_DB_URL") or f"sqlite:///{home / 'envfarm.db'}"
        values["docker_host"] = os.environ.get("DOCKER_HOST", "")
        for key, env in (
            ("base_image", "ENVFARM_BASE_IMAGE"),
            ("sandbox_memory", "ENVFARM_SANDBOX_MEMORY"),
            ("sandbox_cpus", "ENVFARM_SANDBOX_CPUS"),
            ("sandbox_pids", "ENVFARM_SANDBOX_PIDS"),
        ):
            if os.environ.get(env):
                values[key] = os.environ[env]
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()
