"""Step keyframes (what the report and the judge see) show the page after the step's effect.

The page is three 600 px bands, dark red, light green, blue, and scrolls itself smoothly: a wheel
event starts an 800 ms scroll animation, so the wheel action returns long before the effect is over.
After a 600 px wheel scroll the viewport shows the green band. A keyframe picked from the video at
the step's end (what the report used to do) shows the page mid-scroll, part red; the runner's
keyframe is a screenshot taken once the scroll position has held still for three animation frames
and nothing is in flight.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from envfarm.verifiers.web.script import load_script
from envfarm.verifiers.web.verifier import verify_web_async

pytestmark = pytest.mark.browser

PAGE = """<!doctype html><html><head><link rel="icon" href="data:,"><style>
body { margin: 0; }
.band { height: 600px; } #a { background: rgb(160, 0, 0); } #b { background: rgb(120, 255, 120); } #c { background: rgb(0, 0, 220); }
</style></head><body><div class="band" id="a"></div><div class="band" id="b"></div><div class="band" id="c"></div>
<script>
// The page's own smooth scrolling, as many pages do it: the wheel starts an 800 ms animation.
let target = 0;
addEventListener("wheel", (e) => {
  e.preventDefault();
  const from = scrollY, t0 = performance.now();
  target = Math.max(0, target + e.deltaY);
  const step = (now) => {
    const k = Math.min(1, (now - t0) / 800);
    scrollTo(0, from + (target - from) * k);
    if (k < 1) requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}, { passive: false });
</script></body></html>"""

SCRIPT = {
    "viewport": {"width": 400, "height": 300},
    "check_blank": False,  # each band is one colour: "blank" by design
    "steps": [
        {"goto": "/"},
        {"scroll": {"dy": 600}, "settle_ms": 0, "expect": [{"changes": "page"}]},
    ],
}


def _colour(path: str) -> tuple[int, int, int]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return tuple(int(v) for v in np.median(rgb.reshape(-1, 3), axis=0))


def test_scroll_step_keyframe_shows_the_scrolled_page(web, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "index.html").write_text(PAGE)
    reward = web.run(verify_web_async(web.host, tmp_path / "app", load_script(SCRIPT), tmp_path / "out"))
    assert reward.passed, reward.details["failed_checks"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    steps = {k["step"]: k for k in report["keyframe_times"] if k["step"] is not None}
    before, after = steps[0], steps[1]
    assert _colour(before["path"]) == (160, 0, 0)
    assert _colour(after["path"]) == (120, 255, 120)  # the band 600 px down: the scroll had finished
    # The evidence says when and how each keyframe was taken.
    for entry in (before, after):
        assert entry["source"] == "screenshot after the step settled"
        assert entry["settled"] == {"scroll": True, "network": True, "frames": True}
    session_steps = report["session"]["steps"]
    assert session_steps[1]["keyframe_s"] >= session_steps[1]["started_s"]
    assert report["keyframes"][:2] == [before["path"], after["path"]]  # what the judge is sent first
    fixed = [k for k in report["keyframe_times"] if k["step"] is None]
    assert fixed and all(k["source"] == "video frame at a fixed rate" for k in fixed)
