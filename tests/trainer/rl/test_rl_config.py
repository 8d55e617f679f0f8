"""Run configs: overrides, and bad values rejected before anything starts with the field and the fix named;
the `envfarm train` entry point parses overrides and options in any order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from envfarm.errors import EnvfarmError
from envfarm.trainer.loop.config import load_config

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "trainer/configs/demo.yaml"


def test_demo_config_and_overrides():
    cfg = load_config(DEMO, ["train.steps=7", "algo.lr=1e-4", "tasks.names=[int-literal, paren]", "policy.draft=none"])
    assert (cfg.train.steps, cfg.algo.lr, cfg.tasks.names, cfg.policy.draft) == (7, 1e-4, ["int-literal", "paren"], "none")
    assert cfg.policy.checkpoint.endswith("trainer/checkpoints/tiny")


@pytest.mark.parametrize("override, message", [
    ("algo.lr=-1", "algo.lr=-1: Input should be greater than 0"),
    ("rollout.group_size=1", "rollout.group_size=1"),
    ("algo.lrr=1", "algo.lrr=1: Extra inputs are not permitted"),
    ("stream.stale_policy=ignore", "stream.stale_policy='ignore'"),
    ("algo.name=mopd", "algo.teachers is empty"),
    ("train.steps", "is not key=value"),
    ("train.steps.x=1", "train.steps=.*not a section|steps is not a section"),
])
def test_bad_values_name_the_field_and_the_fix(override, message):
    with pytest.raises(EnvfarmError, match=message) as info:
        load_config(DEMO, [override])
    assert info.value.fix


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(EnvfarmError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(EnvfarmError, match="not valid YAML"):
        load_config(bad)


def test_cli_parses_overrides_and_reports_bad_values_in_one_line():
    ok = subprocess.run([sys.executable, "-m", "envfarm.cli", "train", "train.steps=3", "--dry-run", "--set", "algo.lr=0.001"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert '"steps": 3' in ok.stdout and '"lr": 0.001' in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "envfarm.cli", "train", "rollout.num_workers=0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "rollout.num_workers=0" in bad.stderr and "fix:" in bad.stderr
