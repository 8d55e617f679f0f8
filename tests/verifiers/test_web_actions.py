"""Every script action (goto, hover, press, scroll, wait, type/click are in the corpus) and the
`still` check failing on a region that moves."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_judge_sees_the_session_keyframes_and_can_be_blended(web, tmp_path, chat_server):
    url, handler = chat_server
    handler.reply = {"choices": [{"message": {"content": '{"executability": 10, "functional": 5, "visual": 0, "rationale": "r"}'}}]}
    script = load_script({"rubric": "a menu that opens on hover", "steps": [{"goto": "/"}, {"hover": "#menu", "expect": [{"visible": "#dropdown"}]}]})
    judge = JudgeClient(url, "vl-model", max_images=4)
    reward = web.run(verify_web_async(web.host, APP, script, tmp_path, judge=judge, judge_weight=0.5))
    assert reward.passed  # the verdict stays deterministic
    assert reward.details["judge"]["functional"] == 0.5
    assert reward.value == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    parts = handler.seen[0]["body"]["messages"][0]["content"]
    assert "a menu that opens on hover" in parts[0]["text"]
    assert sum(p["type"] == "image_url" for p in parts) == 4
