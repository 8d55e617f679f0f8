"""The explorer's corpus: pages written the way models write them, each correct, with broken twins.

    webcorpus/<page>/index.html     the correct page
    webcorpus/<page>/variants.yaml  prompt, rubric (plain words), and each broken twin as exact text
                                    replacements of the correct page, with its class and the text its
                                    failure must name (a substring of one failed check)

Twins are replacements so that each differs from its correct page by the one subtle bug it is about
(a test checks every replacement matches exactly once). CDN imports name three@0.160.0, chart.js@4
and p5@1.9.4 on unpkg, jsDelivr and esm.sh; tests and the benchmark serve them from the fake registry
(fake_npm.py), never from a host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

CORPUS = Path(__file__).parent / "webcorpus"
CLASSES = ("handler_on_wrong_element", "animation_paused", "missing_export", "layout_broken", "state_not_updating",
           "error_after_interaction", "error_on_load", "webgl_setup_throws")


@dataclass
class CorpusPage:
    page: str
    variant: str  # "correct" or the twin's name
    cls: str  # "correct" or one of CLASSES
    rubric: str
    expect: str  # for a twin: a substring of one of its failed checks
    html: str

    @property
    def correct(self) -> bool:
        return self.variant == "correct"

    @property
    def key(self) -> str:
        return f"{self.page}/{self.variant}"

    def write(self, root: Path) -> Path:
        folder = root / self.page / self.variant
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text(self.html)
        return folder


def apply(html: str, replace: list[list[str]], where: str) -> str:
    for old, new in replace:
        count = html.count(old)
        if count != 1:
            raise ValueError(f"{where}: replacement text found {count} times (needs exactly one): {old[:80]!r}")
        html = html.replace(old, new)
    return html


def load(names: list[str] | None = None) -> list[CorpusPage]:
    out = []
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        if names is not None and folder.name not in names:
            continue
        spec = yaml.safe_load((folder / "variants.yaml").read_text())
        html = (folder / "index.html").read_text()
        rubric = spec.get("rubric", "")
        out.append(CorpusPage(folder.name, "correct", "correct", rubric, "", html))
        for name, twin in (spec.get("broken") or {}).items():
            cls = twin["class"]
            if cls not in CLASSES:
                raise ValueError(f"{folder.name}/{name}: unknown class {cls}")
            out.append(CorpusPage(folder.name, name, cls, rubric, twin["expect"], apply(html, twin["replace"], f"{folder.name}/{name}")))
    return out
