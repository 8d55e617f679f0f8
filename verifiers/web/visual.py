"""Visual signals computed from the recorded video, so broken pages are caught by what a person would
see, not only by the DOM: a page that renders nothing, an animation that does not move, a button whose
click changes nothing on screen.

Frames are decoded once by ffmpeg to raw RGB at a fixed rate; every signal is a numpy reduction.
A pixel counts as changed when its grey level moves by more than `PIXEL_DELTA`, which sits above
the VP9 encoder's noise on static content.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from envfarm.errors import EnvfarmError

PIXEL_DELTA = 24  # grey levels
CHANGED_FRACTION = 0.001  # of a region's pixels, for "this region changed"
BLANK_FRACTION = 0.002  # a page is blank when fewer pixels than this differ from its dominant colour

Box = tuple[int, int, int, int]  # x, y, width, height in video pixels


@dataclass
class Frames:
    times: np.ndarray  # seconds since the video started
    rgb: np.ndarray  # N x H x W x 3 uint8

    def __len__(self) -> int:
        return len(self.times)

    @property
    def period(self) -> float:
        return float(self.times[1] - self.times[0]) if len(self.times) > 1 else 1.0

    def index_at(self, t: float) -> int:
        return int(np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self) - 1))

    def at(self, t: float) -> np.ndarray:
        return self.rgb[self.index_at(t)]

    def between(self, t0: float, t1: float) -> np.ndarray:
        lo, hi = self.index_at(t0), self.index_at(t1)
        return self.rgb[lo : hi + 1]


def decode(video: Path, fps: float, size: tuple[int, int]) -> Frames:
    width, height = size
    cmd = ["ffmpeg", "-v", "error", "-i", str(video), "-vf", f"fps={fps},scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise EnvfarmError(f"ffmpeg could not decode {video}: {proc.stderr.decode(errors='replace')[-300:]}", "check the video file; run python -m envfarm.verifiers.web.setup_ffmpeg")
    frame_bytes = width * height * 3
    count = len(proc.stdout) // frame_bytes
    rgb = np.frombuffer(proc.stdout[: count * frame_bytes], dtype=np.uint8).reshape(count, height, width, 3)
    return Frames(times=np.arange(count) / fps, rgb=rgb)


def grey(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.int16).mean(axis=-1) if frame.ndim == 3 else frame.astype(np.int16)


def crop(frame: np.ndarray, box: Box | None) -> np.ndarray:
    if box is None:
        return frame
    x, y, w, h = box
    height, width = frame.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        return frame[0:0, 0:0]
    return frame[y0:y1, x0:x1]


def changed_fraction(a: np.ndarray, b: np.ndarray, box: Box | None = None) -> float:
    ra, rb = crop(a, box), crop(b, box)
    if ra.size == 0:
        return 0.0
    return float((np.abs(grey(ra) - grey(rb)) > PIXEL_DELTA).mean())


def motion_series(frames: np.ndarray, box: Box | None = None) -> list[float]:
    """Changed fraction between each pair of consecutive frames."""
    return [changed_fraction(frames[i], frames[i + 1], box) for i in range(len(frames) - 1)]


def blank_fraction(frame: np.ndarray) -> float:
    """Share of pixels that differ from the frame's dominant colour (0 for an empty page)."""
    g = grey(frame)
    values, counts = np.unique((g // 8).ravel(), return_counts=True)
    mode = values[np.argmax(counts)] * 8 + 4
    return float((np.abs(g - mode) > PIXEL_DELTA).mean())


def is_blank(frame: np.ndarray) -> bool:
    return blank_fraction(frame) < BLANK_FRACTION


def save_png(frame: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, optimize=False)
    return path


def align_to_flash(frames: Frames, flash_s: float, search_s: float = 3.0) -> float | None:
    """Shift `frames.times` onto the session clock using the black sync flash painted at `flash_s`.

    Returns the offset (video time minus session time), or None when no flash is found (times kept).
    """
    for i in range(len(frames)):
        if frames.times[i] > search_s:
            break
        if grey(frames.rgb[i][::8, ::8]).mean() < 30:
            offset = float(frames.times[i]) - flash_s
            frames.times = frames.times - offset
            return offset
    return None
