"""The offline CDN shim: answer a page's CDN requests from npm tarballs cached locally.

The browser's request gate (runner.py) hands every request that is not to the app's own origin to
`CdnShim.answer`; what it cannot answer stays blocked. URL forms understood:

    https://unpkg.com/NAME[@SPEC][/PATH][?module]
    https://cdn.jsdelivr.net/npm/NAME[@SPEC][/PATH]     (also fastly. / gcore. / testingcf.jsdelivr.net)
    https://esm.sh/[vNNN/][stable/]NAME[@SPEC][/PATH][?...]
    https://cdn.skypack.dev/NAME[@SPEC][/PATH]
    https://cdnjs.cloudflare.com/ajax/libs/LIB/VERSION/PATH
    https://fonts.googleapis.com/css?family=... and /css2?family=...

Each CDN's conventions, as far as this shim follows them:
- unpkg and jsDelivr serve the package's files as published. A range or tag (`three@^0.160`, `three`)
  or a path without extension (`/build/three.module`) is resolved to the exact file. Where the CDNs
  answer with a 302 to the exact URL, the shim answers with the file itself at the URL asked for: a
  redirect fulfilled by the request gate is followed by Chromium without passing the gate again (it
  went to the network, seen with Playwright 1.65), which would break the rule that nothing outside is
  reachable. So that relative imports inside an ES module still reach the right files when the path
  changed (an entry file picked from package.json), they are rewritten to the exact URL. With no
  path: unpkg uses package.json `unpkg`, then `main` (`?module`: `module` first); jsDelivr uses
  `jsdelivr`, then `browser` (a string), then `main`; both fall back to index.js.
- esm.sh and Skypack build ES modules. The shim does not bundle or convert CommonJS: it serves the
  package's own ES module (package.json `exports` with browser/import/module/default conditions, then
  `module`, then `main`) and rewrites its bare imports (`from "three"`) to the same CDN at the range the
  package's dependencies name (`/three@>=0.150`; a file importing its own package gets its own
  version), as esm.sh does; a package URL whose file lies elsewhere (`esm.sh/three@0.160`) is answered,
  like esm.sh, with a module that re-exports the exact file, so every range that resolves to one
  version shares one module instance. Query options (`?bundle`, `?deps=`,
  `?target=`) are ignored. A CommonJS-only package served this way fails in the page, as it would with a
  CDN that serves files raw; the evidence records what was served.
- jsDelivr's `/+esm` (after a package or a file) is treated as esm.sh treats the same URL, its bare
  imports pointing at `/npm/DEP@RANGE/+esm`.
- cdnjs names libraries its own way: LIB maps to the npm package of that name without a `.js` suffix
  (`three.js` -> three, `lodash.js` -> lodash), `rNNN` versions (three's old tags) to 0.NNN.0, and
  PATH is looked up as published, then under `build/`, `dist/`, `umd/`.
- Google Fonts cannot be served offline. Its CSS is answered with `@font-face` rules that map each
  requested family to local system fonts (`local()` sources: DejaVu / Liberation), so text renders in a
  fallback face and no font file is fetched; the evidence says so.

Every answer is recorded (CdnRecord): served (with the exact package@version/path), not found (the
CDN would 404 too), a font fallback, or blocked because neither the registry nor the cache had the
package.
"""

from __future__ import annotations

import json
import mimetypes
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit

from envfarm.errors import EnvfarmError
from envfarm.verifiers.web.npm import NpmCache, PackageNotFound, RegistryUnavailable

JSDELIVR_HOSTS = {"cdn.jsdelivr.net", "fastly.jsdelivr.net", "gcore.jsdelivr.net", "testingcf.jsdelivr.net"}
ESM_CDNS = {"esm.sh", "skypack"}
CDNJS_ALIASES = {"three.js": "three", "lodash.js": "lodash", "Chart.js": "chart.js", "chart.js": "chart.js", "p5.js": "p5", "vue": "vue"}
CDNJS_PREFIXES = ("", "build/", "dist/", "umd/")
FALLBACK_FONTS = ("DejaVu Sans", "Liberation Sans", "DejaVu Serif", "Liberation Serif")

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".cjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".wasm": "application/wasm",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
    ".svg": "image/svg+xml",
    ".glsl": "text/plain; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


def content_type(path: str) -> str:
    for suffix, kind in CONTENT_TYPES.items():
        if path.endswith(suffix):
            return kind
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


