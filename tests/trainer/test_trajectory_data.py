"""Trajectories written by `envfarm rollout` train envfarm's policy: rendered into the policy's text protocol with
only the assistant turns as targets, filtered by reward, and reward-weighted fine-tuning lowers the policy's loss on
the passing episode's actions (the tiny checkpoint, real steps on CPU). Bad files are one clear error."""

from __future__ import annotations

import json

import pytest
import torch

from envfarm.agent.episode import Transcript
from envfarm.agent.trajectories import TrajectoryFile, trajectory_row
from envfarm.errors import EnvfarmError
from envfarm.trainer.data.trajectories import demo_loss, load_trajectories
from envfarm.verifiers.reward import Reward

EDIT = {"path": "calc.py", "old": "    return a - b\n", "new": "    return a + b\n"}


def _episode(passed: bool) -> Transcript:
    """A chat episode as the OpenAI policy records it: native calls, tool messages with their call ids."""
    messages = [{"role": "system", "content": "You fix bugs in the repository at /testbed."},
                {"role": "user", "content": "add(2, 3) returns -1 instead of 5."},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "cat calc.py"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "def add(a, b):\n    return a - b\n[exit code 0]"}]
    if passed:
        messages += [{"role": "assistant", "content": "The sign is wrong.", "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "str_replace", "arguments": json.dumps(EDIT)}}]},
            {"role": "tool", "tool_call_id": "c2", "content": "edited calc.py"}]
    messages += [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c3", "type": "function", "function": {"name": "finish", "arguments": "{}"}}]}]
    return Transcript("envfarm__calc-1", messages, steps=3, finish_reason="finish")


@pytest.fixture
def trajectory_file(tmp_path):  # type: ignore[no-untyped-def]
    file = TrajectoryFile(tmp_path / "t.jsonl")
    file.open()
    file.append(trajectory_row("envfarm__calc-1", 0, "r0", "m", _episode(True), Reward(1.0, True, {})))
    file.append(trajectory_row("envfarm__calc-1", 1, "r1", "m", _episode(False), Reward.zero("FAIL_TO_PASS failed")))
    return file.path


def test_passing_episodes_render_with_only_assistant_turns_as_targets(trajectory_file):
    (demo,) = load_trajectories(trajectory_file, min_reward=1.0)
    text = bytes(t for t in demo.tokens if t < 256).decode()
    target = bytes(t for t, m in zip(demo.tokens, demo.target) if m).decode()
    assert '<tool_call>{"name": "str_replace"' in target and '<tool_call>{"name": "finish"' in target
    assert "return a - b\n[exit code 0]" in text and "exit code" not in target  # observations are context only
    assert "add(2, 3)" not in target and demo.weight == 1.0
    assert len(load_trajectories(trajectory_file, min_reward=0.0)) == 2


def test_bad_trajectory_files_are_one_clear_error(tmp_path, trajectory_file):
    with pytest.raises(EnvfarmError, match="does not exist"):
        load_trajectories(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(trajectory_file.read_text() + '{"task_id": 3}\n')
    with pytest.raises(EnvfarmError, match=r"broken.jsonl:3 is not a trajectory line"):
        load_trajectories(broken)
    with pytest.raises(EnvfarmError, match="none of its 2 trajectories has reward >= 2.0"):
        load_trajectories(trajectory_file, min_reward=2.0)


@pytest.mark.slow
def test_fine_tuning_on_the_passing_episode_lowers_the_policy_loss_on_its_actions(trajectory_file, tmp_path):
    from envfarm.trainer.data.trajectories import main

    torch.manual_seed(0)
    report = main(["--file", str(trajectory_file), "--steps", "8", "--lr", "1e-3", "--out", str(tmp_path / "ckpt")])
    assert report["demos"] == 1 and report["loss_after"] < report["loss_before"] * 0.9, report
    assert (tmp_path / "ckpt" / "model.safetensors").exists()

    from envfarm.trainer.model import load_checkpoint

    demos = load_trajectories(trajectory_file)
    assert demo_loss(load_checkpoint(tmp_path / "ckpt"), demos) == pytest.approx(report["loss_after"], rel=1e-4)
