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
    When `exec` returns (success, timeout or error) no process it started may still run; a backend
    that offers long-lived background processes does so only on an explicit request (DockerSandbox:
    `exec(..., detach=True)`). Arguments are checked with the helpers below before anything starts.
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


# -- argument checks every backend applies before anything starts in the sandbox ------------------
# Added for issue #13: a bad argument used to surface as a raw ValueError/OverflowError *after* the
# command had started (timeout=nan|inf|1e12), or silently did the wrong thing (write_file("") reported
# success; a trailing "/" replaced a directory with a file). One SandboxError with the fix, up front.
MAX_TIMEOUT = 7 * 24 * 3600.0  # a week: anything longer is a bug in the caller, not a test suite
DEFAULT_READ_LIMIT = 64 << 20  # read_file refuses files larger than this unless the caller raises it
DEFAULT_WRITE_LIMIT = 2 << 30  # write_file payload cap where the backend has no per-file limit of its own


def check_timeout(timeout: object) -> float:
    """A finite number of seconds in (0, MAX_TIMEOUT], or SandboxError naming the fix."""
    import math

    from envfarm.errors import SandboxError

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise SandboxError(f"timeout must be a positive number of seconds, got {timeout!r}", "pass e.g. timeout=60")
    if not math.isfinite(timeout) or timeout <= 0 or timeout > MAX_TIMEOUT:
        raise SandboxError(f"timeout must be a positive number of seconds up to {MAX_TIMEOUT:g}, got {timeout!r}",
                           "pass a finite timeout such as timeout=60")
    return float(timeout)


def check_limit(name: str, value: object) -> int:
    """A positive int byte count (output_limit, max_bytes), or SandboxError."""
    from envfarm.errors import SandboxError

    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SandboxError(f"{name} must be a positive number of bytes, got {value!r}", f"pass e.g. {name}={1 << 20}")
    return value


def check_file_path(path: object) -> str:
    """A path that can name a regular file: a non-empty str without NUL and not ending in '/'."""
    from envfarm.errors import SandboxError

    if not isinstance(path, str) or not path.strip():
        raise SandboxError(f"a file path is needed, got {path!r}", "pass a path such as '/testbed/fix.py'")
    if "\0" in path:
        raise SandboxError(f"file path {path!r} contains a NUL byte", "pass a plain path")
    if path.endswith("/") or path.endswith("/.") or path in (".", ".."):
        raise SandboxError(f"{path!r} names a directory, not a file", "pass the file's path, e.g. 'dir/name.txt'")
    return path


def payload_bytes(data: object, limit: int) -> bytes:
    """str (UTF-8) or a bytes-like payload of at most `limit` bytes, or SandboxError."""
    from envfarm.errors import SandboxError

    if isinstance(data, str):
        payload = data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        payload = bytes(data)
    else:
        raise SandboxError(f"write_file takes str or bytes, got {type(data).__name__}",
                           "encode the payload first, e.g. json.dumps(obj).encode()")
    if len(payload) > limit:
        raise SandboxError(f"payload of {len(payload)} bytes is over the sandbox's per-file limit of {limit} bytes",
                           "write a smaller file, or raise SandboxLimits.file_size")
    return payload
