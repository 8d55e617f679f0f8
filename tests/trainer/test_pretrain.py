"""Pretraining runs, writes a loadable checkpoint and a report, and resumes where it stopped."""

from __future__ import annotations

import json

import pytest
import torch

from envfarm.trainer import pretrain
from envfarm.trainer.model import load_checkpoint


@pytest.mark.slow  # loads the 30 MB stdlib corpus twice
def test_pretrain_writes_checkpoint_and_resumes(tmp_path):
    out, state = tmp_path / "ckpt", tmp_path / "state.pt"
    common = ["--out", str(out), "--state", str(state), "--batch", "2", "--seq-len", "32", "--eval-batches", "1",
              "--threads", "1"]
    first = pretrain.main(["--minutes", "0.01", "--fresh", *common])
    assert state.exists() and first["steps"] >= 1
    report = json.loads((out / "pretrain_report.json").read_text())
    assert report["unigram_val_loss"] > 2.0 and "mtp3_val_top1" in report
    second = pretrain.main(["--minutes", "0.03", *common])
    assert second["steps"] > first["steps"]  # continued from the saved step, not from zero
    model = load_checkpoint(out)
    assert model(torch.tensor([[256, 100, 101]])).logits.shape == (1, 3, 264)
