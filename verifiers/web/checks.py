"""Checks read from the video, session-wide checks, and the three scores of the reference's web
verifier (executability, functional correctness, visual quality)."""

from __future__ import annotations

from dataclasses import dataclass

from envfarm.verifiers.web.runner import CheckResult, SessionRecord
from envfarm.verifiers.web.script import InteractionScript
from envfarm.verifiers.web.visual import CHANGED_FRACTION, Frames, blank_fraction, changed_fraction, motion_series

ANIMATING_SHARE = 0.5  # of consecutive frame pairs in the window that must differ
ANIMATION_SPACING_S = 0.25
VIDEO_LAG_S = 0.1  # a paint reaches the screencast a frame or two after the DOM change


def visual_checks(record: SessionRecord, script: InteractionScript, frames: Frames) -> list[CheckResult]:
    out: list[CheckResult] = []
    for rec in record.steps:
        if not rec.ok:
            continue
        step = script.steps[rec.index]
        for exp in step.expect:
            if not exp.visual:
                continue
            region = exp.changes or exp.animates or exp.still
            box = rec.boxes.get(region)
            name = f"{exp.kind} {region}"
            if box is None or box[2] <= 0 or box[3] <= 0:
                out.append(CheckResult(name, False, "region not found on the page", rec.index, "video"))
                continue
            if exp.changes:
                # The largest change seen in any frame after the step: robust to frames that reach the
                # video late, while a step that changes nothing still shows 0% in every frame.
                before = frames.at(rec.started_s)
                after = frames.between(rec.ended_s + VIDEO_LAG_S, max(rec.window_end_s, rec.ended_s + VIDEO_LAG_S))
                frac = max(changed_fraction(before, frame, tuple(box)) for frame in after)
                out.append(CheckResult(name, frac > CHANGED_FRACTION, f"{frac:.2%} of the region changed across the step", rec.index, "video"))
                continue
            window = frames.between(rec.ended_s + VIDEO_LAG_S, rec.window_end_s)
            if exp.animates:
                # Compare frames ANIMATION_SPACING_S apart: on a loaded machine the screencast delivers
                # fewer frames than the analysis rate, so neighbouring decoded frames can be repeats.
                stride = max(1, round(ANIMATION_SPACING_S / frames.period))
                window = window[::stride]
            series = motion_series(window, tuple(box))
            if len(series) < 2:
                out.append(CheckResult(name, False, f"only {len(window)} frame(s) in the window", rec.index, "video"))
                continue
            moving = sum(f > CHANGED_FRACTION for f in series) / len(series)
            if exp.animates:
                out.append(CheckResult(name, moving >= ANIMATING_SHARE, f"moved in {moving:.0%} of {len(series)} frame pairs", rec.index, "video"))
            else:
                out.append(CheckResult(name, moving == 0, f"moved in {moving:.0%} of {len(series)} frame pairs (max {max(series):.2%})", rec.index, "video", "visual"))
    return out


def session_checks(record: SessionRecord, script: InteractionScript, frames: Frames | None) -> list[CheckResult]:
    out: list[CheckResult] = []
    if record.error:
        out.append(CheckResult("browser session", False, record.error, None, "session", "executability"))
    if record.page_errors:
        out.append(CheckResult("no uncaught exceptions", False, "; ".join(record.page_errors[:3]), None, "session", "executability"))
    if frames is None or len(frames) == 0:
        out.append(CheckResult("video recorded", False, "no frames could be read from the session video", None, "video", "executability"))
        return out
    if script.check_blank:
        loaded = next((r for r in record.steps if r.ok and script.steps[r.index].goto is not None), None)
        moments = ([("after load", loaded.ended_s + VIDEO_LAG_S)] if loaded else []) + [("at the end", float(frames.times[-1]))]
        for label, t in moments:
            frac = blank_fraction(frames.at(t))
            out.append(CheckResult(f"page not blank {label}", frac >= 0.002, f"{frac:.2%} of pixels differ from the background", None, "video", "executability"))
    if script.check_overflow and record.overflow:
        over = record.overflow["scrollWidth"] - record.overflow["innerWidth"]
        out.append(CheckResult("no horizontal overflow", over <= 1, f"content is {over}px wider than the viewport" if over > 1 else "fits", None, "session", "visual"))
    return out


@dataclass
class Scores:
    executability: float
    functional: float
    visual: float

    @property
    def value(self) -> float:
        """Executability gates the rest: a page that does not run earns little for looking right."""
        return round(self.executability * (0.7 * self.functional + 0.3 * self.visual), 4)


def score(checks: list[CheckResult]) -> Scores:
    def axis(name: str) -> float:
        mine = [c for c in checks if c.axis == name]
        return sum(c.passed for c in mine) / len(mine) if mine else 1.0

    return Scores(axis("executability"), axis("functional"), axis("visual"))
