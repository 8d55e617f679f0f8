"""A stand-in for the exec API's WSClient that runs the argv as a local process (or through
`podman exec`), so KubernetesSandbox's protocol handling runs against real processes."""

from __future__ import annotations

import select
import subprocess
from pathlib import Path


class LocalExec:
    """The WSClient surface KubernetesSandbox uses, backed by a local process running the argv."""

    def __init__(self, argv: list[str], root: Path) -> None:
        if argv[:2] in (["tar", "-x"], ["tar", "-c"]) and root != Path("/"):
            argv = [*argv[:-2], str(root), argv[-1]] if argv[:2] == ["tar", "-c"] else [*argv[:-1], str(root)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out, self.err = b"", b""

    def write_stdin(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    def close_channel(self, channel: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def is_open(self) -> bool:
        return self.proc.poll() is None or self._readable(0)

    def _readable(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.proc.stdout, self.proc.stderr], [], [], timeout)
        for stream in ready:
            chunk = stream.read1(65536)
            if stream is self.proc.stdout:
                self.out += chunk
            else:
                self.err += chunk
        return any(ready) and bool(self.out or self.err)

    def update(self, timeout: float = 0) -> None:
        self._readable(timeout)

    def read_stdout(self, timeout: float = 0) -> bytes:
        out, self.out = self.out, b""
        return out

    def read_stderr(self, timeout: float = 0) -> bytes:
        err, self.err = self.err, b""
        return err

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
