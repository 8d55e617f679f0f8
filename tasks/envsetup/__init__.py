"""Environment setup: infer install strategies per language, build env images, classify failures.

The registry of languages lives here, next to the languages it registers; the types every language
implements live in `base.py`, which imports no language. A language plugs in by providing a
`LanguageRecipes` and calling `register`; Python is registered when this package is imported, so
registering another language (before or after) never hides it. Other languages live in
`tasks/envsetup/<language>.py`, named in `LANGUAGE_MODULES`, and register themselves on first use.
"""

from __future__ import annotations

import importlib

from envfarm.errors import EnvfarmError
from envfarm.tasks.envsetup.base import BuildOptions, LanguageRecipes, Strategy
from envfarm.tasks.envsetup.python import PythonRecipes

RECIPES: dict[str, LanguageRecipes] = {}


def register(recipes: LanguageRecipes) -> None:
    """Make `recipes` the ones used for `recipes.language` (a later registration replaces an earlier one)."""
    RECIPES[recipes.language] = recipes


# Languages whose module registers itself when first asked for (so importing this package stays cheap
# and a module that is missing or broken costs only its own language, with a clear line).
LANGUAGE_MODULES: dict[str, str] = {
    "javascript": "envfarm.tasks.envsetup.javascript",
    "typescript": "envfarm.tasks.envsetup.javascript",
    "go": "envfarm.tasks.envsetup.go",
    "rust": "envfarm.tasks.envsetup.rust",
}


def recipes_for(language: str) -> LanguageRecipes:
    if language not in RECIPES and language in LANGUAGE_MODULES:
        try:
            importlib.import_module(LANGUAGE_MODULES[language])  # registers the language's recipes
        except ModuleNotFoundError as exc:
            if exc.name != LANGUAGE_MODULES[language]:
                raise
    try:
        return RECIPES[language]
    except KeyError:
        raise EnvfarmError(
            f"no environment recipes for language {language!r}",
            f"mine one of: {', '.join(sorted(set(RECIPES) | set(LANGUAGE_MODULES)))} (other languages plug in as tasks/envsetup/<language>.py)",
        ) from None


def known_languages() -> list[str]:
    """Every language with recipes registered or a module that registers them."""
    return sorted(set(RECIPES) | set(LANGUAGE_MODULES))


register(PythonRecipes())

__all__ = ["LANGUAGE_MODULES", "RECIPES", "BuildOptions", "LanguageRecipes", "Strategy", "known_languages", "register", "recipes_for"]
