"""Resource limits of one sandbox, whatever the backend.

The Docker backend applies them to the container it creates; on Kubernetes the pod's resources come from
the SandboxFleet's pod template (the controller made the pod before anyone asked for it), so a claimant's
limits cannot change them and `open()` says so instead of ignoring them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envfarm.config import settings


@dataclass(frozen=True)
class SandboxLimits:
    memory: str = field(default_factory=lambda: settings().sandbox_memory)
    cpus: float = field(default_factory=lambda: float(settings().sandbox_cpus))
    pids: int = field(default_factory=lambda: int(settings().sandbox_pids))
    file_size: int = field(default_factory=lambda: settings().sandbox_file_size_limit)
    tmpfs_size: str = field(default_factory=lambda: settings().sandbox_tmpfs_size)
    nofile: int = 4096
    network: bool = False