@dataclass
class CdnRef:
    """One CDN URL read as npm coordinates."""

    cdn: str  # unpkg | jsdelivr | esm.sh | skypack | cdnjs
    name: str
    spec: str  # as written: "", a tag, a version, a range
    path: str  # inside the package, no leading slash; "" for the entry file
    base: str  # the URL prefix before NAME, to build exact URLs with
    module: bool = False  # unpkg ?module, jsDelivr /+esm


_PKG = re.compile(r"^((?:@[^/@]+/)?[^/@]+)(?:@([^/]*))?(?:/(.*))?$")


def parse_cdn_url(url: str) -> CdnRef | None:
    """The npm coordinates of a CDN URL, or None when it is no CDN form this shim knows."""
    parts = urlsplit(url)
    host, path = parts.hostname or "", unquote(parts.path)
    query = parse_qs(parts.query, keep_blank_values=True)
    if host == "unpkg.com":
        cdn, base, rest = "unpkg", "https://unpkg.com/", path[1:]
    elif host in JSDELIVR_HOSTS and path.startswith("/npm/"):
        cdn, base, rest = "jsdelivr", f"https://{host}/npm/", path[len("/npm/") :]
    elif host == "esm.sh":
        rest = re.sub(r"^/(?:v\d+/)?(?:stable/)?\*?", "", path)
        cdn, base = "esm.sh", "https://esm.sh/"
    elif host == "cdn.skypack.dev":
        rest = re.sub(r"^/(?:-/)?", "", path)
        cdn, base = "skypack", "https://cdn.skypack.dev/"
    elif host == "cdnjs.cloudflare.com":
        m = re.match(r"^/ajax/libs/([^/]+)/([^/]+)/(.+)$", path)
        if not m:
            return None
        lib, version, file = m.groups()
        name = CDNJS_ALIASES.get(lib, lib[:-3] if lib.endswith(".js") else lib)
        if re.fullmatch(r"r\d+", version):
            version = f"0.{version[1:]}.0"
        return CdnRef("cdnjs", name, version, file, f"https://cdnjs.cloudflare.com/ajax/libs/{lib}/")
    else:
        return None
    m = _PKG.match(rest)
    if not m or not m.group(1):
        return None
    name, spec, file = m.group(1), m.group(2) or "", m.group(3) or ""
    module = "module" in query
    if cdn == "jsdelivr" and (file.rstrip("/") == "+esm" or file.endswith("/+esm")):
        file, module = file.rstrip("/")[: -len("+esm")].rstrip("/"), True
    return CdnRef(cdn, name, spec, file, base, module)


