"""The evidence bundle: video, keyframes, report.json, and a self-contained report.html (frames as
data URIs) that a person can open to see what the verifier saw next to what it concluded."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from envfarm.verifiers.web.checks import Scores
from envfarm.verifiers.web.runner import SessionRecord
from envfarm.verifiers.web.script import InteractionScript
from envfarm.verifiers.web.visual import Frames, save_png

MAX_PERIODIC = 40


def _thumb_uri(frame: np.ndarray, width: int = 320) -> str:
    image = Image.fromarray(frame)
    image.thumbnail((width, width))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_evidence(out_dir: Path, record: SessionRecord, script: InteractionScript, frames: Frames | None, scores: Scores, details: dict[str, Any]) -> dict[str, Any]:
    keyframes: list[str] = []
    taken: list[dict[str, Any]] = []  # when and how each keyframe was taken, for whoever reads them
    tiles: list[tuple[str, np.ndarray, list]] = []
    kf = out_dir / "keyframes"
    have_video = frames is not None and len(frames) > 0
    for rec in record.steps:
        # The screenshot the runner took once the step had settled; the video frame only when there is none.
        if rec.keyframe and Path(rec.keyframe).is_file():
            frame = np.asarray(Image.open(rec.keyframe).convert("RGB"))
            path, source, when = rec.keyframe, "screenshot after the step settled", rec.keyframe_s
        elif have_video:
            when = rec.ended_s + 0.15
            frame = frames.at(when)
            path, source = str(save_png(frame, kf / f"step-{rec.index:02d}.png")), "video frame (no screenshot could be taken)"
        else:
            continue
        keyframes.append(path)
        taken.append({"path": path, "step": rec.index, "t_s": when, "source": source, "settled": rec.settled})
        tiles.append((f"step {rec.index}: {rec.label} ({'ok' if rec.ok else 'FAILED'}) at {when:.2f}s", frame, [c for c in record.checks if c.step == rec.index]))
    if have_video:
        period = 1.0 / script.frame_rate
        # From just after the black sync flash (see runner.py), which would only confuse a reader.
        times = np.arange(record.sync_s + 0.3, float(frames.times[-1]) + 1e-9, period)[:MAX_PERIODIC]
        for t in times:
            keyframes.append(str(save_png(frames.at(float(t)), kf / f"t-{t:06.2f}.png")))
            taken.append({"path": keyframes[-1], "step": None, "t_s": round(float(t), 3), "source": "video frame at a fixed rate"})
        periodic = [(f"t = {t:.2f}s", frames.at(float(t))) for t in times]
    else:
        periodic = []
    report = {
        "passed": all(c.passed for c in record.checks),
        "scores": {"executability": scores.executability, "functional": scores.functional, "visual": scores.visual, "value": scores.value},
        "session": record.to_dict(),
        "details": details,
        "keyframes": keyframes,
        "keyframe_times": taken,
        "cdn": {"shimmed": [r for r in record.cdn_requests if r["outcome"] != "blocked"],
                "blocked": [r for r in record.cdn_requests if r["outcome"] == "blocked"]},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "report.html").write_text(render_html(report, tiles, periodic))
    out = {"report_json": str(out_dir / "report.json"), "report_html": str(out_dir / "report.html"), "keyframes": keyframes}
    if record.video:
        out["video"] = record.video
    return out


def _check_rows(checks: list) -> str:
    rows = []
    for c in checks:
        mark = "pass" if c.passed else "FAIL"
        rows.append(f'<tr class="{mark.lower()}"><td>{mark}</td><td>{html.escape(c.check)}</td><td>{html.escape(c.detail)}</td><td>{c.source}</td><td>{c.axis}</td></tr>')
    return "\n".join(rows)


def render_html(report: dict[str, Any], tiles: list, periodic: list) -> str:
    s = report["scores"]
    session = report["session"]
    verdict = "PASSED" if report["passed"] else "FAILED"
    all_checks = [type("C", (), c) for c in session["checks"]]
    step_blocks = []
    for label, frame, checks in tiles:
        step_blocks.append(
            f'<div class="step"><img src="{_thumb_uri(frame, 480)}" alt="{html.escape(label)}"><div><h3>{html.escape(label)}</h3>'
            f"<table>{_check_rows(checks)}</table></div></div>"
        )
    strip = "".join(f'<figure><img src="{_thumb_uri(f, 200)}"><figcaption>{html.escape(l)}</figcaption></figure>' for l, f in periodic)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>envfarm web verification: {verdict}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; color: #222; }}
.verdict {{ font-size: 28px; font-weight: bold; color: {'#161' if report['passed'] else '#b11'}; }}
table {{ border-collapse: collapse; margin: 6px 0; }} td {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; vertical-align: top; }}
tr.fail td {{ background: #fdd; }} tr.pass td {{ background: #efe; }}
.step {{ display: flex; gap: 16px; margin: 12px 0; align-items: flex-start; }} .step img {{ border: 1px solid #999; }}
.strip {{ display: flex; flex-wrap: wrap; gap: 6px; }} figure {{ margin: 0; font-size: 11px; }} figure img {{ border: 1px solid #bbb; }}
</style></head><body>
<div class="verdict">{verdict}</div>
<p>origin {html.escape(session['origin'])} &middot; {session['duration_s']:.2f}s &middot; executability {s['executability']:.2f} &middot; functional {s['functional']:.2f} &middot; visual {s['visual']:.2f} &middot; reward {1.0 if report['passed'] else s['value']:.2f}</p>
<p>console errors: {html.escape('; '.join(session['console_errors'] + session['page_errors'])[:500] or 'none')} &middot; blocked requests: {len(session['blocked_requests'])} &middot; CDN requests served offline: {len(report['cdn']['shimmed'])} &middot; failed requests: {len(session['failed_requests'])}</p>
<h2>All checks</h2><table><tr><td></td><td>check</td><td>detail</td><td>from</td><td>axis</td></tr>{_check_rows(all_checks)}</table>
<h2>Steps</h2>{''.join(step_blocks) or '<p>no frames recorded</p>'}
<h2>Frames at a fixed rate</h2><div class="strip">{strip}</div>
</body></html>
"""


