"""Verification without a script: explore the page (interact.py), read the video, score it.

The deterministic part of the reference's web reward, for pages no one wrote a script for:

- executability gate: the page loads, raises no errors (uncaught exceptions, console errors, failed
  requests of its own or to a CDN file that does not exist), is not blank, stays responsive (no hang,
  no time-out, no crash) and fits the viewport (no horizontal overflow, no control off screen);
- interactivity: the share of controls that do something. A control did something when the DOM changed
  outside the nodes that change on their own, the page navigated, or pixels changed outside the areas
  that animate on their own (measured from the video: the frame before the action against every frame
  once its effect settled, the control's own box left out because pressed and focus styles paint
  there). An effect that could only show inside self-animating pixels (a click on a spinning WebGL
  canvas) is undetermined and left out of the share rather than guessed;
- animation on its own, from the last second of an idle watch before any input;
- the rubric's requirements that a check covers (rubric.py); the others are left to the judge.

`passed` needs all three; `value` is 0 when the gate fails (ReLook's rule: a page that does not run
earns nothing for looking right), else the mean of the interactivity share and the share of covered
requirements met (1.0 when it passed).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from envfarm.verifiers.reward import Reward
from envfarm.verifiers.web.browser import BrowserHost
from envfarm.verifiers.web.cdn import CdnShim
from envfarm.verifiers.web.interact import ExplorationRecord, ExploreOptions, Interaction, explore_session
from envfarm.verifiers.web.report import write_exploration_evidence
from envfarm.verifiers.web.rubric import Requirement, requirements
from envfarm.verifiers.web.serve import serve_app
from envfarm.verifiers.web.visual import BLANK_FRACTION, PIXEL_DELTA, Frames, align_to_flash, blank_fraction, decode, grey

__all__ = ["ExploreOptions", "ExplorationResult", "analyse", "explore_web_async"]

ANALYSIS_FPS = 5.0
ANALYSIS_SCALE = 0.5  # frames are decoded at half the viewport: fractions of a region barely move, memory does
VIDEO_LAG_S = 0.1
MIN_CHANGED_PX = 40  # changed pixels (at analysis scale, about 160 on screen) for "this changed"
SHOWN_PX = 6  # changed pixels that confirm a changed class or style showed on screen
ANIMATION_SPACING_S = 0.2
ANIMATING_SHARE = 0.5
MASK_CELL = 8  # analysis pixels: the self-animation mask is kept per cell and grown by one cell
OWN_BOX_MARGIN = 2  # analysis pixels (4 on screen): a focus ring, not the content next to a button
FORM_KINDS = ("button", "link", "checkbox", "range", "select", "input", "field")
IGNORED_CONSOLE = ("favicon.ico", "net::ERR_BLOCKED_BY_CLIENT")


@dataclass
class Gate:
    loaded: bool = False
    no_errors: bool = False
    not_blank: bool = False
    responsive: bool = False
    fits_viewport: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.loaded and self.no_errors and self.not_blank and self.responsive and self.fits_viewport

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, **asdict(self)}


@dataclass
class ExplorationResult:
    gate: Gate
    interactivity: dict[str, Any]
    interactions: list[dict[str, Any]]
    animation: dict[str, Any]
    keyframes: list[dict[str, Any]]
    rubric: list[dict[str, Any]]
    errors: list[str]
    webgl: dict[str, Any]
    cdn: dict[str, int]
    overflow: dict[str, int]
    untried: list[str]
    skipped: list[str]
    passed: bool = False
    score: float = 0.0

    def failed_checks(self) -> list[str]:
        out = [f"gate: {r}" for r in self.gate.reasons]
        out += [f"dead control {d}" for d in self.interactivity["dead"]]
        out += [f"rubric: {r['requirement']} ({r['check']}): {r['detail']}" for r in self.rubric if r["passed"] is False]
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gate"] = self.gate.to_dict()
        return out


def _mask_grow(mask: np.ndarray) -> np.ndarray:
    """Per-cell mask grown by one cell, back at pixel resolution."""
    h, w = mask.shape
    ch, cw = -(-h // MASK_CELL), -(-w // MASK_CELL)
    padded = np.zeros((ch * MASK_CELL, cw * MASK_CELL), bool)
    padded[:h, :w] = mask
    cells = padded.reshape(ch, MASK_CELL, cw, MASK_CELL).any(axis=(1, 3))
    grown = cells.copy()
    grown[1:] |= cells[:-1]
    grown[:-1] |= cells[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return np.repeat(np.repeat(grown, MASK_CELL, 0), MASK_CELL, 1)[:h, :w]


def _scaled(box: list[int], scale: float) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return int(x * scale), int(y * scale), max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def _box_mask(shape: tuple[int, int], box: tuple[int, int, int, int], margin: int = 0) -> np.ndarray:
    out = np.zeros(shape, bool)
    x, y, w, h = box
    out[max(0, y - margin) : max(0, y + h + margin), max(0, x - margin) : max(0, x + w + margin)] = True
    return out


def self_animation(record: ExplorationRecord, frames: Frames, scale: float) -> tuple[np.ndarray, dict[str, Any]]:
    """What moves with no input, from the last second of the idle watch: the mask of pixels that
    animate on their own (grown, and widened to any canvas/svg/video they fall in) and a summary."""
    shape = frames.rgb.shape[1:3]
    t0, t1 = record.idle
    window = frames.between(max(t0, t1 - 1.0) + VIDEO_LAG_S, t1)
    stride = max(1, round(ANIMATION_SPACING_S / frames.period))
    window = window[::stride]
    mask = np.zeros(shape, bool)
    moving = 0
    for a, b in zip(window[:-1], window[1:]):
        diff = np.abs(grey(a) - grey(b)) > PIXEL_DELTA
        moving += int(diff.sum() >= MIN_CHANGED_PX)
        mask |= diff
    pairs = max(0, len(window) - 1)
    share = moving / pairs if pairs else 0.0
    regions = []
    if mask.any():
        mask = _mask_grow(mask)
        for box in record.media_boxes:
            sb = _scaled(box, scale)
            inside = _box_mask(shape, sb)
            if (mask & inside).sum() >= MIN_CHANGED_PX:
                mask |= inside
                regions.append(box)
        ys, xs = np.nonzero(mask)
        if not regions:
            regions.append([int(xs.min() / scale), int(ys.min() / scale), int((xs.max() - xs.min() + 1) / scale), int((ys.max() - ys.min() + 1) / scale)])
    summary = {"on_its_own": pairs >= 2 and share >= ANIMATING_SHARE, "moving_share": round(share, 3), "frame_pairs": pairs,
               "regions": regions, "masked_share": round(float(mask.mean()), 4)}
    return mask, summary


def _effect(item: Interaction, frames: Frames, mask: np.ndarray, cosmetic: np.ndarray, scale: float) -> tuple[float, float, bool]:
    """(page change outside the self-animation mask, the buttons' boxes and the control's own box, change
    in the own box, whether the own box lies mostly inside the mask) for one interaction, from the video."""
    shape = frames.rgb.shape[1:3]
    before = grey(frames.at(item.started_s))
    after = frames.between(item.settled_s + VIDEO_LAG_S, max(item.window_end_s, item.settled_s + VIDEO_LAG_S))
    own = _box_mask(shape, _scaled(item.box, scale), OWN_BOX_MARGIN) if item.box else np.zeros(shape, bool)
    keep_own = item.kind in ("canvas", "keyboard", "scroll", "draggable", "handler", "hover")  # their effect is drawn where they are
    outside = ~mask & ~cosmetic & (np.ones(shape, bool) if keep_own else ~own)
    best_out, best_own = 0, 0
    for frame in after:
        diff = np.abs(grey(frame) - before) > PIXEL_DELTA
        best_out = max(best_out, int((diff & outside).sum()))
        best_own = max(best_own, int((diff & own).sum()))
    # Where a good share of the page animates by itself (a spinning 3D scene), an effect drawn only into
    # it cannot be told from the animation: say so rather than call the control dead.
    hidden = float(mask.mean()) >= 0.2 or bool(own.any() and (own & mask).sum() > 0.3 * own.sum()) or (item.kind == "keyboard" and bool(mask.any()))
    own_area = max(1, int(own.sum()))
    return best_out, best_own / own_area, hidden


def _keyframes_differ(before: str, item: Interaction, mask: np.ndarray | None, cosmetic: np.ndarray, scale: float) -> bool:
    if not before or not item.keyframe or mask is None or not Path(before).is_file() or not Path(item.keyframe).is_file():
        return False
    size = (mask.shape[1], mask.shape[0])
    a = grey(np.asarray(Image.open(before).convert("RGB").resize(size)))
    b = grey(np.asarray(Image.open(item.keyframe).convert("RGB").resize(size)))
    own = _box_mask(mask.shape, _scaled(item.box, scale), OWN_BOX_MARGIN) if item.box and item.kind in FORM_KINDS else np.zeros(mask.shape, bool)
    return int(((np.abs(a - b) > PIXEL_DELTA) & ~mask & ~cosmetic & ~own).sum()) >= SHOWN_PX


def _console_errors(record: ExplorationRecord) -> list[str]:
    return [e for e in record.console_errors if not any(s in e for s in IGNORED_CONSOLE) and not e.startswith("Failed to load resource")]


def _gate(record: ExplorationRecord, frames: Frames | None, scale: float) -> Gate:
    gate = Gate()
    gate.loaded = record.loaded
    if not record.loaded:
        gate.reasons.append(record.hang or record.error or "the page did not load")
    own_failed = [f for f in record.failed_requests if f.startswith(record.origin) and "favicon.ico" not in f]
    cdn_missing = [f"{r['url']} ({r['detail'] or r['outcome']})" for r in record.cdn_requests if r["outcome"] in ("not_found", "blocked")]
    errors = record.page_errors + _console_errors(record)
    gate.no_errors = not (errors or own_failed or cdn_missing)
    if errors:
        gate.reasons.append("errors: " + " | ".join(errors[:3]))
    if own_failed or cdn_missing:
        gate.reasons.append("failed requests: " + " | ".join((own_failed + cdn_missing)[:3]))
    if frames is not None and len(frames) and record.loaded:
        fractions = [blank_fraction(frames.at(t)) for t in (record.idle[1], float(frames.times[-1]))]
        gate.not_blank = min(fractions) >= BLANK_FRACTION
        if not gate.not_blank:
            gate.reasons.append(f"blank page: {min(fractions):.2%} of pixels differ from the background")
    elif record.loaded:
        gate.reasons.append("no video frames could be read")
    gate.responsive = record.responsive and not record.timed_out and not record.error and not record.browser_killed and record.loaded
    if record.loaded and not gate.responsive:
        gate.reasons.append(record.hang or record.error or ("the session ran past its time limit" if record.timed_out else "the browser had to be killed"))
    size = record.overflow or {}
    over = size.get("scrollWidth", 0) - size.get("innerWidth", 0)
    width = size.get("innerWidth", 0)
    offscreen = [c.label or c.path for c in record.controls if c.box and (c.box[0] >= width or c.box[0] + c.box[2] <= 0)]
    gate.fits_viewport = record.loaded and over <= 1 and not offscreen
    if over > 1:
        gate.reasons.append(f"layout: content is {over}px wider than the {width}px viewport")
    if offscreen:
        gate.reasons.append("layout: controls off screen: " + ", ".join(offscreen[:3]))
    return gate


def _rubric(reqs: list[Requirement], animation: dict[str, Any], interactions: list[dict[str, Any]], drawn: bool, self_text: int) -> list[dict[str, Any]]:
    kinds = {"click": ("button", "link", "handler", "checkbox", "select", "range", "canvas"), "type": ("input", "field", "button"),
             "keyboard": ("keyboard",), "drag": ("canvas", "draggable"), "hover": ("hover", "canvas"), "scroll": ("scroll",)}
    out = []
    for req in reqs:
        entry: dict[str, Any] = {"requirement": req.text, "check": req.check, "passed": None, "detail": "left to the judge"}
        if req.check == "animates":
            entry["passed"], entry["detail"] = animation["on_its_own"], f"moved in {animation['moving_share']:.0%} of idle frame pairs"
        elif req.check == "text_changes":
            entry["passed"], entry["detail"] = self_text > 0, f"{self_text} element(s) changed what they show during the idle watch"
        elif req.check == "drawn":
            entry["passed"], entry["detail"] = drawn, "a canvas, svg or image with content" if drawn else "no canvas, svg or image drawn"
        elif req.check in kinds:
            named = [q.lower() for q in re.findall(r'["“]([^"”]{2,40})["”]', req.text)]
            if named:  # the requirement names its control ("Grow a tree"): that control must visibly respond
                tried = [i for i in interactions if any(q in (i["label"] or "").lower() for q in named)]
                if tried:
                    live = [i for i in tried if i["effect"] == "live"]
                    entry["passed"] = bool(live)
                    entry["detail"] = f"the control named {named[0]!r}: {len(live)} of {len(tried)} tries changed the page"
                    out.append(entry)
                    continue
            # "... shows the count": feedback a person reads, so an effect hidden in an animation is no excuse.
            wants_text = re.search(r"\b(show\w*|display\w*|count\w*|score\w*|label\w*|value|text|total\w*|messag\w*|result\w*)\b", req.text.lower())
            tried = [i for i in interactions if i["kind"] in kinds[req.check] and (wants_text or i["effect"] != "undetermined")]
            if req.check == "type":
                tried = [i for i in tried if i["kind"] != "button" or any(j["kind"] in ("input", "field") for j in interactions)]
            if tried:
                live = [i for i in tried if i["effect"] == "live"]
                entry["passed"] = bool(live)
                entry["detail"] = f"{len(live)} of {len(tried)} such interactions changed the page"
            elif req.check in ("hover", "scroll"):
                entry["detail"] = f"no {req.check} handler found: left to the judge"
            else:
                entry["passed"], entry["detail"] = False, f"nothing to {req.check} found on the page"
        out.append(entry)
    return out


def analyse(record: ExplorationRecord, frames: Frames | None, options: ExploreOptions, rubric: str | list[str] | None = None) -> ExplorationResult:
    scale = ANALYSIS_SCALE
    gate = _gate(record, frames, scale)
    have_video = frames is not None and len(frames) > 1
    if have_video:
        mask, animation = self_animation(record, frames, scale)
    else:
        mask, animation = None, {"on_its_own": False, "moving_share": 0.0, "frame_pairs": 0, "regions": [], "masked_share": 0.0}
    interactions = []
    groups: dict[str, list[str]] = {}
    by_id = {c.id: c for c in record.controls}
    shape = mask.shape if mask is not None else (1, 1)

    def cosmetic_for(item: Interaction, previous: Interaction | None) -> np.ndarray:
        """Buttons and fields restyle themselves and their siblings (the active tab, a pressed toggle) and
        the last control loses its focus ring: pixels there are not an effect."""
        out = np.zeros(shape, bool)
        acted = by_id.get(item.control)
        boxes = [c.box for c in record.controls if acted is not None and c.parent == acted.parent and (c.buttonish or c.kind in FORM_KINDS)]
        if previous is not None and previous.kind in ("input", "field", "range", "select", "checkbox"):  # focus ring leaving it
            boxes.append(previous.box)
        for box in boxes:
            if box:
                out |= _box_mask(shape, _scaled(box, scale), OWN_BOX_MARGIN)
        return out

    previous: Interaction | None = None
    for item in record.interactions:
        entry = asdict(item)
        cosmetic = cosmetic_for(item, previous)
        before_keyframe = (previous.keyframe if previous is not None else record.load_keyframe) or ""
        previous = item
        pixels, own, hidden = _effect(item, frames, mask, cosmetic, scale) if have_video and item.ok and item.settled_s else (0, 0.0, False)
        page_px = max(1, mask.size) if mask is not None else 1
        entry["pixel_change"] = round(pixels / page_px, 5)
        entry["region_change"] = round(own, 4)
        # A class or style change counts when some pixels moved with it: in the video, or, where the
        # screencast delivered its frames late, between the settled keyframes before and after.
        shows = pixels >= SHOWN_PX or (item.attrs_changed and _keyframes_differ(before_keyframe, item, mask, cosmetic, scale))
        dom = item.text_changed or (item.attrs_changed and (shows or item.kind == "scroll")) or item.navigated or (item.scrolled and item.kind == "link")
        pixel_effect = pixels >= MIN_CHANGED_PX and item.kind != "scroll"  # a scroll moves every pixel anyway
        control = by_id.get(item.control)
        # Keys, the wheel, a canvas and a form field alone are probes: libraries listen on them for every
        # page (p5 on window, Chart.js on its canvas for tooltips), so ignoring them is no bug by itself.
        # A rubric that asks for them ("arrow keys steer", "drag to draw") makes them count (see _rubric).
        optional = item.kind in ("keyboard", "scroll", "field", "canvas")
        if not item.ok:
            effect = "failed"
        elif dom or pixel_effect:
            effect = "live"
        elif hidden:
            effect = "undetermined"
        else:
            effect = "unused" if optional else "dead"
        entry["effect"] = effect
        entry["effective"] = effect == "live"
        interactions.append(entry)
        key = control.group if control else str(item.control)
        groups.setdefault(key, []).append(effect)
    judged = {g: e for g, e in groups.items() if any(x not in ("undetermined", "unused") for x in e) or "live" in e}
    live = [g for g, e in judged.items() if "live" in e]
    dead_groups = [g for g in judged if g not in live]
    labels = {}
    for item in record.interactions:
        control = by_id.get(item.control)
        if control:
            labels.setdefault(control.group, f"{item.kind} {item.label or item.target!r}".strip())
    share = len(live) / len(judged) if judged else 1.0
    interactivity = {"controls": len(judged), "live": len(live), "share": round(share, 4), "passed": not dead_groups,
                     "dead": [labels.get(g, g) for g in dead_groups], "undetermined": sum("undetermined" in e for g, e in groups.items() if g not in judged),
                     "unused": sum("unused" in e for g, e in groups.items() if g not in judged)}
    drawn = False
    if have_video and record.media_boxes and record.loaded:
        frame = grey(frames.at(record.idle[1]))
        for box in record.media_boxes:
            x, y, w, h = _scaled(box, scale)
            region = frame[max(0, y) : y + h, max(0, x) : x + w]
            if region.size and float((np.abs(region - np.median(region)) > PIXEL_DELTA).mean()) >= 0.01:
                drawn = True
    rubric_rows = _rubric(requirements(rubric), animation, interactions, drawn, record.self_mutations)
    keyframes = []
    if record.load_keyframe:
        keyframes.append({"path": record.load_keyframe, "t_s": record.load_keyframe_s, "label": "after load and the idle watch", "source": "screenshot after the page settled"})
    for entry in interactions:
        if entry["keyframe"]:
            keyframes.append({"path": entry["keyframe"], "t_s": entry["keyframe_s"], "label": f"{entry['action']} {entry['label'] or entry['target']} ({entry['effect']})",
                              "source": "screenshot after the interaction settled"})
    errors = [f"{e} (on load)" for e in record.page_errors[: len(record.page_errors)]]
    by_error = {e: f"{i['action']} {i['label'] or i['target']}" for i in interactions for e in i["errors"]}
    errors = [f"{e} (after {by_error[e]})" if e in by_error else f"{e} (on load)" for e in record.page_errors + _console_errors(record)]
    cdn = {"shimmed": sum(r["outcome"] != "blocked" for r in record.cdn_requests), "blocked": sum(r["outcome"] == "blocked" for r in record.cdn_requests)}
    result = ExplorationResult(gate, interactivity, interactions, animation, keyframes, rubric_rows, errors, record.webgl, cdn,
                               record.overflow, record.untried, record.skipped)
    covered = [r for r in rubric_rows if r["passed"] is not None]
    rubric_share = sum(bool(r["passed"]) for r in covered) / len(covered) if covered else 1.0
    result.passed = gate.passed and interactivity["passed"] and all(r["passed"] for r in covered)
    result.score = 1.0 if result.passed else (0.0 if not gate.passed else round(min(0.99, 0.5 * share + 0.5 * rubric_share), 4))
    return result


async def explore_web_async(
    host: BrowserHost, app: dict[str, Any] | Path | str, out_dir: Path, rubric: str | list[str] | None = "",
    options: ExploreOptions | None = None, cdn: CdnShim | None = None,
) -> Reward:
    """Explore one app with no script and score it (deterministic only; see the module docstring)."""
    start = time.monotonic()
    options = options or ExploreOptions()
    out_dir.mkdir(parents=True, exist_ok=True)
    await host.ensure_alive()
    with serve_app(app) as origin:
        record = await explore_session(host, origin, out_dir, options, cdn if cdn is not None else CdnShim())
    frames: Frames | None = None
    if record.video:
        size = (int(options.viewport["width"] * ANALYSIS_SCALE), int(options.viewport["height"] * ANALYSIS_SCALE))
        frames = await asyncio.to_thread(decode, Path(record.video), ANALYSIS_FPS, size)
        record.video_offset_s = align_to_flash(frames, record.sync_s)
    result = await asyncio.to_thread(analyse, record, frames, options, rubric)
    gate = result.gate
    checks = [gate.loaded, gate.no_errors, gate.not_blank, gate.responsive]
    details: dict[str, Any] = {
        "mode": "explore",
        "scores": {"executability": round(sum(checks) / len(checks), 4), "functional": result.interactivity["share"],
                   "visual": float(gate.fits_viewport and gate.not_blank)},
        "failed_checks": result.failed_checks(),
        "explore": result.to_dict(),
        "blocked_requests": record.blocked_requests[:20],
        "cdn_shimmed": result.cdn["shimmed"],
        "cdn_blocked": [f"{r['url']}: {r['detail']}" for r in record.cdn_requests if r["outcome"] == "blocked"][:20],
        "timed_out": record.timed_out,
        "browser_killed": record.browser_killed,
    }
    evidence = await asyncio.to_thread(write_exploration_evidence, out_dir, record, result)
    details["seconds"] = round(time.monotonic() - start, 3)
    return Reward(result.score, result.passed, details, evidence)
