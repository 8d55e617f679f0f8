"""Every script action (goto, hover, press, scroll, wait, type/click are in the corpus) and the
`still` check failing on a region that moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from judge_server import ScriptedJudge, verdict

from envfarm.verifiers.web.blend import RewardBlend
from envfarm.verifiers.web.judge import JudgeClient
from envfarm.verifiers.web.script import load_script
from envfarm.verifiers.web.verifier import verify_web_async

pytestmark = pytest.mark.browser

APP = Path(__file__).parent / "webapps" / "probes" / "actions"

SCRIPT = """
check_overflow: true
steps:
  - goto: /
    expect:
      - visible: "#menu"
      - count: {selector: "#dropdown", equals: 1}
  - hover: "#menu"
    expect:
      - visible: "#dropdown"
      - changes: page
  - press: k
  - press: k
    expect:
      - text: {selector: "#keys", equals: "2"}
  - scroll: {selector: "#footer"}
    expect:
      - in_viewport: "#footer"
  - scroll: {dy: -5000}
    expect:
      - in_viewport: "#menu"
  - wait: 300
    expect:
      - still: "#spin"
      - still: "#menu"
"""


def test_actions_and_a_still_check_that_must_fail(web, tmp_path):
    reward = web.run(verify_web_async(web.host, APP, load_script(SCRIPT), tmp_path))
    failed = reward.details["failed_checks"]
    assert len(failed) == 1 and failed[0].startswith("still #spin"), failed
    assert not reward.passed
    assert reward.details["scores"]["executability"] == 1.0


def test_judge_sees_the_session_video_and_is_blended(web, tmp_path):
    """A real recorded session goes to the judge as one MP4 video part with the script's actions as its
    timeline; the reward is gate x blend and `passed` stays deterministic."""
    script = load_script({"rubric": "a menu that opens on hover", "steps": [{"goto": "/"}, {"hover": "#menu", "expect": [{"visible": "#dropdown"}]}]})
    with ScriptedJudge([verdict(10, 5, 0)]) as server:
        reward = web.run(verify_web_async(web.host, APP, script, tmp_path, judge=JudgeClient(server.url, "vl-model"), blend=RewardBlend(0.5)))
    assert reward.passed  # the verdict stays deterministic
    assert reward.details["judge"]["functional"] == 0.5 and reward.details["judge"]["media"] == "video/mp4"
    assert reward.value == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    parts = server.parts(0)
    assert [p["type"] for p in parts] == ["text", "video_url"] and parts[1]["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert "a menu that opens on hover" in parts[0]["text"] and "(video time): hover #menu" in parts[0]["text"]


def test_a_page_that_does_not_render_earns_zero_and_the_judge_is_not_asked(web, tmp_path):
    """ReLook's rule through the real verifier: a page whose DOM says everything is there while the screen
    shows nothing (text in the background colour) keeps a deterministic score above zero, the render gate
    makes it 0, and the judge (who would say 10/10) is never sent it."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "index.html").write_text('<!doctype html><body style="background:#fff"><p id="msg" style="color:#fff">hello</p></body>')
    script = load_script({"steps": [{"goto": "/", "expect": [{"visible": "#msg"}, {"text": {"selector": "#msg", "equals": "hello"}}, {"no_console_errors": True}, {"no_failed_requests": True}]}]})
    with ScriptedJudge([verdict(10, 10, 10)]) as server:
        reward = web.run(verify_web_async(web.host, app, script, tmp_path / "out", judge=JudgeClient(server.url, "vl"), blend=RewardBlend(0.9)))
        assert server.requests == []
    assert reward.value == 0.0 and reward.details["blend"]["deterministic"] > 0 and not reward.details["blend"]["rendered"]
    assert "page not blank after load" in reward.details["blend"]["not_rendered"] and "skipped" in reward.details["judge"]


def test_an_explored_page_goes_to_the_judge_as_video_with_its_interactions(web_ready, tmp_path):
    """Unscripted mode with a judge (what `envfarm verify web APP --rubric ... --judge-weight W` runs): the
    exploration's video and its interactions reach the judge, and its verdict is blended in."""
    from envfarm.verifiers.web.verifier import WebVerifier

    clicker = Path(__file__).parent / "webapps" / "clicker" / "correct"
    with ScriptedJudge([verdict(10, 10, 4)]) as server:
        reward = WebVerifier(judge=JudgeClient(server.url, "vl"), blend=RewardBlend(0.5)).explore_app(clicker, ["a button adds one"], tmp_path)
    assert reward.details["mode"] == "explore" and reward.details["judge"]["media"] == "video/mp4"
    deterministic = reward.details["blend"]["deterministic"]
    assert reward.value == pytest.approx(0.5 * deterministic + 0.5 * 0.8, abs=1e-4)
    text = server.parts(0)[0]["text"]
    assert "a button adds one" in text and "(video time): click" in text
