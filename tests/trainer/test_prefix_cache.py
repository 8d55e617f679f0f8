"""The prefix cache across turns and continuous batching: every turn served from the cache must equal a full
recompute (greedy tokens, log-probs from the logits, routing for replay), with sliding windows crossed inside
a turn and across turns, in every draft mode; truncation, eviction, the GRPO shared prompt, and concurrent
episodes through one batched engine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from envfarm.trainer.model import PolicyModel, load_checkpoint, micro, token_logprobs
from envfarm.trainer.rollout import ContinuousBatcher, PrefixCache, RolloutEngine, SamplingParams

torch.set_num_threads(1)
TINY = Path(__file__).resolve().parents[2] / "trainer" / "checkpoints" / "tiny"
SYSTEM = [256] + list(b"<|system|>\nYou fix bugs in the repository at /repo.\n<|user|>\nThe parser drops the last line.\n<|assistant|>\n")
SOURCE = (b"def parse(text):\n    out = []\n    for line in text.splitlines():\n        if not line.strip():\n"
          b"            continue\n        out.append(line.split(','))\n    return out\n\n\nclass Reader:\n"
          b"    def __init__(self, path):\n        self.path = path\n\n    def rows(self):\n        with open(self.path) as f:\n"
          b"            return parse(f.read())\n") * 3


def pretrained() -> PolicyModel:
    if not (TINY / "model.safetensors").exists():
        pytest.skip(f"no pretrained tiny checkpoint in {TINY} (run `make pretrain-tiny`)")
    return load_checkpoint(TINY)


def observation(turn: int, length: int) -> list[int]:
    start = (turn * 97) % 200
    return list(b"\n<|tool|>\n" + SOURCE[start:start + length] + b"\n<|assistant|>\n")


def converse(engine: RolloutEngine, lengths: list[int], params: SamplingParams, draft, key) -> list:
    """A scripted episode: each turn's prompt is the last prompt + its completion + an observation."""
    ids, turns = list(SYSTEM), []
    for t, length in enumerate(lengths):
        c = engine.generate([ids], params, draft=draft, keys=None if key is None else [key]).completions[0]
        turns.append(c)
        ids = ids + c.tokens + observation(t, length)
    return turns


# observations shorter than the window (64): the window spans turns; longer: crossed inside the prefill;
# 80 new tokens per turn cross it inside the generation too
LENGTHS = [30, 150, 10, 90]


@pytest.mark.parametrize("draft", [None, "mtp", "adaptive"])
def test_turns_from_the_cache_equal_a_full_recompute(draft):
    model = pretrained()
    params = SamplingParams(max_new_tokens=80, temperature=0)
    fresh = converse(RolloutEngine(model), LENGTHS, params, draft, key=None)
    engine = RolloutEngine(model)
    cached = converse(engine, LENGTHS, params, draft, key="episode")
    assert [c.tokens for c in cached] == [c.tokens for c in fresh]
    window = model.config.sliding_window
    assert sum(len(c.tokens) for c in cached) > 2 * window
    for t, (c, f) in enumerate(zip(cached, fresh)):
        if t:  # every later turn prefilled only what the conversation gained
            assert c.stats["reused_tokens"] == len(cached[t - 1].sequence) - 1
            assert c.stats["prefilled_tokens"] == len(c.prompt) - c.stats["reused_tokens"]
        seq = torch.tensor([c.sequence])
        full = model(seq)
        # the routing-replay payload (prefix rows from the cache) equals a fresh full pass and the uncached turn
        assert torch.equal(c.routing[:-1], full.routing[0, :-1])
        assert torch.equal(c.routing[:-1], f.routing[:-1])  # the last token is fed only if a stop cut an accepted run
        # log-probs come from the logits of the cached pass: equal to the full recompute's
        lp = token_logprobs(model, seq)[0, len(c.prompt) - 1:]
        assert torch.allclose(lp, torch.tensor(c.logprobs), atol=1e-4)
        assert torch.allclose(torch.tensor(c.logprobs), torch.tensor(f.logprobs), atol=1e-4)
    stats = engine.prefix_cache.stats
    assert stats.hits == len(LENGTHS) - 1 and stats.dropped == 0


