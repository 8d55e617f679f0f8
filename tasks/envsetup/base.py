"""What every language's environment recipes provide. The registry that picks one lives in the package
(`envfarm.tasks.envsetup`), so this module imports no language and no language imports the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from envfarm.config import settings
from envfarm.images.recipe import ImageRecipe
from envfarm.tasks.mirror import Mirror


@dataclass(frozen=True)
class Strategy:
    """One way to install a repository; the first strategy that installs and collects tests wins."""

    name: str
    python: str
    install: tuple[str, ...]  # shell commands, run as root in /testbed during the env build
    test_cmd: str
    log_parser: str
    exclude_newer: str | None = None
    base_image: str = field(default_factory=lambda: settings().base_image)  # a base whose system Python is `python` needs no download
    env: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class BuildOptions:
    """Knobs that hold for a whole mining run."""

    base_image: str = field(default_factory=lambda: settings().base_image)  # ENVFARM_BASE_IMAGE reaches the miner here
    wheelhouse: tuple[tuple[str, bytes], ...] = ()  # (file name, wheel bytes) copied into the env layer
    offline: bool = False  # no package index: install only from the wheelhouse
    time_cap: bool = True  # resolve dependencies as of the task's date (uv --exclude-newer)
    float_tools: bool = True  # ...except build and test tooling (setuptools, pytest, ...), which must run on today's Python
    build_timeout: float = 1800.0


class LanguageRecipes(Protocol):
    language: str

    def version(self, mirror: Mirror, commit: str) -> str:
        """A short name for the dependency state at `commit`: commits with the same one share an env."""
        ...

    def strategies(self, mirror: Mirror, commit: str, date: str | None, options: BuildOptions) -> list[Strategy]:
        """Install strategies for the repository at `commit`, most likely to work first."""
        ...

    def tooling(self, base_image: str) -> ImageRecipe:
        """The layer under every env of this language (package managers, interpreters)."""
        ...

    def env_steps(self, strategy: Strategy, collect_paths: list[str], options: BuildOptions) -> list[str]:
        """RUN steps that install the strategy into /testbed and prove tests can be collected."""
        ...
