"""Rebuild the fake npm registry's fixtures:

    npm pack three@0.160.0      # the real 9.4 MB tarball, only needed to rebuild three's cut-down one
    python tests/verifiers/data/cdn/build_fixtures.py [three-0.160.0.tgz] [--real DIR]

Writes tarballs/*.tgz (byte-for-byte reproducible: fixed mtimes, gzip without a timestamp) and
registry.json, the metadata the fake registry answers with: one entry per package in the registry's
format (`dist-tags`, `versions[v]` = the version's package.json plus `dist` {tarball, integrity,
shasum}). Tarball URLs are written as `{registry}/NAME/-/FILE` and filled in by the fake registry
with its own address.

- three@0.160.0: the registry's real metadata entry for that version (three-metadata.json, recorded
  and trimmed of scripts and people), with `dist` pointing at a cut-down tarball: the real
  package.json, LICENSE, build/three.module.js and examples/jsm/controls/OrbitControls.js, copied
  unchanged out of the real tarball (MIT), because the real one is 9.4 MB. Without the argument the
  committed cut-down tarball is kept. `latest` is set to 0.160.0 (the registry's is
  newer). The layout is three's own, so importmap URLs that work on unpkg/jsDelivr work here.
- chart.js@4.4.1 and p5@1.9.4 (for the explorer's corpus, tests/verifiers/webcorpus): cut down the
  same way, from real tarballs (`npm pack chart.js@4.4.1 p5@1.9.4` into a folder passed as
  `--real DIR`): package.json, the licence and the one browser build a page loads from a CDN
  (chart.js: dist/chart.umd.js, its `jsdelivr`/`unpkg` entry, MIT; p5: lib/p5.min.js, its `main`,
  LGPL-2.1, shipped unchanged). The version entry is the package's own package.json less its scripts
  and devDependencies. Without --real the committed cut-down tarballs are kept.
- tiny-dep, tiny-greet, @tiny/scoped: made-up packages, a few hundred bytes each, that exercise
  ranges, dist-tags, prereleases, package.json entry fields, `exports`, bare imports and content types.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).parent
THREE_FILES = ("package.json", "LICENSE", "build/three.module.js", "examples/jsm/controls/OrbitControls.js")
REAL_CUTS = {  # name -> (version, files kept from the real tarball)
    "chart.js": ("4.4.1", ("package.json", "LICENSE.md", "dist/chart.umd.js")),
    "p5": ("1.9.4", ("package.json", "license.txt", "lib/p5.min.js")),
}


def tarball(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(f"package/{name}")
            info.size, info.mtime, info.mode = len(files[name]), 499162500, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def dist(name: str, version: str, data: bytes) -> dict[str, str]:
    file = f"{name.split('/')[-1]}-{version}.tgz"
    (HERE / "tarballs" / file).write_bytes(data)
    return {
        "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
        "shasum": hashlib.sha1(data).hexdigest(),
        "tarball": f"{{registry}}/{name}/-/{file}",
    }


def tiny(registry: dict, manifest: dict, files: dict[str, str]) -> None:
    name, version = manifest["name"], manifest["version"]
    body = {"package.json": json.dumps(manifest, indent=2).encode(), **{k: v.encode() for k, v in files.items()}}
    entry = registry.setdefault(name, {"name": name, "dist-tags": {}, "versions": {}})
    entry["versions"][version] = {**manifest, "dist": dist(name, version, tarball(body))}


def real_cut(registry: dict, name: str, real_dir: Path | None) -> None:
    """A real package cut down to the files a CDN page loads; its manifest is its own package.json."""
    version, keep = REAL_CUTS[name]
    cut = HERE / "tarballs" / f"{name.split('/')[-1]}-{version}.tgz"
    if real_dir is not None:
        with tarfile.open(real_dir / f"{name.split('/')[-1]}-{version}.tgz") as real:
            data = tarball({f: real.extractfile(f"package/{f}").read() for f in keep})
    else:
        data = cut.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.loads(tar.extractfile("package/package.json").read())
    for field in ("scripts", "devDependencies", "pnpm", "browserslist", "contributors", "bugs", "homepage", "files"):
        manifest.pop(field, None)
    registry[name] = {"name": name, "dist-tags": {"latest": version}, "versions": {version: {**manifest, "dist": dist(name, version, data)}}}


def main() -> None:
    (HERE / "tarballs").mkdir(exist_ok=True)
    registry: dict = {}
    args = sys.argv[1:]
    real_dir = None
    if "--real" in args:
        at = args.index("--real")
        real_dir = Path(args[at + 1])
        del args[at : at + 2]
    sys.argv[1:] = args

    three = copy.deepcopy(json.loads((HERE / "three-metadata.json").read_text()))
    cut = HERE / "tarballs" / "three-0.160.0.tgz"
    if len(sys.argv) > 1:
        with tarfile.open(sys.argv[1]) as real:
            files = {name: real.extractfile(f"package/{name}").read() for name in THREE_FILES}
        data = tarball(files)
    else:
        data = cut.read_bytes()
    three["versions"]["0.160.0"]["dist"] = dist("three", "0.160.0", data)
    registry["three"] = three

    for version in ("1.2.3", "1.3.0", "2.0.0", "2.1.0-beta.1"):
        tiny(registry, {"name": "tiny-dep", "version": version, "type": "module", "module": "index.js", "main": "index.cjs"}, {
            "index.js": f'export const dep = "tiny-dep {version}";\n//# sourceMappingURL=index.js.map\n',
            "index.cjs": f'module.exports = {{ dep: "tiny-dep {version}" }};\n',
            "index.js.map": '{"version":3,"sources":["index.ts"],"mappings":"AAAA"}\n',
            "style.css": ".tiny { color: rgb(200, 0, 0); }\n",
            "fonts/tiny.woff2": "wOF2-not-a-real-font",
        })
    registry["tiny-dep"]["dist-tags"] = {"latest": "2.0.0", "next": "2.1.0-beta.1"}

    tiny(registry, {
        "name": "tiny-greet", "version": "1.0.0", "type": "module",
        "main": "cjs/index.js", "module": "esm/index.js", "unpkg": "dist/greet.umd.js", "jsdelivr": "dist/greet.min.js",
        "exports": {".": {"import": "./esm/index.js", "require": "./cjs/index.js"}, "./extra": "./esm/extra.js", "./parts/*": "./esm/parts/*.js"},
        "dependencies": {"tiny-dep": "^1.2.0"},
    }, {
        "esm/index.js": 'import { dep } from "tiny-dep";\nexport { shout } from "./extra.js";\nexport const greet = (n) => `hi ${n} (${dep})`;\n',
        "esm/extra.js": 'export const shout = (s) => s.toUpperCase();\n',
        "esm/parts/wave.js": 'export const wave = "~";\n',
        "cjs/index.js": 'module.exports = { greet: (n) => "hi " + n };\n',
        "dist/greet.umd.js": 'window.tinyGreet = { greet: (n) => "hi " + n };\n',
        "dist/greet.min.js": 'window.tinyGreet={greet:n=>"hi "+n};\n',
    })
    registry["tiny-greet"]["dist-tags"] = {"latest": "1.0.0"}

    tiny(registry, {"name": "@tiny/scoped", "version": "0.1.0", "main": "lib/main.js"}, {"lib/main.js": "export const scoped = true;\n"})
    registry["@tiny/scoped"]["dist-tags"] = {"latest": "0.1.0"}

    for name in REAL_CUTS:
        real_cut(registry, name, real_dir)

    (HERE / "registry.json").write_text(json.dumps(registry, indent=1) + "\n")


if __name__ == "__main__":
    main()