def test_cached_logits_equal_the_full_pass_at_every_new_position():
    """The entry's KV cache against the model itself: the logits of new tokens fed after a cached prefix
    (SWA ring wrapped many times) equal those of one pass over the whole sequence."""
    model = pretrained()
    engine = RolloutEngine(model)
    params = SamplingParams(max_new_tokens=70, temperature=0)
    c = converse(engine, [150], params, None, key="e")[0]
    entry, m = engine.prefix_cache.take("e", c.sequence + observation(1, 100))
    assert m == len(c.sequence) - 1 and entry is not None
    new = (c.sequence + observation(1, 100))[m:]
    cache = model.new_cache(1, slack=model.num_mtp + 1)
    cache.copy_rows(entry.cache, torch.tensor([0]), torch.tensor([0]))
    with torch.no_grad():
        got = model(torch.tensor([new]), positions=torch.arange(m, m + len(new))[None], cache=cache)
        full = model(torch.tensor([c.sequence + observation(1, 100)]))
    assert torch.allclose(got.logits[0], full.logits[0, m:], atol=1e-4)
    assert torch.equal(got.routing[0], full.routing[0, m:])
    assert torch.equal(entry.routing, full.routing[0, :m])


def test_a_changed_prefix_is_dropped_and_recomputed():
    """Truncation that changes the kept prefix (the middle of the conversation cut out) cannot reuse the
    rings: the entry is dropped and the turn equals an uncached one."""
    model = pretrained()
    params = SamplingParams(max_new_tokens=20, temperature=0)
    engine = RolloutEngine(model)
    first = converse(engine, [120], params, "mtp", key="e")[0]
    longer = first.sequence + observation(1, 120)
    cut = longer[:40] + longer[200:]  # the head kept, the middle dropped
    got = engine.generate([cut], params, draft="mtp", keys=["e"]).completions[0]
    want = RolloutEngine(model).generate([cut], params, draft="mtp").completions[0]
    assert got.tokens == want.tokens and torch.equal(got.routing, want.routing)
    assert engine.prefix_cache.stats.dropped == 1 and got.stats["reused_tokens"] == 0
    # a prompt that leaves the entry a few tokens before its end (the last tokens re-rendered) crops it
    again = got.sequence[:-2] + [10, 10] + observation(2, 30)
    crop = engine.generate([again], params, draft="mtp", keys=["e"]).completions[0]
    assert crop.stats["reused_tokens"] == len(got.sequence) - 2
    assert crop.tokens == RolloutEngine(model).generate([again], params, draft="mtp").tokens[0]


def test_memory_budget_evicts_least_recently_used_entries():
    model = PolicyModel(micro()).eval()
    engine = RolloutEngine(model)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    prompts = {f"e{i}": [256] + [(7 * i + j) % 250 for j in range(60)] for i in range(3)}
    for key, prompt in prompts.items():
        engine.generate([prompt], params, keys=[key])
    one = engine.prefix_cache.entry_bytes()["e0"]
    small = RolloutEngine(model, prefix_cache=PrefixCache(budget_bytes=int(2.5 * one), share_prompts=False))
    outs = {}
    for key, prompt in prompts.items():
        outs[key] = small.generate([prompt], params, keys=[key]).completions[0]
    assert "e0" not in small.prefix_cache and "e1" in small.prefix_cache and "e2" in small.prefix_cache
    assert small.prefix_cache.stats.evicted == 1 and small.prefix_cache.nbytes() <= int(2.5 * one)
    # an evicted episode's next turn is prefilled in full, and still right
    nxt = outs["e0"].sequence + [5, 6, 7]
    got = small.generate([nxt], params, keys=["e0"]).completions[0]
    assert got.stats["reused_tokens"] == 0
    assert got.tokens == RolloutEngine(model).generate([nxt], params).tokens[0]


def test_a_group_shares_its_prompt(monkeypatch):
    """GRPO: the members of a group are one prompt; it is prefilled once, and a member that starts later
    starts from the group's snapshot of the prompt."""
    model = pretrained()
    engine = RolloutEngine(model)
    rows = []
    real = engine._prefill
    monkeypatch.setattr(engine, "_prefill", lambda tokens, *a: rows.append(tuple(tokens.shape)) or real(tokens, *a))
    prompt = SYSTEM + list(SOURCE[:200])
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=3)
    engine.generate([prompt] * 4, params, draft="mtp", keys=[f"m{i}" for i in range(4)])
    assert rows == [(1, len(prompt))] and engine.prefix_cache.has_prompt(prompt)
    late = engine.generate([prompt], SamplingParams(max_new_tokens=16, temperature=0), draft="mtp", keys=["m4"]).completions[0]
    assert rows[1] == (1, 1) and late.stats["reused_tokens"] == len(prompt) - 1
    plain = RolloutEngine(model).generate([prompt], SamplingParams(max_new_tokens=16, temperature=0)).completions[0]
    assert late.tokens == plain.tokens and torch.equal(late.routing[:-1], plain.routing[:-1])


