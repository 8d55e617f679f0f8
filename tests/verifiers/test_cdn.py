"""The offline CDN shim without a browser: CDN URL forms, npm version resolution, the
content-addressed cache, each CDN's file conventions, and `envfarm verify cdn-prefetch`.

Nothing here reaches a host: a fake npm registry on 127.0.0.1 answers from tests/verifiers/data/cdn
(see build_fixtures.py there for what each fixture is and where it came from).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from fake_npm import DATA, FakeRegistry
from typer.testing import CliRunner

from envfarm.verifiers.web.cdn import CdnShim, parse_cdn_url, rewrite_bare_imports
from envfarm.verifiers.web.npm import NpmCache, PackageNotFound, RegistryUnavailable, split_spec


@pytest.fixture
def registry():
    fake = FakeRegistry()
    yield fake
    fake.close()


@pytest.fixture
def shim(registry, tmp_path):
    return CdnShim(NpmCache(tmp_path / "cdn", registry.url))


DEAD_REGISTRY = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused


@pytest.mark.parametrize(
    "url, want",
    [
        ("https://unpkg.com/three@0.160.0/build/three.module.js", ("unpkg", "three", "0.160.0", "build/three.module.js")),
        ("https://unpkg.com/three", ("unpkg", "three", "", "")),
        ("https://unpkg.com/@tiny/scoped@^0.1/lib/main.js", ("unpkg", "@tiny/scoped", "^0.1", "lib/main.js")),
        ("https://cdn.jsdelivr.net/npm/three@0.160/examples/jsm/controls/OrbitControls.js", ("jsdelivr", "three", "0.160", "examples/jsm/controls/OrbitControls.js")),
        ("https://fastly.jsdelivr.net/npm/tiny-dep@latest/style.css", ("jsdelivr", "tiny-dep", "latest", "style.css")),
        ("https://cdn.jsdelivr.net/npm/tiny-greet@1/+esm", ("jsdelivr", "tiny-greet", "1", "")),
        ("https://cdn.jsdelivr.net/npm/tiny-greet@1/esm/index.js/+esm", ("jsdelivr", "tiny-greet", "1", "esm/index.js")),
        ("https://esm.sh/v135/three@0.160.0?target=es2022", ("esm.sh", "three", "0.160.0", "")),
        ("https://esm.sh/tiny-greet@%5E1.0.0/extra", ("esm.sh", "tiny-greet", "^1.0.0", "extra")),
        ("https://cdn.skypack.dev/tiny-greet", ("skypack", "tiny-greet", "", "")),
        ("https://cdnjs.cloudflare.com/ajax/libs/three.js/r160/three.module.js", ("cdnjs", "three", "0.160.0", "three.module.js")),
    ],
)
def test_cdn_url_forms_read_as_npm_coordinates(url, want):
    ref = parse_cdn_url(url)
    assert ref is not None and (ref.cdn, ref.name, ref.spec, ref.path) == want


@pytest.mark.parametrize("url", ["https://example.com/three.js", "https://cdn.jsdelivr.net/gh/mrdoob/three.js/build/three.module.js", "https://unpkg.com/"])
def test_other_urls_are_not_cdn_forms(url):
    assert parse_cdn_url(url) is None


def test_split_spec():
    assert split_spec("three") == ("three", "")
    assert split_spec("three@^0.160") == ("three", "^0.160")
    assert split_spec("@tiny/scoped@0.1.0") == ("@tiny/scoped", "0.1.0")
    assert split_spec("@tiny/scoped") == ("@tiny/scoped", "")


@pytest.mark.parametrize(
    "spec, version",
    [
        ("", "2.0.0"),  # no version: the latest dist-tag, as every CDN does
        ("latest", "2.0.0"),
        ("next", "2.1.0-beta.1"),
        ("1.2.3", "1.2.3"),
        ("^1.2.0", "1.3.0"),  # npm caret: <2.0.0
        ("~1.2.0", "1.2.3"),  # npm tilde: <1.3.0
        ("1", "1.3.0"),
        ("1.x", "1.3.0"),
        ("*", "2.0.0"),  # a range never picks a prerelease unless it names one
        (">=1.3.0 <2", "1.3.0"),
        ("1.2.3 - 1.9", "1.3.0"),  # hyphen range
        ("^0.9 || ^1.2.4", "1.3.0"),
        ("^2.1.0-beta.0", "2.1.0-beta.1"),
    ],
)
def test_versions_resolve_the_way_npm_reads_ranges(registry, tmp_path, spec, version):
    assert NpmCache(tmp_path, registry.url).resolve("tiny-dep", spec) == version


@pytest.mark.parametrize("spec", ["^3", "9.9.9", "nonsense tag"])
def test_a_range_nothing_satisfies_is_not_found(registry, tmp_path, spec):
    with pytest.raises(PackageNotFound):
        NpmCache(tmp_path, registry.url).resolve("tiny-dep", spec)


def test_caret_on_zero_major_differs_from_pep440():
    """Why node-semver and not `packaging`: npm's ^0.160.0 stops before 0.161.0."""
    import nodesemver

    assert nodesemver.max_satisfying(["0.160.1", "0.161.0", "1.0.0"], "^0.160.0", loose=True) == "0.160.1"


