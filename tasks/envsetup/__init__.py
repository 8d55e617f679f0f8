"""Environment setup: infer install strategies per language, build env images, classify failures.

The registry of languages lives here, next to the languages it registers; the types every language
implements live in `base.py`, which imports no language. A language plugs in by providing a
`LanguageRecipes` and calling `register`; Python is registered when this package is imported, so
registering another language (before or after) never hides it. Go/JS/Rust/Java modules would add
their own strategies and tooling layer as `tasks/envsetup/<language>.py`.
"""

from __future__ import annotations

from envfarm.errors import EnvfarmError
from envfarm.tasks.envsetup.base import BuildOptions, LanguageRecipes, Strategy
from envfarm.tasks.envsetup.python import PythonRecipes

RECIPES: dict[str, LanguageRecipes] = {}


def register(recipes: LanguageRecipes) -> None:
    """Make `recipes` the ones used for `recipes.language` (a later registration replaces an earlier one)."""
    RECIPES[recipes.language] = recipes


def recipes_for(language: str) -> LanguageRecipes:
    try:
        return RECIPES[language]
    except KeyError:
        raise EnvfarmError(
            f"no environment recipes for language {language!r}",
            f"mine one of: {', '.join(sorted(RECIPES))} (other languages plug in as tasks/envsetup/<language>.py)",
        ) from None


register(PythonRecipes())

__all__ = ["RECIPES", "BuildOptions", "LanguageRecipes", "Strategy", "register", "recipes_for"]
