"""The backend-agnostic sandbox contract.

Everything above this module (the miner's validation, the verifiers, the agent scaffold) talks to a
`Sandbox`; the Docker/Podman backend and the Kubernetes backend both implement it, so a rollout or a
validation runs unchanged on a laptop and on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

DEFAULT_OUTPUT_LIMIT = 1 << 20  # 1 MiB of combined stdout+stderr, then a marker
TRUNCATION_MARKER = "\n[envfarm: output truncated at {limit} bytes]\n"
TIMEOUT_EXIT_CODE = 124  # same convention as coreutils `timeout`


@dataclass(frozen=True)
class ExecResult:
    """What one command produced. `timed_out` implies exit_code == TIMEOUT_EXIT_CODE."""

    exit_code: int
    output: str
    truncated: bool
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@runtime_checkable
class Sandbox(Protocol):
    """An isolated place to run commands against one task's repository.

    Implementations must: enforce the timeout by killing the whole process tree; cap combined output
    at `output_limit` bytes and say so in `truncated`; never raise for a non-zero exit code (that is a
    result, not an error); raise `envfarm.errors.SandboxError` for infrastructure failures.
    """

    id: str

    def exec(
        self,
        cmd: str | list[str],
        timeout: float = 60.0,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> ExecResult: ...

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None: ...

    def read_file(self, path: str) -> bytes: ...

    def apply_patch(self, diff: str, workdir: str | None = None) -> None:
        """Apply a unified diff; raise `PatchError` naming the failing hunk."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> "Sandbox": ...

    def __exit__(self, *exc: object) -> None: ...