def test_tarball_is_fetched_once_into_a_content_addressed_cache(registry, tmp_path):
    cache = NpmCache(tmp_path, registry.url)
    folder = cache.package_dir("tiny-dep", "1.3.0")
    again = NpmCache(tmp_path, registry.url).package_dir("tiny-dep", "1.3.0")
    assert folder == again and (folder / "index.js").read_text().startswith('export const dep = "tiny-dep 1.3.0"')
    assert sum(h.endswith(".tgz") for h in registry.hits) == 1
    data = (DATA / "tarballs" / "tiny-dep-1.3.0.tgz").read_bytes()
    key = "sha512-" + hashlib.sha512(data).hexdigest()
    assert folder.name == key and (tmp_path / "tarballs" / f"{key}.tgz").read_bytes() == data


def test_a_tarball_that_does_not_match_its_integrity_is_refused(registry, tmp_path):
    entry = registry.entries["tiny-dep"]["versions"]["1.2.3"]
    entry["dist"]["tarball"] = entry["dist"]["tarball"].replace("1.2.3", "1.3.0")  # the wrong bytes
    with pytest.raises(Exception, match="does not match its registry integrity"):
        NpmCache(tmp_path, registry.url).package_dir("tiny-dep", "1.2.3")
    assert not (tmp_path / "files").exists() or not any((tmp_path / "files").iterdir())


def test_prefetched_cache_serves_with_no_registry(registry, tmp_path):
    NpmCache(tmp_path, registry.url).prefetch("tiny-dep", "^1")
    offline = CdnShim(NpmCache(tmp_path, DEAD_REGISTRY))
    answer = offline.answer("https://unpkg.com/tiny-dep@^1.2.0/index.js")
    assert answer.status == 200 and b"tiny-dep 1.3.0" in answer.body
    assert answer.record.served == "tiny-dep@1.3.0/index.js" and answer.record.detail == "^1.2.0 resolved to 1.3.0"


def test_offline_mode_reads_the_cache_alone(registry, tmp_path, monkeypatch):
    NpmCache(tmp_path, registry.url).prefetch("tiny-dep", "1.3.0")
    os.utime(tmp_path / "meta" / "tiny-dep.json", (0, 0))  # stale: online, the registry would be asked
    monkeypatch.setenv("ENVFARM_NPM_REGISTRY", "off")
    offline = NpmCache(tmp_path)
    hits = len(registry.hits)
    assert offline.offline and offline.resolve("tiny-dep", "^1") == "1.3.0"
    assert (offline.package_dir("tiny-dep", "1.3.0") / "index.js").is_file()
    with pytest.raises(RegistryUnavailable, match="not in the offline CDN cache"):
        offline.package_dir("tiny-dep", "1.2.3")  # metadata known, tarball never fetched
    with pytest.raises(RegistryUnavailable, match="not in the offline CDN cache"):
        offline.resolve("three")
    assert len(registry.hits) == hits


def test_no_registry_and_no_cache_is_blocked_and_says_why(tmp_path):
    answer = CdnShim(NpmCache(tmp_path, DEAD_REGISTRY)).answer("https://unpkg.com/three@0.160.0/build/three.module.js")
    assert answer.status == 0 and answer.record.outcome == "blocked"
    assert "unreachable" in answer.record.detail
    with pytest.raises(RegistryUnavailable):
        NpmCache(tmp_path, DEAD_REGISTRY).resolve("three")


