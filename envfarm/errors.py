"""One error type that carries the fix, so every command can print a single actionable line."""

from __future__ import annotations


class EnvfarmError(Exception):
    """A problem the user can act on: `problem` says what went wrong, `fix` says what to do."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.problem} (fix: {self.fix})" if self.fix else self.problem


class EngineUnavailable(EnvfarmError):
    """The container engine's Docker API cannot be reached."""


class ImageMissing(EnvfarmError):
    """An image a sandbox or build needs is not present in the engine."""


class SandboxError(EnvfarmError):
    """A sandbox operation failed for a reason other than the command's own exit code."""


class PatchError(SandboxError):
    """A unified diff did not apply; `hunk` names the first hunk that failed."""

    def __init__(self, problem: str, fix: str = "", hunk: str = "") -> None:
        self.hunk = hunk
        super().__init__(problem, fix)


class StoreError(EnvfarmError):
    """The store cannot be opened or a write was rejected."""
