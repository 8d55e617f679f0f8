"""Which language a repository is mined as, read from its files at a commit (no API, no work tree).

Why manifests first and file counts second: GitHub's language bar counts bytes, so a Go service with
a large vendored JavaScript UI reads as JavaScript; the manifest at the root says how the project is
built and tested, which is what an environment recipe needs. Evidence, strongest first:

1. root manifests: `go.mod` (go), `Cargo.toml` (rust), `package.json` (javascript, or typescript when
   `.ts` sources outnumber `.js` ones and a root `tsconfig.json` or a `typescript` dependency says the
   project compiles them), `pyproject.toml` / `setup.py` /
   `setup.cfg` (python);
2. several root manifests (a Python package with a package.json for its docs tooling): the language
   with the most source files (by extension, vendored and generated folders left out) among those
   the manifests name;
3. no manifest: the language with the most source files, when it has at least `MIN_SOURCE_FILES`.

A repository where none of this names a language gets a `LanguageUndetected` with a reason class, so
the miner records one line against the repository and goes on with the batch.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from envfarm.errors import EnvfarmError
from envfarm.tasks.mirror import Mirror

# The languages envfarm knows how to name (recipes may exist for fewer: see envfarm.tasks.envsetup).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "python": (".py",),
    "javascript": (".js", ".mjs", ".cjs", ".jsx"),
    "typescript": (".ts", ".mts", ".cts", ".tsx"),
    "go": (".go",),
    "rust": (".rs",),
    "java": (".java",),
    "ruby": (".rb",),
}
MANIFESTS: dict[str, str] = {
    "go.mod": "go",
    "Cargo.toml": "rust",
    "package.json": "javascript",
    "pyproject.toml": "python",
    "setup.py": "python",
    "setup.cfg": "python",
    "pom.xml": "java",
    "build.gradle": "java",
    "build.gradle.kts": "java",
    "Gemfile": "ruby",
}
# Folders whose files say nothing about the project's own language.
IGNORED_DIRS = frozenset({"node_modules", "vendor", "third_party", "third-party", "dist", "build", "docs", "doc",
                          "examples", "example", "fixtures", "__fixtures__", "testdata", ".github", "website"})
MIN_SOURCE_FILES = 3


class LanguageUndetected(EnvfarmError):
    """Nothing in the repository names a language envfarm knows; `reason_class` goes to the funnel."""

    def __init__(self, problem: str, fix: str = "", reason_class: str = "language_undetected") -> None:
        self.reason_class = reason_class
        super().__init__(problem, fix)


@dataclass(frozen=True)
class Detection:
    """A repository's language and the evidence for it (stored with the repository's funnel row)."""

    language: str
    evidence: str
    source_files: dict[str, int] = field(default_factory=dict)


def family(language: str) -> str:
    """The recipe family: TypeScript builds and tests with the JavaScript toolchain."""
    return "javascript" if language == "typescript" else language


def source_counts(paths: list[str]) -> Counter[str]:
    """Source files per language, leaving out vendored, generated and documentation folders."""
    by_ext = {ext: lang for lang, exts in EXTENSIONS.items() for ext in exts}
    counts: Counter[str] = Counter()
    for path in paths:
        parts = path.split("/")
        if any(p in IGNORED_DIRS or p.startswith(".") for p in parts[:-1]):
            continue
        name = parts[-1]
        if name.endswith(".d.ts"):
            continue  # type declarations ship with JavaScript packages too
        lang = by_ext.get(posixpath.splitext(name)[1])
        if lang:
            counts[lang] += 1
    return counts


def _is_typescript(package_json: bytes | None, paths: set[str], counts: Counter[str]) -> bool:
    """More .ts than .js sources, and the project compiles TypeScript (a root tsconfig.json or a typescript
    dependency). A tsconfig alone is not enough: axios keeps one for its type tests over JavaScript sources."""
    if counts["typescript"] <= counts["javascript"]:
        return False
    if "tsconfig.json" in paths:
        return True
    try:
        manifest = json.loads(package_json or b"{}")
    except ValueError:
        manifest = {}
    deps = {**(manifest.get("dependencies") or {}), **(manifest.get("devDependencies") or {})} if isinstance(manifest, dict) else {}
    return "typescript" in deps


def detect(paths: list[str], read: Callable[[str], bytes | None]) -> Detection:
    """The language of a tree given its file list and a reader for root files (see the module docstring)."""
    if not paths:
        raise LanguageUndetected("the repository has no files at this commit", "check the clone URL and the branch", "empty_repository")
    counts = source_counts(paths)
    root = {p for p in paths if "/" not in p}
    named = list(dict.fromkeys(MANIFESTS[m] for m in MANIFESTS if m in root))
    ts = _is_typescript(read("package.json") if "package.json" in root else None, root, counts)

    def refine(lang: str) -> str:
        return "typescript" if lang == "javascript" and ts else lang

    if len(named) == 1:
        return Detection(refine(named[0]), f"root manifest {next(m for m in MANIFESTS if m in root and MANIFESTS[m] == named[0])}", dict(counts))
    if len(named) > 1:
        def weight(lang: str) -> int:
            return counts[lang] + (counts["typescript"] if lang == "javascript" else 0)
        best = max(named, key=lambda lang: (weight(lang), -named.index(lang)))
        return Detection(refine(best), f"manifests for {', '.join(named)}; most source files are {refine(best)}", dict(counts))
    if counts:
        lang, n = counts.most_common(1)[0]
        if n >= MIN_SOURCE_FILES:
            return Detection(lang, f"no manifest; {n} {lang} source files", dict(counts))
    seen = ", ".join(f"{n} {lang}" for lang, n in counts.most_common(3)) or "no source file of a known language"
    raise LanguageUndetected(
        f"cannot tell the repository's language: no root manifest ({', '.join(sorted(MANIFESTS))}) and {seen}",
        "name the language for this repository (envfarm mine --language LANG, or 'owner/name URL language=LANG' in the repository list)",
    )


def detect_language(mirror: Mirror, commit: str) -> Detection:
    """The repository's language at `commit`, read from the bare mirror."""
    return detect(mirror.ls(commit), lambda path: mirror.read(commit, path))