def is_google_fonts(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("fonts.googleapis.com", "fonts.gstatic.com")


@dataclass
class CdnRecord:
    url: str
    cdn: str
    outcome: str  # served | not_found | blocked | font_fallback
    served: str = ""  # name@version/path
    status: int = 0
    content_type: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CdnAnswer:
    """What to fulfil the request with; `status` 0 means abort it (blocked)."""

    status: int
    record: CdnRecord
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _headers(kind: str, served: str) -> dict[str, str]:
    return {"content-type": kind, "access-control-allow-origin": "*", "cache-control": "public, max-age=31536000", "x-envfarm-cdn-shim": served}


def _entry_fields(cdn: str, module: bool) -> list[str]:
    if cdn == "unpkg":
        return ["module", "main"] if module else ["unpkg", "main"]
    if cdn == "jsdelivr":
        return ["module", "main"] if module else ["jsdelivr", "browser", "main"]
    return ["module", "main"]


def _export_target(value: Any) -> str | None:
    """The browser-side file of an `exports` entry: conditions in the order a browser bundler picks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return next((t for t in map(_export_target, value) if t), None)
    if isinstance(value, dict):
        for cond in ("browser", "import", "module", "default"):
            if cond in value:
                target = _export_target(value[cond])
                if target:
                    return target
    return None


def _exports_lookup(exports: Any, subpath: str) -> str | None:
    """Resolve `./sub` through package.json `exports` (exact keys, then one-`*` patterns)."""
    if exports is None:
        return None
    if isinstance(exports, (str, list)) or (isinstance(exports, dict) and not any(k.startswith(".") for k in exports)):
        exports = {".": exports}
    if subpath in exports:
        return _export_target(exports[subpath])
    for key, value in exports.items():
        if "*" in key:
            head, _, tail = key.partition("*")
            if subpath.startswith(head) and subpath.endswith(tail) and len(subpath) >= len(head) + len(tail):
                star = subpath[len(head) : len(subpath) - len(tail)]
                target = _export_target(value)
                if target:
                    return target.replace("*", star)
    return None


def _find_file(root: Path, path: str) -> str | None:
    """unpkg's lookup of a path as written: the file, then with .js/.mjs/.json, then a folder's index."""
    for candidate in (path, f"{path}.js", f"{path}.mjs", f"{path}.json", f"{path}/index.js", f"{path}/index.mjs"):
        candidate = candidate.strip("/")
        if candidate and (root / candidate).is_file() and (root / candidate).resolve().is_relative_to(root.resolve()):
            return candidate
    return None


_IMPORT = re.compile(r"""(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\bexport\s*\*\s*from\s*)(["'])([^"'\n]+)\2""")


def rewrite_bare_imports(source: str, package: dict[str, Any], base: str, suffix: str = "") -> str:
    """esm.sh's rewrite, by pattern: `from "dep/sub"` -> `from "/dep@RANGE/sub"` on the same CDN.

    Relative, absolute and URL specifiers are left alone. A pattern, not a parser: an import-like text
    inside a string or comment is rewritten too, which changes nothing a page can observe."""
    ranges: dict[str, str] = {}
    for key in ("optionalDependencies", "peerDependencies", "dependencies"):
        ranges.update(package.get(key) or {})
    if package.get("name") and package.get("version"):
        ranges[package["name"]] = package["version"]  # a file importing its own package (three's addons do)
    prefix = urlsplit(base).path  # "/" for esm.sh and skypack

    def repl(m: re.Match[str]) -> str:
        spec = m.group(3)
        if spec.startswith((".", "/")) or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", spec):
            return m.group(0)
        pieces = spec.split("/")
        name = "/".join(pieces[:2]) if spec.startswith("@") else pieces[0]
        sub = spec[len(name) :]
        rng = ranges.get(name, "")
        target = f"{prefix}{name}@{quote(rng, safe='^~<>=|*. ') if rng else 'latest'}{sub}{suffix}"
        return f"{m.group(1)}{m.group(2)}{target}{m.group(2)}"

    return _IMPORT.sub(repl, source)


def rewrite_relative_imports(source: str, exact_url: str) -> str:
    """`from "./x.js"` -> `from "<exact_url's folder>/x.js"`, for a file served at a URL other than its own."""

    def repl(m: re.Match[str]) -> str:
        spec = m.group(3)
        if not spec.startswith(("./", "../")):
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}{urljoin(exact_url, spec)}{m.group(2)}"

    return _IMPORT.sub(repl, source)


def google_fonts_css(url: str) -> str:
    """Local stand-ins for the families a Google Fonts CSS URL asks for."""
    query = parse_qs(urlsplit(url).query)
    families: list[str] = []
    for value in query.get("family", []):
        for fam in value.split("|"):
            name = fam.split(":")[0].replace("+", " ").strip()
            if name and name not in families:
                families.append(name)
    sources = ", ".join(f"local('{f}')" for f in FALLBACK_FONTS)
    rules = "\n".join(f"@font-face {{ font-family: '{f}'; src: {sources}; font-display: swap; }}" for f in families)
    return f"/* envfarm offline CDN shim: Google Fonts is not reachable; {', '.join(families) or 'no family'} fall back to local fonts */\n{rules}\n"


class CdnShim:
    """Answers CDN URLs from an NpmCache. Blocking (registry, disk): call it from a thread."""

    def __init__(self, cache: NpmCache | None = None) -> None:
        self.cache = cache or NpmCache()

    def handles(self, url: str) -> bool:
        return parse_cdn_url(url) is not None or is_google_fonts(url)

    def answer(self, url: str) -> CdnAnswer | None:
        """None for a URL that is no CDN form (the gate blocks it as any other)."""
        if is_google_fonts(url):
            return self._fonts(url)
        ref = parse_cdn_url(url)
        if ref is None:
            return None
        try:
            return self._package(url, ref)
        except PackageNotFound as exc:
            return CdnAnswer(404, CdnRecord(url[:300], ref.cdn, "not_found", f"{ref.name}@{ref.spec}", 404, "text/plain", exc.problem), exc.problem.encode(), _headers("text/plain; charset=utf-8", ""))
        except (RegistryUnavailable, EnvfarmError, OSError) as exc:
            detail = exc.problem if isinstance(exc, EnvfarmError) else f"{type(exc).__name__}: {exc}"
            return CdnAnswer(0, CdnRecord(url[:300], ref.cdn, "blocked", f"{ref.name}@{ref.spec}", 0, "", detail[:300]))

    def _fonts(self, url: str) -> CdnAnswer:
        host = urlsplit(url).hostname
        if host == "fonts.gstatic.com":
            return CdnAnswer(0, CdnRecord(url[:300], "google-fonts", "blocked", detail="font files are not available offline"))
        css = google_fonts_css(url)
        kind = "text/css; charset=utf-8"
        rec = CdnRecord(url[:300], "google-fonts", "font_fallback", "local fonts", 200, kind, css.splitlines()[0][3:-3])
        return CdnAnswer(200, rec, css.encode(), _headers(kind, "local fonts"))

    def _package(self, url: str, ref: CdnRef) -> CdnAnswer:
        version = self.cache.resolve(ref.name, ref.spec)
        root = self.cache.package_dir(ref.name, version)
        package = json.loads((root / "package.json").read_text()) if (root / "package.json").is_file() else {}
        esm = ref.cdn in ESM_CDNS or (ref.cdn == "jsdelivr" and ref.module)
        if ref.cdn == "cdnjs":
            path = next((p + ref.path for p in CDNJS_PREFIXES if _find_file(root, p + ref.path) == p + ref.path), None)
            if path is None:
                raise PackageNotFound(f"{ref.name}@{version} has no file {ref.path} (also looked under {', '.join(CDNJS_PREFIXES[1:])})", "check the file name in the cdnjs URL")
            return self._file(url, ref, version, root, path, package, esm=False)
        path = self._path(ref, root, package, esm)
        return self._file(url, ref, version, root, path, package, esm)

    def _path(self, ref: CdnRef, root: Path, package: dict[str, Any], esm: bool) -> str:
        wanted = ref.path.strip("/")
        if esm:
            target = _exports_lookup(package.get("exports"), "./" + wanted if wanted else ".")
            if target:
                wanted = target[2:] if target.startswith("./") else target.lstrip("/")
        if not wanted:
            fields = _entry_fields(ref.cdn, ref.module)
            picked = next((package[f] for f in fields if isinstance(package.get(f), str) and package[f].strip()), "index.js")
            wanted = picked[2:] if picked.startswith("./") else picked.lstrip("/")
        found = _find_file(root, wanted)
        if found is None:
            raise PackageNotFound(f"{ref.name} has no file {wanted}", "check the file path in the CDN URL")
        return found

    def _file(self, url: str, ref: CdnRef, version: str, root: Path, path: str, package: dict[str, Any], esm: bool) -> CdnAnswer:
        body = (root / path).read_bytes()
        kind = content_type(path)
        served = f"{ref.name}@{version}/{path}"
        notes = [f"{ref.spec or 'no version'} resolved to {version}"] if ref.spec != version else []
        moved = ref.cdn != "cdnjs" and ref.path.strip("/") != path
        if esm and moved and kind.startswith("text/javascript"):
            # esm.sh's own answer for a package URL: a module re-exporting the exact file, so every
            # range or tag that resolves to one version shares one module instance (one three.js).
            exact = f"{ref.base}{ref.name}@{version}/{path}{'/+esm' if ref.cdn == 'jsdelivr' else ''}"
            text = body.decode("utf-8", errors="replace")
            stub = f'export * from "{exact}";\n'
            if re.search(r"\bexport\s+default\b|\bas\s+default\b", text):
                stub += f'export {{ default }} from "{exact}";\n'
            notes.append(f"entry stub re-exporting {exact}")
            rec = CdnRecord(url[:300], ref.cdn, "served", served, 200, kind, "; ".join(notes))
            return CdnAnswer(200, rec, stub.encode(), _headers(kind, served))
        if kind.startswith("text/javascript") and (esm or moved):
            text = body.decode("utf-8", errors="replace")
            if moved:
                text = rewrite_relative_imports(text, f"{ref.base}{ref.name}@{version}/{path}")
                notes.append(f"entry {path}: relative imports point at it")
            if esm:
                text = rewrite_bare_imports(text, package, ref.base, "/+esm" if ref.cdn == "jsdelivr" else "")
                notes.append("bare imports rewritten to this CDN")
            body = text.encode()
        detail = "; ".join(notes)
        rec = CdnRecord(url[:300], ref.cdn, "served", served, 200, kind, detail)
        return CdnAnswer(200, rec, body, _headers(kind, served))