@pytest.mark.parametrize(
    "path, kind",
    [("index.js", "text/javascript"), ("style.css", "text/css"), ("index.js.map", "application/json"), ("fonts/tiny.woff2", "font/woff2"), ("package.json", "application/json")],
)
def test_files_are_served_with_their_content_types(shim, path, kind):
    answer = shim.answer(f"https://unpkg.com/tiny-dep@2.0.0/{path}")
    assert answer.status == 200 and answer.headers["content-type"].startswith(kind)
    assert answer.headers["access-control-allow-origin"] == "*"  # module scripts and fonts load cross-origin
    assert answer.record.outcome == "served" and answer.record.served == f"tiny-dep@2.0.0/{path}"


def _served(shim: CdnShim, url: str) -> str:
    answer = shim.answer(url)
    assert answer.status == 200, answer.record
    return answer.record.served


def test_unpkg_and_jsdelivr_entry_files_follow_their_package_json_fields(shim):
    assert _served(shim, "https://unpkg.com/tiny-greet") == "tiny-greet@1.0.0/dist/greet.umd.js"
    assert _served(shim, "https://unpkg.com/tiny-greet?module") == "tiny-greet@1.0.0/esm/index.js"
    assert _served(shim, "https://cdn.jsdelivr.net/npm/tiny-greet@1") == "tiny-greet@1.0.0/dist/greet.min.js"
    assert _served(shim, "https://unpkg.com/tiny-dep@1.2.3") == "tiny-dep@1.2.3/index.cjs"  # main
    assert _served(shim, "https://unpkg.com/three@0.160.0/build/three.module") == "three@0.160.0/build/three.module.js"
    assert _served(shim, "https://unpkg.com/@tiny/scoped") == "@tiny/scoped@0.1.0/lib/main.js"


def test_no_redirects_the_file_is_served_at_the_url_asked_for(shim):
    """A 302 fulfilled by the gate is followed by Chromium outside the gate, so there are none."""
    answer = shim.answer("https://unpkg.com/tiny-greet?module")
    assert answer.status == 200 and "location" not in answer.headers
    # The entry file moved (esm/index.js served at the package's URL): its relative imports follow it.
    assert 'from "https://unpkg.com/tiny-greet@1.0.0/esm/extra.js"' in answer.body.decode()
    assert 'from "tiny-dep"' in answer.body.decode()  # unpkg serves files raw: bare imports stay


def test_esm_cdns_use_exports_and_rewrite_bare_imports(shim):
    module = shim.answer("https://esm.sh/tiny-greet@1.0.0/esm/index.js")
    text = module.body.decode()
    assert 'from "/tiny-dep@^1.2.0"' in text  # the dependency's range from package.json, on the same CDN
    assert 'from "./extra.js"' in text  # relative imports untouched where the file is at its own URL
    assert module.record.detail == "bare imports rewritten to this CDN"
    entry = shim.answer("https://esm.sh/tiny-greet@1")
    assert entry.record.served == "tiny-greet@1.0.0/esm/index.js"  # exports ".", import condition
    # As esm.sh answers: a stub re-exporting the exact file (no default export there, so none here).
    assert entry.body.decode() == 'export * from "https://esm.sh/tiny-greet@1.0.0/esm/index.js";\n'
    three = shim.answer("https://esm.sh/three@0.160").body.decode()
    assert three == 'export * from "https://esm.sh/three@0.160.0/build/three.module.js";\n'
    assert _served(shim, "https://esm.sh/tiny-greet@1.0.0/extra") == "tiny-greet@1.0.0/esm/extra.js"
    assert _served(shim, "https://cdn.skypack.dev/tiny-greet@1.0.0/parts/wave") == "tiny-greet@1.0.0/esm/parts/wave.js"
    assert _served(shim, "https://esm.sh/tiny-dep@^1.2.0") == "tiny-dep@1.3.0/index.js"  # `module` before `main`
    plus = shim.answer("https://cdn.jsdelivr.net/npm/tiny-greet@1.0.0/+esm")
    assert plus.body.decode() == 'export * from "https://cdn.jsdelivr.net/npm/tiny-greet@1.0.0/esm/index.js/+esm";\n'
    file = shim.answer("https://cdn.jsdelivr.net/npm/tiny-greet@1.0.0/esm/index.js/+esm")
    assert file.status == 200 and 'from "/npm/tiny-dep@^1.2.0/+esm"' in file.body.decode()


