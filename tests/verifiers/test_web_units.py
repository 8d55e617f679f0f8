"""Pieces of the web verifier that need no browser: frame signals and the ffmpeg link for Playwright
(the judge client has its own tests: test_web_judge.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from envfarm.errors import EnvfarmError
from envfarm.verifiers.web import setup_ffmpeg
from envfarm.verifiers.web.visual import Frames, align_to_flash, blank_fraction, changed_fraction, is_blank, motion_series


def _frame(color=(255, 255, 255), h=120, w=160) -> np.ndarray:
    return np.full((h, w, 3), color, dtype=np.uint8)


def test_blank_detection():
    page = _frame()
    assert is_blank(page) and blank_fraction(page) == 0.0
    page[10:40, 10:80] = (30, 90, 200)  # one button
    assert not is_blank(page)
    assert is_blank(_frame((20, 20, 20)))  # a dark empty page is blank too


def test_region_change_and_motion():
    a, b = _frame(), _frame()
    b[50:60, 50:60] = 0
    assert changed_fraction(a, b) == pytest.approx(100 / (120 * 160))
    assert changed_fraction(a, b, (0, 0, 40, 40)) == 0.0  # outside the moving region
    assert changed_fraction(a, b, (500, 500, 10, 10)) == 0.0  # region entirely off-frame
    frames = np.stack([_frame() for _ in range(4)])
    for i in range(4):
        frames[i, 10:20, 10 + 10 * i : 20 + 10 * i] = 0
    assert all(f > 0 for f in motion_series(frames))
    assert motion_series(np.stack([_frame()] * 3)) == [0.0, 0.0]


def test_video_noise_below_threshold_is_not_change():
    rng = np.random.default_rng(0)
    a = _frame()
    noisy = np.clip(a.astype(int) - rng.integers(0, 12, a.shape), 0, 255).astype(np.uint8)
    assert changed_fraction(a, noisy) == 0.0


def test_align_to_flash_shifts_times():
    frames = Frames(times=np.arange(10) / 10, rgb=np.stack([_frame()] * 10))
    frames.rgb[4] = 0  # flash seen at video time 0.4
    offset = align_to_flash(frames, flash_s=0.1)
    assert offset == pytest.approx(0.3) and frames.times[4] == pytest.approx(0.1)
    assert align_to_flash(Frames(times=np.arange(3) / 10, rgb=np.stack([_frame()] * 3)), 0.1) is None


def test_setup_ffmpeg_is_idempotent_and_repairs(tmp_path, monkeypatch):
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not installed: run make setup")
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path))
    fake_old = tmp_path / "old-ffmpeg"
    fake_old.write_text("")
    link = setup_ffmpeg.ffmpeg_link_path()
    assert link.parent.name == f"ffmpeg-{setup_ffmpeg.ffmpeg_revision()}"
    link.parent.mkdir(parents=True)
    link.symlink_to(fake_old)  # a stale link from an earlier install
    assert setup_ffmpeg.ensure_ffmpeg_link(ffmpeg).resolve() == Path(ffmpeg).resolve()
    assert setup_ffmpeg.ensure_ffmpeg_link(ffmpeg) == link  # second run changes nothing
    assert setup_ffmpeg.video_ready()


def test_setup_ffmpeg_names_a_broken_browsers_json(tmp_path):
    bad = tmp_path / "browsers.json"
    bad.write_text('{"browsers": [{"name": "chromium", "revision": "1"}]}')
    with pytest.raises(EnvfarmError, match="names no ffmpeg entry"):
        setup_ffmpeg.ffmpeg_revision(bad)
