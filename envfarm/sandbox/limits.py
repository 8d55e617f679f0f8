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
    # The per-sandbox process limit: the container's pids cgroup. RLIMIT_NPROC is not used as one: the
    # kernel counts it per host uid, and every sandbox's agent is uid 1000, so a limit of pids*4 let one
    # saturated sandbox make a fresh one fail "Cannot fork" (issue #13). `nproc=None` sets it to the
    # engine's own ceiling so that only the cgroup binds.
    pids: int = field(default_factory=lambda: int(settings().sandbox_pids))
    file_size: int = field(default_factory=lambda: settings().sandbox_file_size_limit)
    tmpfs_size: str = field(default_factory=lambda: settings().sandbox_tmpfs_size)
    # Every place the sandbox can write is a tmpfs of at most this size (the image's content copied in),
    # and the root filesystem is read-only: overlay on ext4 has no quota, so a writable layer was unbounded
    # (5 x 1.9 GB files took 9.5 GB of host disk). tmpfs pages count against `memory`, so that is the total.
    writable_size: str = "1g"
    nofile: int = 4096
    nproc: int | None = None
    network: bool = False
