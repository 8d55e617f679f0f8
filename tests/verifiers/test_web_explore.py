"""Verification without a script: the explorer on pages written the way models write them.

The full corpus (tests/verifiers/webcorpus, 30 pages with their broken twins) runs in `make
bench-verify`; here a representative subset runs: WebGL through three.js and p5, a paint board, a todo
list, a Chart.js dashboard, a canvas game and a dialog, correct and broken. CDN imports are served by
the shim from the fake npm registry on loopback (fake_npm.py): no page reaches a host.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from explore_corpus import CLASSES, CORPUS, load
from fake_npm import FakeRegistry
from typer.testing import CliRunner

from envfarm.verifiers.web.cdn import CdnShim
from envfarm.verifiers.web.npm import NpmCache
from envfarm.verifiers.web.rubric import match, requirements

SUBSET = {
    "voxel_garden": ["correct", "animation_paused", "missing_export", "handler_on_wrong_element"],
    "spinning_cube_esm": ["webgl_setup_throws"],
    "p5_particles": ["correct"],
    "pixel_board": ["correct", "handler_on_wrong_element", "state_not_updating"],
    "todo_list": ["correct", "error_after_interaction"],
    "sales_dashboard": ["correct", "state_not_updating", "layout_broken"],
    "snake_game": ["correct", "handler_on_wrong_element"],
    "modal_dialog": ["correct"],
}
PARALLEL = 3


# -- without a browser ----------------------------------------------------------------------------

def test_corpus_has_thirty_pages_each_with_broken_twins_of_the_issue_classes():
    pages = load()
    names = {p.page for p in pages}
    assert len(names) >= 30
    for name in names:
        twins = [p for p in pages if p.page == name and not p.correct]
        assert twins, f"{name} has no broken twin"
        assert all(p.html != next(q.html for q in pages if q.page == name and q.correct) for p in twins)
    classes = {p.cls for p in pages if not p.correct}
    assert {"handler_on_wrong_element", "animation_paused", "missing_export", "layout_broken", "state_not_updating", "error_after_interaction"} <= classes <= set(CLASSES)


def test_a_twin_whose_replacement_does_not_match_exactly_once_is_refused(tmp_path, monkeypatch):
    import explore_corpus

    page = tmp_path / "p"
    page.mkdir()
    (page / "index.html").write_text("<p>a</p><p>a</p>")
    (page / "variants.yaml").write_text("rubric: x\nbroken:\n  twin:\n    class: layout_broken\n    expect: layout\n    replace: [['<p>a</p>', '<p>b</p>']]\n")
    monkeypatch.setattr(explore_corpus, "CORPUS", tmp_path)
    with pytest.raises(ValueError, match="found 2 times"):
        explore_corpus.load()


CDN_URL = re.compile(r"https://(?:unpkg\.com|cdn\.jsdelivr\.net|esm\.sh)/[^\"' )]+")


def test_every_cdn_file_the_corpus_imports_is_served_offline_by_the_shim(tmp_path):
    """The corpus's CDN URLs (script tags, importmaps, ES imports) all resolve in the fake registry's
    cut-down real packages (three, chart.js, p5): the pages work with no host reachable."""
    registry = FakeRegistry()
    try:
        shim = CdnShim(NpmCache(tmp_path, registry.url))
        urls = sorted({u for p in load() if p.correct for u in CDN_URL.findall(p.html)})
        assert len(urls) >= 6
        for url in urls:
            answer = shim.answer(url)
            assert answer is not None and answer.status == 200, (url, answer.record if answer else None)
    finally:
        registry.close()


@pytest.mark.parametrize("text, check", [
    ("The garden rotates slowly on its own.", "animates"),
    ("Clicking a cell paints it with the selected colour.", "click"),
    ("Dragging on the canvas draws a stroke.", "drag"),
    ("The arrow keys steer the snake.", "keyboard"),
    ("Typing a task and pressing Enter adds it to the list.", "type"),
    ('"Clear" wipes the canvas.', "click"),
    ("Scrolling moves the layers at different speeds (parallax).", "scroll"),
    ("The story types itself out letter by letter.", "text_changes"),
    ("A bar chart of sales is shown.", "drawn"),
    ("The page feels polished and professional.", None),
])
def test_rubric_words_map_to_the_check_that_covers_them(text, check):
    assert match(text) == check


def test_rubric_splits_lines_and_sentences():
    reqs = requirements("- A cube spins. It is red.\n\nClicking the button adds a cube.")
    assert [r.text for r in reqs] == ["A cube spins.", "It is red.", "Clicking the button adds a cube."]
    assert [r.check for r in reqs] == ["animates", None, "click"]


# -- in the browser -------------------------------------------------------------------------------

def _subset() -> list:
    return [p for p in load(list(SUBSET)) if p.variant in SUBSET[p.page]]


@pytest.fixture(scope="module")
def explored(web, tmp_path_factory):
    from envfarm.verifiers.web.explorer import explore_web_async

    root = tmp_path_factory.mktemp("explore")
    registry = FakeRegistry()
    shim = CdnShim(NpmCache(root / "cdn", registry.url))
    limit = asyncio.Semaphore(PARALLEL)

    async def one(page):
        async with limit:
            folder = page.write(root / "pages")
            return page.key, (page, await explore_web_async(web.host, folder, root / "out" / page.key, rubric=page.rubric, cdn=shim))

    async def all_of_them():
        return dict(await asyncio.gather(*(one(p) for p in _subset())))

    try:
        yield web.run(all_of_them(), timeout=900)
    finally:
        registry.close()


def _keys(correct: bool) -> list[str]:
    return [f"{page}/{v}" for page, variants in SUBSET.items() for v in variants if (v == "correct") == correct]



@pytest.mark.browser
@pytest.mark.parametrize("key", _keys(True))
def test_correct_pages_pass_unscripted(explored, key):
    _, reward = explored[key]
    assert reward.passed and reward.value == 1.0, reward.details["failed_checks"]
    assert reward.details["explore"]["gate"]["passed"]


@pytest.mark.browser
@pytest.mark.parametrize("key", _keys(False))
def test_broken_twins_fail_for_their_reason(explored, key):
    page, reward = explored[key]
    failed = reward.details["failed_checks"]
    assert not reward.passed and reward.value < 1.0
    assert any(page.expect in f for f in failed), (page.expect, failed)


@pytest.mark.browser
@pytest.mark.parametrize("key", ["voxel_garden/correct", "p5_particles/correct"])
def test_webgl_pages_draw_and_the_video_shows_them_animate(explored, key):
    """three.js and p5 in WEBGL mode, software-rendered (SwiftShader) with the verifier's flags: the
    idle watch of the video sees the scene move on its own."""
    _, reward = explored[key]
    ex = reward.details["explore"]
    assert ex["webgl"]["available"] and "SwiftShader" in ex["webgl"]["renderer"]
    assert ex["animation"]["on_its_own"] and ex["animation"]["moving_share"] >= 0.5
    assert ex["animation"]["regions"]  # where it moved, from the video
    assert Path(reward.evidence["video"]).stat().st_size > 0


@pytest.mark.browser
def test_a_paused_webgl_scene_is_seen_still(explored):
    _, reward = explored["voxel_garden/animation_paused"]
    ex = reward.details["explore"]
    assert ex["gate"]["passed"] and not ex["animation"]["on_its_own"]
    assert any(r["check"] == "animates" and r["passed"] is False for r in ex["rubric"])


@pytest.mark.browser
def test_webgl_setup_that_throws_is_caught(explored):
    _, reward = explored["spinning_cube_esm/webgl_setup_throws"]
    gate = reward.details["explore"]["gate"]
    assert not gate["passed"] and not gate["no_errors"] and reward.value == 0.0
    assert any("cannot start the renderer" in e for e in reward.details["explore"]["errors"])


@pytest.mark.browser
def test_error_after_an_interaction_names_the_interaction(explored):
    _, reward = explored["todo_list/error_after_interaction"]
    errors = reward.details["explore"]["errors"]
    assert any("after type + Enter" in e for e in errors), errors
    assert reward.details["explore"]["gate"]["loaded"]  # it loaded fine: the error came later


@pytest.mark.browser
def test_each_interaction_has_a_keyframe_taken_after_it_settled(explored):
    _, reward = explored["pixel_board/correct"]
    ex = reward.details["explore"]
    tried = [i for i in ex["interactions"] if i["ok"]]
    assert tried
    for i in tried:
        assert i["keyframe"] and Path(i["keyframe"]).is_file()
        assert i["started_s"] <= i["acted_s"] <= i["settled_s"] <= i["keyframe_s"]
    times = [k["t_s"] for k in ex["keyframes"]]
    assert times == sorted(times) and ex["keyframes"][0]["label"].startswith("after load")
    assert any(i["effect"] == "live" and i["kind"] == "handler" for i in ex["interactions"])  # the board paints


@pytest.mark.browser
def test_dead_controls_and_layout_are_named(explored):
    _, dead = explored["pixel_board/state_not_updating"]
    assert dead.details["explore"]["interactivity"]["dead"] and not dead.details["explore"]["interactivity"]["passed"]
    _, wide = explored["sales_dashboard/layout_broken"]
    assert not wide.details["explore"]["gate"]["fits_viewport"]
    assert wide.details["explore"]["overflow"]["scrollWidth"] > wide.details["explore"]["overflow"]["innerWidth"]


@pytest.mark.browser
def test_evidence_bundle_and_the_interface_the_reward_blend_reads(explored):
    _, reward = explored["sales_dashboard/correct"]
    ex = reward.details["explore"]
    assert reward.details["mode"] == "explore"
    assert set(ex["gate"]) >= {"passed", "loaded", "no_errors", "not_blank", "responsive", "fits_viewport", "reasons"}
    assert set(ex["interactivity"]) >= {"controls", "live", "share", "passed", "dead"}
    assert ex["cdn"]["shimmed"] >= 1  # Chart.js came through the shim
    report = json.loads(Path(reward.evidence["report_json"]).read_text())
    assert report["mode"] == "explore" and report["passed"] is True
    html = Path(reward.evidence["report_html"]).read_text()
    assert "PASSED" in html and "data:image/png;base64," in html


@pytest.mark.browser
def test_a_dialog_in_the_way_is_dismissed(explored):
    _, reward = explored["modal_dialog/correct"]
    assert reward.passed, reward.details["failed_checks"]
    choose = [i for i in reward.details["explore"]["interactions"] if i["label"] == "Choose"]
    assert choose and choose[0]["effect"] == "live"


@pytest.mark.browser
def test_webgl_context_with_the_verifier_flags(web):
    from envfarm.verifiers.web.interact import WEBGL_JS

    async def probe():
        context = await web.host.browser.new_context()
        try:
            page = await context.new_page()
            return await page.evaluate(WEBGL_JS), await page.evaluate("() => !!document.createElement('canvas').getContext('webgl2')")
        finally:
            await context.close()

    webgl, webgl2 = web.run(probe())
    assert webgl["available"] and webgl2 and "SwiftShader" in webgl["renderer"]


HANG_PAGE = """<!doctype html><link rel="icon" href="data:,"><h1>Hang</h1><p id="out">ready</p>
<button id="go">Compute</button>
<script>document.getElementById('go').addEventListener('click', () => { while (true) {} });</script>"""


@pytest.mark.browser
def test_a_page_that_hangs_after_a_click_is_unresponsive(web_ready, tmp_path):
    """Its own browser: a hung renderer may have to be killed with the browser."""
    from envfarm.verifiers.web.browser import BrowserHost
    from envfarm.verifiers.web.explorer import explore_web_async
    from envfarm.verifiers.web.interact import ExploreOptions

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "index.html").write_text(HANG_PAGE)

    async def main():
        async with BrowserHost() as host:
            return await explore_web_async(host, tmp_path / "app", tmp_path / "out", options=ExploreOptions(budget_s=15))

    reward = asyncio.run(main())
    gate = reward.details["explore"]["gate"]
    assert gate["loaded"] and not gate["responsive"] and reward.value == 0.0
    assert any("stopped answering" in r or "time limit" in r or "killed" in r for r in gate["reasons"]), gate["reasons"]


@pytest.mark.browser
def test_verify_web_without_a_script_explores(web_ready, tmp_path, monkeypatch):
    from envfarm.verifiers.cli import app

    monkeypatch.setenv("ENVFARM_HOME", str(tmp_path / "home"))
    page = next(p for p in load(["bmi_calculator"]) if p.correct)
    folder = page.write(tmp_path)
    result = CliRunner().invoke(app, ["web", str(folder), "--rubric", 'Clicking "Calculate" shows the BMI and its category.', "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    reward = json.loads(result.stdout.splitlines()[0])
    assert reward["passed"] and reward["details"]["mode"] == "explore"
    assert reward["details"]["explore"]["rubric"][0]["passed"] is True
    both = CliRunner().invoke(app, ["web", str(folder), str(CORPUS / "missing.yaml"), "--rubric", "x"])
    assert both.exit_code != 0 and "--rubric is for exploring" in str(both.exception)