def test_rewrite_leaves_urls_and_relative_specifiers():
    src = 'import a from "dep";\nimport "./side.js";\nexport * from "@s/p/sub";\nconst m = import("https://x.test/m.js");\nimport b from "data:text/javascript,1";\n'
    out = rewrite_bare_imports(src, {"dependencies": {"dep": "^2"}}, "https://esm.sh/")
    assert out == 'import a from "/dep@^2";\nimport "./side.js";\nexport * from "/@s/p@latest/sub";\nconst m = import("https://x.test/m.js");\nimport b from "data:text/javascript,1";\n'


def test_a_file_importing_its_own_package_gets_the_same_version(shim):
    """three's addons import "three": through esm.sh that must be the same three, not @latest."""
    answer = shim.answer("https://esm.sh/three@0.160/examples/jsm/controls/OrbitControls.js")
    text = answer.body.decode()
    assert "from '/three@0.160.0'" in text and "three@latest" not in text


def test_cdnjs_names_map_to_npm_packages(shim):
    answer = shim.answer("https://cdnjs.cloudflare.com/ajax/libs/three.js/r160/three.module.js")
    assert answer.status == 200 and answer.record.served == "three@0.160.0/build/three.module.js"


def test_missing_files_and_packages_are_404_like_the_cdn(shim):
    missing = shim.answer("https://unpkg.com/three@0.160.0/build/nope.js")
    assert missing.status == 404 and missing.record.outcome == "not_found"
    unknown = shim.answer("https://unpkg.com/no-such-package-here@1/index.js")
    assert unknown.status == 404 and "does not exist" in unknown.record.detail
    escape = shim.answer("https://unpkg.com/tiny-dep@2.0.0/../../../etc/passwd")
    assert escape.status == 404 and b"root:" not in escape.body


def test_google_fonts_get_local_fallback_css(shim):
    answer = shim.answer("https://fonts.googleapis.com/css2?family=Roboto:wght@400;700&family=Open+Sans&display=swap")
    css = answer.body.decode()
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/css")
    assert "font-family: 'Roboto'" in css and "font-family: 'Open Sans'" in css and "local('DejaVu Sans')" in css
    assert "url(" not in css  # no font file to fetch
    assert answer.record.outcome == "font_fallback"
    assert shim.answer("https://fonts.gstatic.com/s/roboto/v30/x.woff2").record.outcome == "blocked"


def test_cdn_prefetch_command_fills_the_cache_for_offline_use(registry, tmp_path, monkeypatch):
    from envfarm.verifiers.cli import app

    monkeypatch.setenv("ENVFARM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENVFARM_NPM_REGISTRY", registry.url)
    result = CliRunner().invoke(app, ["cdn-prefetch", "tiny-greet@^1", "three@0.160.0", "--deps"])
    assert result.exit_code == 0, result.output
    assert "tiny-greet@^1 -> 1.0.0" in result.output and "tiny-dep@^1.2.0 -> 1.3.0" in result.output
    offline = CdnShim(NpmCache(tmp_path / "home" / "cdn", DEAD_REGISTRY))  # the default cache the verifier reads
    for url in ("https://esm.sh/tiny-greet@1.0.0/esm/index.js", "https://esm.sh/tiny-dep@1.3.0/index.js", "https://unpkg.com/three@0.160.0/build/three.module.js"):
        assert offline.answer(url).status == 200, url


def test_cdn_prefetch_of_an_unknown_package_is_one_line_error(registry, tmp_path):
    from envfarm.verifiers.cli import app

    result = CliRunner().invoke(app, ["cdn-prefetch", "no-such-package-here", "--cache", str(tmp_path), "--registry", registry.url])
    assert result.exit_code != 0
    assert isinstance(result.exception, PackageNotFound)


# -- in the browser ------------------------------------------------------------------------------

PAGE = (DATA / "pages" / "three.html").read_text()

THREE_SCRIPT = """
steps:
  - goto: /
    expect: [{visible: canvas}, {no_console_errors: true}, {no_failed_requests: true}]
  - wait: 1000
    expect: [{animates: canvas}]
  - click: "#recolor"
    expect: [{text: {selector: "#status", equals: "red"}}, {changes: canvas}]
"""


