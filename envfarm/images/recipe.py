"""A layered image described as data, hashed into its tag."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Literal

ImageKind = Literal["base", "env", "instance"]
_SLUG_RE = re.compile(r"[^a-z0-9_.-]+")


def slug(text: str) -> str:
    """A tag-safe name for a repository or version ('psf/requests' -> 'psf__requests')."""
    return _SLUG_RE.sub("-", text.lower().replace("/", "__")).strip("-.") or "x"


@dataclass(frozen=True)
class ImageRecipe:
    """One layer: a parent image plus files and RUN steps.

    `files` are copied into the image before the steps run (path in image -> content). `network` is
    needed by steps that install packages; everything else builds without network.
    """

    kind: ImageKind
    name: str
    parent: str
    steps: tuple[str, ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    user: str | None = None
    network: bool = False
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def recipe_hash(self, parent_id: str = "") -> str:
        """Content hash over everything that changes the result, the parent's image id included."""
        doc = {
            "kind": self.kind,
            "parent": self.parent,
            "parent_id": parent_id,
            "steps": list(self.steps),
            "files": [[p, hashlib.sha256(c).hexdigest()] for p, c in self.files],
            "env": [list(e) for e in self.env],
            "workdir": self.workdir,
            "user": self.user,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def tag(self, parent_id: str = "") -> str:
        return f"envfarm/{self.kind}.{slug(self.name)}:{self.recipe_hash(parent_id)}"

    def dockerfile(self, extra_env: dict[str, str] | None = None) -> str:
        lines = [f"FROM {self.parent}"]
        for key, value in self.labels:
            lines.append(f"LABEL {key}={json.dumps(value)}")
        for index, (path, _content) in enumerate(self.files):
            lines.append(f"COPY file{index} {path}")
        for key, value in list(self.env) + sorted((extra_env or {}).items()):
            lines.append(f"ENV {key}={json.dumps(value)}")
        if self.steps:
            lines.append("USER root")
        for step in self.steps:
            lines.append(f"RUN {step}")
        if self.workdir:
            lines.append(f"WORKDIR {self.workdir}")
        if self.user:
            lines.append(f"USER {self.user}")
        return "\n".join(lines) + "\n"
