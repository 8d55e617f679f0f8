"""Importing a third-party package that an optional extra brings, with one clear error when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from envfarm.errors import EnvfarmError

# extra name -> (distribution, import name)
EXTRAS = {
    "openenv": ("openenv-core", "openenv"),
    "mini-swe-agent": ("mini-swe-agent", "minisweagent"),
}


def require(extra: str) -> ModuleType:
    """The extra's top-level module, or EnvfarmError naming the `pip install` line that brings it."""
    distribution, module = EXTRAS[extra]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EnvfarmError(f"the {extra} integration needs {distribution}, which cannot be imported ({exc})",
                           f"pip install 'envfarm[{extra}]'") from None
