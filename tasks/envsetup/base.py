"""What every language's environment recipes provide. The registry that picks one lives in the package
(`envfarm.tasks.envsetup`), so this module imports no language and no language imports the registry."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

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
    plan: Any = None  # the language's own description of the attempt (hashable), which its repairs change


@dataclass(frozen=True)
class BuildOptions:
    """Knobs that hold for a whole mining run."""

    base_image: str = field(default_factory=lambda: settings().base_image)  # ENVFARM_BASE_IMAGE reaches the miner here
    wheelhouse: tuple[tuple[str, bytes], ...] = ()  # (file name, wheel bytes) copied into the env layer
    offline: bool = False  # no package index: install only from the wheelhouse
    time_cap: bool = True  # resolve dependencies as of the later of the task's and the base commit's date (uv --exclude-newer)
    float_tools: bool = False  # exempt build and test tooling from the cap from the start (else only as a repair when resolution fails)
    build_timeout: float = 1800.0
    # uv may download managed interpreters (users with internet); off: only the Debian bases' 3.9/3.11/3.13.
    python_downloads: bool = field(default_factory=lambda: os.environ.get("ENVFARM_PYTHON_DOWNLOADS", "") in ("1", "true", "yes"))
    build_bases: bool = True  # build a missing Debian interpreter base (bullseye/bookworm/trixie) when a recipe needs it (never offline)
    max_repairs: int = 4  # repair steps after one strategy's first failure
    max_builds: int = 10  # env builds per (repository, version), repairs included
    # Optional model stage after the rule-based repairs (tasks/envsetup/agent_repair.py): a factory of agent policies
    # (`act` or `chat`, e.g. envfarm.agent.openai_chat.OpenAIChatPolicy); None, the default, leaves it off.
    agent_policy: Callable[[], Any] | None = None


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


class Repairable(Protocol):
    """Optional for a language: what the repair loop and the pre-build refusal call (see python.py)."""

    def repair(self, strategy: Strategy, log: str, options: BuildOptions) -> Strategy | None:
        """`strategy` changed in one specific way that answers the failure in `log`, or None."""
        ...

    def refusal(self, mirror: Mirror, commit: str) -> tuple[str, str] | None:
        """(reason class, reason) when the repository is not mined at all."""
        ...
