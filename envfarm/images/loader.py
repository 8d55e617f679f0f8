"""Recipes from YAML files, validated, so `envfarm images build FILE` can build any layer by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envfarm.config import settings
from envfarm.errors import EnvfarmError
from envfarm.userfiles import load_yaml
from envfarm.images.recipe import ImageRecipe


class RecipeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["env", "instance"]
    name: str
    parent: str = Field(default_factory=lambda: settings().base_image)
    steps: list[str] = []
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    workdir: str | None = None
    user: str | None = None
    network: bool = False


def load_recipe(path: str | Path) -> ImageRecipe:
    path = Path(path)
    fields = "fields: kind, name, parent, steps, files, env, workdir, user, network"
    data = load_yaml(path, "recipe", "pass 'base' or the path of a recipe YAML file")
    try:
        doc = RecipeFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "top level"
        raise EnvfarmError(f"recipe {path} is invalid at {loc}: {first['msg']}", f"fix the file ({fields})") from None
    return ImageRecipe(
        kind=doc.kind,
        name=doc.name,
        parent=doc.parent,
        steps=tuple(doc.steps),
        files=tuple((p, c.encode()) for p, c in doc.files.items()),
        env=tuple(doc.env.items()),
        workdir=doc.workdir,
        user=doc.user,
        network=doc.network,
    )
