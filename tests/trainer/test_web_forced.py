"""A page written by someone else (a replayed or external author) is trained on with the log-probs the policy
gives it: `score_tokens` must be exactly what the rollout engine reports for the policy's own samples."""

from __future__ import annotations

import pytest

from envfarm.trainer.families.web import forced_completion, score_tokens
from envfarm.trainer.loop.config import TINY, load_config
from envfarm.trainer.loop.worker import build_policy
from envfarm.trainer.rollout.sampling import SamplingParams


def test_scoring_a_text_matches_the_engines_logprobs_for_its_own_sample():
    if not (TINY / "model.safetensors").exists():
        pytest.skip(f"pretrained tiny checkpoint missing in {TINY}: run make pretrain-tiny")
    policy = build_policy(load_config(None, [f"policy.checkpoint={TINY}"]))
    for temperature in (0.0, 1.0):
        sample = policy.generate(["def add(a, b):\n    return"], SamplingParams(max_new_tokens=12, temperature=temperature, seed=3),
                                 draft=None).completions[0]
        scored = score_tokens(policy, sample.prompt, sample.tokens)
        assert len(scored) == len(sample.logprobs) == len(sample.tokens)
        assert max(abs(a - b) for a, b in zip(scored, sample.logprobs)) < 1e-3
    forced = forced_completion(policy, "x = ", "1\n")
    assert forced.tokens == [ord("1"), ord("\n"), policy.model.config.eos_token_id] and len(forced.logprobs) == 3
    assert forced.prompt == policy.tokenizer.encode("x = ") and all(lp <= 0 for lp in forced.logprobs)