def write_exploration_evidence(out_dir: Path, record: Any, result: Any) -> dict[str, str]:
    """report.json and report.html for an unscripted exploration (explorer.py): the gate and why, each
    interaction with its effect and the keyframe taken once it settled, and when that was."""
    report = {"mode": "explore", "passed": result.passed, "score": result.score, "result": result.to_dict(), "session": record_summary(record)}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    rows = []
    for k in result.keyframes:
        path = Path(k["path"])
        if path.is_file():
            image = np.asarray(Image.open(path).convert("RGB"))
            rows.append(f'<figure><img src="{_thumb_uri(image, 320)}"><figcaption>{html.escape(k["label"])} at {k["t_s"]:.2f}s</figcaption></figure>')
    gate = result.gate
    verdict = "PASSED" if result.passed else "FAILED"
    items = "".join(
        f'<tr class="{"pass" if i["effect"] == "live" else "fail" if i["effect"] in ("dead", "failed") else ""}"><td>{i["effect"]}</td><td>{html.escape(i["action"])}</td>'
        f'<td>{html.escape(i["label"] or i["target"])}</td><td>{i["dom_changes"]}</td><td>{i["pixel_change"]:.3%}</td><td>{html.escape("; ".join(i["errors"]) or i["error"])}</td></tr>'
        for i in result.interactions
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result.failed_checks()) or "<li>none</li>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>envfarm web exploration: {verdict}</title>
<style>body {{ font-family: sans-serif; margin: 20px; }} td {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; }}
table {{ border-collapse: collapse; }} tr.fail td {{ background: #fdd; }} tr.pass td {{ background: #efe; }}
.strip {{ display: flex; flex-wrap: wrap; gap: 8px; }} figure {{ margin: 0; font-size: 11px; width: 320px; }}</style></head><body>
<h1 style="color: {'#161' if result.passed else '#b11'}">{verdict}</h1>
<p>gate: loaded {gate.loaded} &middot; no errors {gate.no_errors} &middot; not blank {gate.not_blank} &middot; responsive {gate.responsive} &middot; fits the viewport {gate.fits_viewport}
&middot; interactivity {result.interactivity['live']}/{result.interactivity['controls']} &middot; animates on its own {result.animation['on_its_own']} &middot; score {result.score:.2f}</p>
<h2>Why</h2><ul>{reasons}</ul>
<h2>Interactions</h2><table><tr><td>effect</td><td>action</td><td>target</td><td>DOM changes</td><td>pixels changed</td><td>errors</td></tr>{items}</table>
<h2>Keyframes (after each interaction settled)</h2><div class="strip">{''.join(rows)}</div>
</body></html>
"""
    (out_dir / "report.html").write_text(page)
    out = {"report_json": str(out_dir / "report.json"), "report_html": str(out_dir / "report.html")}
    if record.video:
        out["video"] = record.video
    return out


def record_summary(record: Any) -> dict[str, Any]:
    """The session's raw record less what the result already carries (interactions, controls)."""
    data = record.to_dict()
    for key in ("interactions", "checks", "steps"):
        data.pop(key, None)
    return data
