"""Trainer checkpoints that a killed run resumes from: weights (safetensors), optimizer, step, policy
version, scheduler state, and the rollout ids trained since the last ledger commit.

Written to a temporary folder and swapped in with renames, so a kill at any point leaves either the
old or the new checkpoint complete."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from envfarm.trainer.model.checkpoint import load_checkpoint, save_checkpoint
from envfarm.trainer.model.policy_model import PolicyModel


def save(folder: Path, model: PolicyModel, state: dict[str, Any]) -> None:
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp)
    torch.save(state, tmp / "trainer.pt")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def latest(folder: Path) -> Path | None:
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "trainer.pt").exists() and (candidate / "model.safetensors").exists():
            return candidate
    return None


def load(folder: Path) -> tuple[PolicyModel, dict[str, Any]]:
    return load_checkpoint(folder), torch.load(folder / "trainer.pt", weights_only=False)
