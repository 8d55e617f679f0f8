"""Recipes from YAML files, validated, so `envfarm images build FILE` can build any layer by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envfarm.config import settings
from envfarm.errors import EnvfarmError
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
    if not path.exists():
        raise EnvfarmError(f"recipe file {path} does not exist", "pass 'base' or the path of a recipe YAML file")
    if not path.is_file():
        raise EnvfarmError(f"recipe file {path} is not a file", "pass 'base' or the path of a recipe YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise EnvfarmError(f"cannot read recipe file {path}: {exc.strerror or exc}", "check the path and its permissions") from None
    except UnicodeDecodeError as exc:
        raise EnvfarmError(f"recipe {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
                           "save the recipe as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())[:200]
        raise EnvfarmError(f"recipe {path} is not valid YAML: {problem}{where}", "fix the YAML syntax") from None
    if data is None:
        raise EnvfarmError(f"recipe {path} is empty", f"write a recipe mapping ({fields})")
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
