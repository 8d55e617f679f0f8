"""Pieces of the web verifier that need no browser: frame signals, the judge client (against a real
HTTP server on 127.0.0.1), and the ffmpeg link for Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from envfarm.errors import EnvfarmError
from envfarm.verifiers.web import setup_ffmpeg
from envfarm.verifiers.web.judge import JudgeClient, parse_verdict
from envfarm.verifiers.web.visual import Frames, align_to_flash, blank_fraction, changed_fraction, is_blank, motion_series, save_png


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


def test_judge_sends_keyframes_and_rubric_and_reads_scores(chat_server, tmp_path):
    url, handler = chat_server
    content = 'Here you go:\n```json\n{"executability": 10, "functional": 7, "visual": 12, "rationale": "ball moves"}\n```'
    handler.reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
    frames = [save_png(_frame((i * 20, 0, 0)), tmp_path / f"k{i}.png") for i in range(12)]
    verdict = JudgeClient(url, "qwen-vl", api_key="k-123", max_images=5).judge(frames, "a circling ball", ["animates #spinner: moved in 0%"])
    assert (verdict.executability, verdict.functional, verdict.visual) == (1.0, 0.7, 1.0)
    assert verdict.rationale == "ball moves" and verdict.model == "qwen-vl"
    request = handler.seen[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k-123"
    parts = request["body"]["messages"][0]["content"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 5 and all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in images)
    assert "a circling ball" in parts[0]["text"] and "animates #spinner" in parts[0]["text"]


def test_judge_errors_are_named(chat_server, tmp_path):
    url, handler = chat_server
    handler.reply = "not json at all"
    with pytest.raises(EnvfarmError, match="not an OpenAI chat completion"):
        JudgeClient(url, "m").judge([], "", [])
    handler.reply = {"choices": [{"message": {"content": "I think it looks nice."}}]}
    with pytest.raises(EnvfarmError, match="without JSON"):
        JudgeClient(url, "m").judge([], "", [])
    with pytest.raises(EnvfarmError, match="lacks numeric"):
        parse_verdict('{"executability": "high"}', "m")
    with pytest.raises(EnvfarmError, match="unreachable"):
        JudgeClient("http://127.0.0.1:9", "m", timeout=2).judge([], "", [])


def test_judge_is_off_unless_configured(monkeypatch):
    monkeypatch.delenv("ENVFARM_JUDGE_URL", raising=False)
    assert JudgeClient.from_env() is None
    monkeypatch.setenv("ENVFARM_JUDGE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("ENVFARM_JUDGE_MODEL", "vl")
    client = JudgeClient.from_env()
    assert client is not None and client.model == "vl"


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
