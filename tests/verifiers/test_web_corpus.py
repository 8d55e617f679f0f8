"""The web verifier must separate every correct app in the corpus from each of its broken versions,
and each broken version must fail for its own reason (not by accident)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from envfarm.verifiers.web.script import load_script
from envfarm.verifiers.web.verifier import verify_web_async

pytestmark = pytest.mark.browser

WEBAPPS = Path(__file__).parent / "webapps"
APPS = ["clicker", "todo"]
# Which failed check must name each breakage (a substring of "check: detail").
EXPECTED_FAILURE = {
    "dead_button": {"clicker": "text #count", "todo": "count #list li"},
    "frozen_animation": "animates",
    "js_error_on_load": "no console errors",
    "offscreen": "in viewport",
    "blank_page": "page not blank",
    "infinite_loop": "step 0: goto",
}
PARALLEL = 3


def _variants() -> list[tuple[str, str]]:
    return [(app, d.name) for app in APPS for d in sorted((WEBAPPS / app).iterdir()) if d.is_dir()]


@pytest.fixture(scope="module")
def corpus_results(web, tmp_path_factory):
    out_root = tmp_path_factory.mktemp("corpus")
    limit = asyncio.Semaphore(PARALLEL)

    async def one(app: str, variant: str):
        async with limit:
            script = load_script(WEBAPPS / app / "script.yaml")
            script.step_timeout_ms = 3000
            return (app, variant), await verify_web_async(web.host, WEBAPPS / app / variant, script, out_root / app / variant)

    async def all_of_them():
        return dict(await asyncio.gather(*(one(a, v) for a, v in _variants())))

    return web.run(all_of_them(), timeout=600)


def test_corpus_has_every_breakage():
    for app in APPS:
        names = {d.name for d in (WEBAPPS / app).iterdir() if d.is_dir()}
        assert names == {"correct", *EXPECTED_FAILURE}, app


@pytest.mark.parametrize("app", APPS)
def test_correct_app_passes(corpus_results, app):
    reward = corpus_results[(app, "correct")]
    assert reward.passed and reward.value == 1.0, reward.details["failed_checks"]


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("variant", sorted(EXPECTED_FAILURE))
def test_broken_app_fails_for_its_reason(corpus_results, app, variant):
    reward = corpus_results[(app, variant)]
    expected = EXPECTED_FAILURE[variant]
    expected = expected[app] if isinstance(expected, dict) else expected
    assert not reward.passed and reward.value < 1.0
    assert any(expected in failure for failure in reward.details["failed_checks"]), reward.details["failed_checks"]


def test_visual_failures_come_from_the_video(corpus_results):
    for app in APPS:
        frozen = corpus_results[(app, "frozen_animation")]
        report = json.loads(Path(frozen.evidence["report_json"]).read_text())
        animates = [c for c in report["session"]["checks"] if c["check"].startswith("animates")]
        assert animates and all(c["source"] == "video" and not c["passed"] for c in animates)
        assert report["session"]["video_offset_s"] is not None  # the sync flash was found


def test_evidence_bundle(corpus_results):
    reward = corpus_results[("clicker", "dead_button")]
    ev = reward.evidence
    assert Path(ev["video"]).stat().st_size > 0
    html = Path(ev["report_html"]).read_text()
    assert "FAILED" in html and html.count("data:image/png;base64,") >= 3
    assert "text #count" in html
    report = json.loads(Path(ev["report_json"]).read_text())
    keyframes = [Path(p) for p in report["keyframes"]]
    assert any(p.name.startswith("step-") for p in keyframes) and any(p.name.startswith("t-") for p in keyframes)
    assert all(p.stat().st_size > 0 for p in keyframes)
