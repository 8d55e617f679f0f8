"""Environment setup: infer install strategies per language, build env images, classify failures.

A language plugs in by providing a `LanguageRecipes` (see `base.py`) and registering it in `RECIPES`;
Python is the first one. Go/JS/Rust/Java modules would add their own strategies and tooling layer.
"""

from envfarm.tasks.envsetup.base import RECIPES, LanguageRecipes, Strategy, recipes_for

__all__ = ["RECIPES", "LanguageRecipes", "Strategy", "recipes_for"]