def test_identical_prompts_in_one_call_are_prefilled_once(monkeypatch):
    model = pretrained()
    engine = RolloutEngine(model)
    rows = []
    real = engine._prefill
    monkeypatch.setattr(engine, "_prefill", lambda tokens, *a: rows.append(tokens.shape[0]) or real(tokens, *a))
    prompts = [SYSTEM + [65 + i % 2] for i in range(8)]
    out = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0), draft="adaptive")
    assert rows == [2]
    alone = [RolloutEngine(model).generate([p], SamplingParams(max_new_tokens=12, temperature=0)).tokens[0] for p in prompts[:2]]
    assert out.tokens == [alone[i % 2] for i in range(8)]


def episode_thread(batcher: ContinuousBatcher, key: str, lengths: list[int], log: list, tool_seconds: float = 0.0):
    ids = list(SYSTEM) + [65 + len(key)]
    turns = []
    for t, length in enumerate(lengths):
        c = batcher.generate(ids, key=key)
        log.append((key, "turn", t, time.monotonic()))
        turns.append(c)
        if tool_seconds:  # the sandbox command of this turn: the other episodes keep decoding meanwhile
            log.append((key, "tool-start", t, time.monotonic()))
            time.sleep(tool_seconds)
            log.append((key, "tool-end", t, time.monotonic()))
        ids = ids + c.tokens + observation(t, length)
    return turns


@pytest.mark.parametrize("draft", [None, "adaptive"])
def test_concurrent_episodes_through_one_batcher_equal_each_alone(draft):
    """Three episodes of different lengths on two slots: a finished row takes another episode's next turn
    while the other row is still decoding; every turn equals the episode run alone without any cache."""
    model = pretrained()
    params = SamplingParams(max_new_tokens=40, temperature=0, stop=[b"\n\n"], stop_token_ids=[model.config.eos_token_id])
    plans = {"a": [40, 120, 20], "bb": [90, 10], "ccc": [60, 60, 60, 30]}
    engine = RolloutEngine(model)
    log: list = []
    results: dict = {}
    with ContinuousBatcher(engine, params, draft=draft, slots=2) as batcher:
        threads = [threading.Thread(target=lambda k=k, p=p: results.__setitem__(k, episode_thread(batcher, k, p, log)))
                   for k, p in plans.items()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        stats = batcher.stats()
    assert stats["admissions"] == sum(len(p) for p in plans.values())
    assert stats["admitted_while_decoding"] > 0  # continuous: a slot refilled while the other row decoded
    assert stats["prefix_reused_tokens"] > 0
    for key, lengths in plans.items():
        ids = list(SYSTEM) + [65 + len(key)]
        alone = RolloutEngine(model)
        for t, c in enumerate(results[key]):
            want = alone.generate([ids], params).completions[0]
            assert c.tokens == want.tokens, f"episode {key} turn {t}"
            assert torch.equal(c.routing[:-1], want.routing[:-1])
            ids = ids + c.tokens + observation(t, lengths[t])


def test_tool_execution_of_one_episode_overlaps_decoding_of_the_others():
    model = PolicyModel(micro()).eval()
    params = SamplingParams(max_new_tokens=24, temperature=0)
    log: list = []
    with ContinuousBatcher(RolloutEngine(model), params, slots=4) as batcher:
        slow = threading.Thread(target=episode_thread, args=(batcher, "slow", [10, 10], log, 1.0))
        fast = threading.Thread(target=episode_thread, args=(batcher, "f", [10] * 6, log))
        slow.start()
        fast.start()
        slow.join()
        fast.join()
    start = next(ts for key, what, _, ts in log if key == "slow" and what == "tool-start")
    end = next(ts for key, what, _, ts in log if key == "slow" and what == "tool-end")
    assert any(key == "f" and what == "turn" and start < ts < end for key, what, _, ts in log)


def test_a_failing_engine_fails_the_waiting_turns(monkeypatch):
    engine = RolloutEngine(PolicyModel(micro()).eval())
    batcher = ContinuousBatcher(engine, SamplingParams(max_new_tokens=4, temperature=0), slots=2)
    monkeypatch.setattr(batcher.decoder, "step", lambda: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.generate([256, 5, 6], key="x")
    batcher.close()