def _page(tmp_path: Path, cdn: str, version: str = "0.160.0", broken_import: str = "", handler_on: str = "#recolor") -> Path:
    app = tmp_path / "app"
    app.mkdir()
    html = PAGE.replace("{{CDN}}", cdn).replace("{{VERSION}}", version).replace("{{BROKEN_IMPORT}}", broken_import).replace("{{HANDLER_ON}}", handler_on)
    (app / "index.html").write_text(html)
    return app


def _verify(web, app: Path, shim: CdnShim, out: Path):
    from envfarm.verifiers.web.script import load_script
    from envfarm.verifiers.web.verifier import verify_web_async

    reward = web.run(verify_web_async(web.host, app, load_script(THREE_SCRIPT), out, cdn=shim))
    return reward, json.loads((out / "report.json").read_text())


@pytest.mark.browser
@pytest.mark.parametrize("cdn, version", [("https://unpkg.com/", "0.160.0"), ("https://cdn.jsdelivr.net/npm/", "^0.160"), ("https://esm.sh/", "0.160")])
def test_three_importmap_page_passes_offline(web, shim, tmp_path, cdn, version):
    """Real three.js 0.160.0 (build/three.module.js and OrbitControls.js, unchanged, in a cut-down
    fixture tarball with the package's own layout) through an importmap, from a fake registry."""
    reward, report = _verify(web, _page(tmp_path, cdn, version), shim, tmp_path / "out")
    assert reward.passed, reward.details["failed_checks"]
    served = {r["served"] for r in report["cdn"]["shimmed"] if r["outcome"] == "served"}
    assert {"three@0.160.0/build/three.module.js", "three@0.160.0/examples/jsm/controls/OrbitControls.js"} <= served
    assert any(r["outcome"] == "font_fallback" for r in report["cdn"]["shimmed"])
    assert report["cdn"]["blocked"] == [] and report["session"]["blocked_requests"] == []
    if version != "0.160.0":
        assert any(r["detail"].startswith(f"{version} resolved to 0.160.0") for r in report["cdn"]["shimmed"])


@pytest.mark.browser
def test_three_page_importing_a_missing_export_fails(web, shim, tmp_path):
    app = _page(tmp_path, "https://unpkg.com/", broken_import='import { OrbitSpinner } from "three";')
    reward, report = _verify(web, app, shim, tmp_path / "out")
    assert not reward.passed
    failed = " | ".join(reward.details["failed_checks"])
    assert "visible canvas" in failed and "OrbitSpinner" in failed


@pytest.mark.browser
def test_three_page_with_the_handler_on_the_wrong_element_fails(web, shim, tmp_path):
    reward, _ = _verify(web, _page(tmp_path, "https://unpkg.com/", handler_on="#status"), shim, tmp_path / "out")
    assert not reward.passed
    failed = reward.details["failed_checks"]
    assert any(f.startswith("text #status") for f in failed), failed
    assert reward.details["scores"]["executability"] == 1.0


@pytest.mark.browser
def test_requests_the_shim_cannot_serve_stay_blocked_and_are_recorded(web, tmp_path):
    from envfarm.verifiers.web.script import load_script
    from envfarm.verifiers.web.verifier import verify_web_async

    app = tmp_path / "app"
    app.mkdir()
    (app / "index.html").write_text(
        '<!doctype html><link rel="icon" href="data:,"><h1>hi</h1>'
        '<script src="https://example.com/tracker.js"></script>'
        '<script src="https://unpkg.com/tiny-dep@1/index.cjs"></script>'
    )
    offline = CdnShim(NpmCache(tmp_path / "cdn", DEAD_REGISTRY))
    reward = web.run(verify_web_async(web.host, app, load_script({"steps": [{"goto": "/"}]}), tmp_path / "out", cdn=offline))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    blocked = report["session"]["blocked_requests"]
    assert "https://example.com/tracker.js" in blocked and "https://unpkg.com/tiny-dep@1/index.cjs" in blocked
    [cdn_blocked] = report["cdn"]["blocked"]
    assert cdn_blocked["url"] == "https://unpkg.com/tiny-dep@1/index.cjs" and "unreachable" in cdn_blocked["detail"]
    assert reward.details["cdn_blocked"][0].startswith("https://unpkg.com/tiny-dep@1/index.cjs: ")
