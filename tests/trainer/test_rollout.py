"""The rollout engine: greedy identity with/without MTP drafts, losslessness of speculative sampling
(chi-square against the exact distribution), log-probs and routing for replay, stops, bounded SWA cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from envfarm.errors import EnvfarmError
from envfarm.trainer.model import PolicyModel, load_checkpoint, micro, token_logprobs
from envfarm.trainer.rollout import RolloutEngine, SamplingParams
from envfarm.trainer.rollout import engine as engine_module
from envfarm.trainer.rollout.draft_policy import DraftPolicy
from envfarm.trainer.rollout.sampling import warp
from envfarm.trainer.rollout.speculative import accept_drafts, accept_greedy

torch.set_num_threads(1)
TINY = Path(__file__).resolve().parents[2] / "trainer" / "checkpoints" / "tiny"


def random_model(seed: int = 0, **overrides) -> PolicyModel:
    torch.manual_seed(seed)
    return PolicyModel(micro(**overrides)).eval()


def pretrained() -> PolicyModel:
    if not (TINY / "model.safetensors").exists():
        pytest.skip(f"no pretrained tiny checkpoint in {TINY} (run `make pretrain-tiny`)")
    return load_checkpoint(TINY)


CODE_PROMPTS = [b"import os\nimport sys\n\n\ndef main(", b"class Parser:\n    def __init__(self, text):\n        self."]


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_greedy_output_is_identical_with_and_without_mtp(heads):
    model = pretrained()
    engine = RolloutEngine(model)
    prompts = [[256] + list(p) for p in CODE_PROMPTS]
    params = SamplingParams(max_new_tokens=48, temperature=0)
    plain = engine.generate(prompts, params)
    spec = engine.generate(prompts, params, draft="mtp", num_draft=heads)
    assert spec.tokens == plain.tokens
    assert spec.stats["accepted_drafts"] > 0  # drafts were really accepted, not all rejected
    assert spec.stats["steps"] < plain.stats["steps"]
    for out in (plain, spec):  # time to first token and decoding time, for throughput reports
        assert out.stats["decode_tokens"] == sum(len(t) for t in out.tokens) - len(prompts)
        assert out.stats["prefill_seconds"] > 0 and out.stats["decode_seconds"] > 0
    for a, b in zip(plain.logprobs, spec.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)


def test_mtp_prompt_pass_over_the_heads_reach_drafts_like_the_full_pass():
    """The heads' first pass skips prompt positions no later query can reach (SWA window, chained
    heads); drafting must not notice: the same accepted drafts, step for step, as a pass over
    everything. Sampling makes this sensitive: with one seed, every accept/reject decision reads the
    draft distributions q, so heads that lost keys they still need would change the tokens."""
    model = pretrained()
    window = model.config.sliding_window
    prompts = [[256] + list((b"def parse(text):\n    out = []\n" * 20)[:300]), [256] + list(CODE_PROMPTS[1] * 4)]
    assert len(prompts[0]) > 3 * (window + 3)  # every head skips something
    skips = RolloutEngine._prompt_pass_skips(len(prompts[0]), 3, window)
    assert skips[0] > 0 and skips[0] < skips[1] < skips[2] < len(prompts[0]) - window
    for params, batch in ((SamplingParams(max_new_tokens=40, temperature=0), prompts),
                          (SamplingParams(max_new_tokens=60, temperature=1.0, seed=11), [prompts[0]] * 4)):
        trimmed = RolloutEngine(model).generate(batch, params, draft="mtp")
        full = RolloutEngine(model, trim_prompt_pass=False).generate(batch, params, draft="mtp")
        assert trimmed.tokens == full.tokens
        assert (trimmed.stats["steps"], trimmed.stats["accepted_drafts"]) == (full.stats["steps"], full.stats["accepted_drafts"])


def test_prompt_pass_skips_keep_everything_a_later_draft_reads():
    """The reach rule against the model itself: heads filled from the skipped positions on give the
    same draft logits as heads filled from the whole prompt, in the pass and in the next step."""
    model = pretrained()
    k, window = model.num_mtp, model.config.sliding_window
    text = (b"class Stack:\n    def push(self, item):\n        self.items.append(item)\n" * 8)[:330]
    seq = torch.tensor([[256] + list(text)])
    n = 300  # prompt length; the next tokens play the committed continuation
    with torch.no_grad():
        hidden = model(seq[:, :n + 4]).hidden

        def drafts_logits(skips: list[int]) -> list[torch.Tensor]:
            cache = model.new_cache(1, slack=k + 1)
            got = []
            for start, end in ((None, n), (n - k + 1, n + 2)):  # the prompt pass, then a 4-token step
                prev = None
                for head in range(k):
                    first = skips[head] if start is None else start
                    pos = torch.arange(first, end)[None]
                    prev = hidden[:, first:end] if prev is None else prev[:, first - prev_first:]
                    prev_first = first
                    prev, logits = model.mtp_step(head, prev, seq[:, first + head + 1:end + head + 1], pos, cache)
                    got.append(logits[0, -1])
            return got

        full = drafts_logits([0] * k)
        trimmed = drafts_logits(RolloutEngine._prompt_pass_skips(n, k, window))
        for a, b in zip(full, trimmed):
            assert torch.allclose(a, b, atol=1e-4)
        too_short = drafts_logits([n - (k - h) * window // 2 for h in range(k)])  # half the reach
        assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(full, too_short))


def test_chunked_prefill_equals_one_pass():
    """Prompts go through the model in chunks (bounded attention memory on long prompts); ragged
    prompts ending in different chunks must come out as if prefilled at once."""
    model = random_model(seed=9)
    prompts = [[256] + [(7 * i) % 250 for i in range(45)], [256, 3, 4, 5], [256] + [(5 * i) % 250 for i in range(20)]]
    params = SamplingParams(max_new_tokens=16, temperature=0)
    one = RolloutEngine(model, prefill_chunk=1000).generate(prompts, params, draft="mtp")
    for chunk in (1, 7, 16):
        got = RolloutEngine(model, prefill_chunk=chunk).generate(prompts, params, draft="mtp")
        assert got.tokens == one.tokens
        for a, b in zip(got.completions, one.completions):
            assert torch.equal(a.routing, b.routing)
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    with pytest.raises(EnvfarmError, match="prefill_chunk"):
        RolloutEngine(model, prefill_chunk=0)


def test_greedy_accept_rule_equals_the_general_rule_on_one_hot_distributions():
    torch.manual_seed(7)
    b, k, vocab = 64, 3, 5  # a small vocabulary, so drafts often match the target
    target = torch.randint(0, vocab, (b, k + 1))
    drafts = torch.where(torch.rand(b, k) < 0.7, target[:, :k], torch.randint(0, vocab, (b, k)))
    one_hot = torch.nn.functional.one_hot
    general = accept_drafts(one_hot(target, vocab).float(), one_hot(drafts, vocab).float(), drafts, None)
    greedy = accept_greedy(target, drafts)
    assert torch.equal(general[0], greedy[0]) and torch.equal(general[1], greedy[1])
    assert 0 < int((greedy[0] == k).sum()) < b and int((greedy[0] == 0).sum()) > 0  # every case occurs


def test_greedy_identity_holds_when_drafts_are_mostly_rejected():
    model = random_model(initializer_range=0.2)
    engine = RolloutEngine(model)
    prompts = [[256, 5, 6, 7], [256, 9]]
    params = SamplingParams(max_new_tokens=30, temperature=0)
    assert engine.generate(prompts, params, draft="mtp").tokens == engine.generate(prompts, params).tokens


def chi_square_p_value(observed: torch.Tensor, expected_probs: torch.Tensor) -> float:
    """Goodness of fit; bins with tiny expectation are pooled (chi-square needs >= 5 per bin)."""
    n = observed.sum()
    expected = expected_probs.double() * n
    order = expected.argsort(descending=True)
    keep = order[expected[order] >= 5]
    rest = order[expected[order] < 5]
    obs = torch.cat([observed[keep].double(), observed[rest].double().sum()[None]])
    exp = torch.cat([expected[keep], expected[rest].sum()[None]])
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = len(exp) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def exact_second_and_third_token(model: PolicyModel, prompt: list[int], params: SamplingParams, vocab: int):
    """P(x2) and P(x3) by enumerating every prefix (x1, x2) through the main model alone."""
    with torch.no_grad():
        p1 = warp(model(torch.tensor([prompt])).logits[0, -1, :vocab], params)
        one = torch.tensor([prompt + [a] for a in range(vocab)])
        p2_given = warp(model(one).logits[:, -1, :vocab], params)  # [x1, x2]
        two = torch.tensor([prompt + [a, c] for a in range(vocab) for c in range(vocab)])
        p3_given = warp(model(two).logits[:, -1, :vocab], params).view(vocab, vocab, vocab)
    joint12 = p1[:, None] * p2_given
    return joint12.sum(0), (joint12[..., None] * p3_given).sum((0, 1))


def sample_many(model: PolicyModel, prompt: list[int], params: SamplingParams, n: int, policy=None) -> torch.Tensor:
    engine = RolloutEngine(model)
    if policy is not None:
        engine.draft_policy = policy
    out = engine.generate([prompt] * n, params, draft="adaptive" if policy else "mtp", num_draft=2)
    return torch.tensor([c.tokens[:3] for c in out.completions])


@pytest.mark.slow
def test_speculative_sampling_matches_the_target_distribution(monkeypatch):
    vocab = 12  # every token id the micro model emits is < 12 (the rest of the vocabulary is masked)
    model = random_model(seed=5, vocab_size=vocab, initializer_range=0.35, bos_token_id=9, eos_token_id=10, pad_token_id=11)
    params = SamplingParams(max_new_tokens=3, temperature=0.9, top_p=0.95, seed=1234)
    prompt = [1, 2, 3]
    p2, p3 = exact_second_and_third_token(model, prompt, params, vocab)
    samples = sample_many(model, prompt, params, n=4000)
    for position, exact in ((1, p2), (2, p3)):
        counts = torch.bincount(samples[:, position], minlength=vocab)
        assert chi_square_p_value(counts, exact) > 1e-3, f"token {position + 1} is not distributed as plain sampling"

    # The same check must catch a broken rule: accepting every draft samples from the draft heads.
    def accept_all(p, q, drafts, generator):
        b, k = drafts.shape
        return torch.full((b,), k), torch.multinomial(p[:, k], 1, generator=generator)[:, 0]

    monkeypatch.setattr(engine_module, "accept_drafts", accept_all)
    broken = sample_many(model, prompt, params, n=4000)
    counts = torch.bincount(broken[:, 1], minlength=vocab)
    assert chi_square_p_value(counts, p2) < 1e-6


class ScriptedDraftPolicy(DraftPolicy):
    """Adaptive mode with the per-step choice taken from a script (a list, or a function of the step and
    the accepted drafts so far), so the engine's catch-up paths are exercised deterministically."""

    def __init__(self, heads: int, script) -> None:
        super().__init__(heads)
        self.script, self.step, self.accepted = script, 0, 0
        tracker = self.acceptance
        original = tracker.observe

        def observe(row: int, k: int, accepted: int) -> None:
            self.accepted += accepted
            original(row, k, accepted)

        tracker.observe = observe

    def start(self, batch: int) -> None:
        super().start(batch)
        self.step = self.accepted = 0

    def _choose(self, rows, remaining, context, catch_up, top) -> int:
        k = self.script(self.step, self.accepted) if callable(self.script) else self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        return min(k, top)


def adaptive_engine(model: PolicyModel, policy: DraftPolicy) -> RolloutEngine:
    engine = RolloutEngine(model)
    engine.draft_policy = policy
    return engine


def test_adaptive_with_every_head_every_step_is_the_fixed_mode_step_for_step():
    """Adaptive mode defers the heads' prompt pass to the first drafting step and feeds it from the ring of
    main hidden states; with all heads chosen every step that must be exactly the fixed mode: the same
    tokens, steps and accepted drafts, greedy and sampled with one seed (every accept/reject reads q)."""
    model = pretrained()
    prompts = [[256] + list((b"def parse(text):\n    out = []\n" * 20)[:300]), [256] + list(CODE_PROMPTS[1] * 4)]
    for params, batch in ((SamplingParams(max_new_tokens=40, temperature=0), prompts),
                          (SamplingParams(max_new_tokens=60, temperature=1.0, seed=11), [prompts[0]] * 4)):
        fixed = RolloutEngine(model).generate(batch, params, draft="mtp")
        adaptive = adaptive_engine(model, ScriptedDraftPolicy(3, [3])).generate(batch, params, draft="adaptive")
        assert adaptive.tokens == fixed.tokens
        assert (adaptive.stats["steps"], adaptive.stats["accepted_drafts"]) == (fixed.stats["steps"], fixed.stats["accepted_drafts"])
        assert adaptive.stats["steps_by_draft_heads"] == [0, 0, 0, fixed.stats["steps"]]


@pytest.mark.parametrize("script", [
    [0] * 30 + [3],  # a long plain stretch (beyond the heads' reach), then every head: a trimmed catch-up
    [1, 3, 0, 2, 0, 0, 3, 1, 1, 0, 2, 3],  # widths changing every step: heads left behind catch up
    [2, 0],  # the deferred prompt pass, then plain to the end
])
def test_adaptive_greedy_output_is_identical_to_plain(script):
    model = pretrained()
    prompts = [[256] + list(p) for p in CODE_PROMPTS]
    params = SamplingParams(max_new_tokens=260, temperature=0)
    plain = RolloutEngine(model).generate(prompts, params)
    policy = ScriptedDraftPolicy(3, script)
    out = adaptive_engine(model, policy).generate(prompts, params, draft="adaptive")
    assert out.tokens == plain.tokens
    for a, b in zip(plain.logprobs, out.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)
    drafting = sum(out.stats["steps_by_draft_heads"][1:])
    assert drafting > 0 and out.stats["steps"] < plain.stats["steps"]
    # Heads that caught up draft as well as ever: a garbled catch-up (wrong hidden states or positions)
    # would have its drafts rejected. Fixed 3-head drafting accepts about 2.7 per step on this text.
    if script[0] == 0:
        assert out.stats["accepted_drafts"] / drafting > 1.5


def test_adaptive_drafts_where_measured_costs_say_it_pays_and_not_where_they_do_not():
    """The real DraftPolicy on injected costs (no timing): cheap verify passes -> drafting, identical output;
    verify passes measured slower than the plain steps they replace -> no draft at all."""
    model = pretrained()
    prompts = [[256] + list(p) for p in CODE_PROMPTS]
    params = SamplingParams(max_new_tokens=64, temperature=0)
    plain = RolloutEngine(model).generate(prompts, params)

    class Frozen(DraftPolicy):
        def record(self, rows, context, k, seconds, caught_up):  # keep the injected costs
            pass

    for step_ms, drafts in (({0: 6, 1: 6.3, 2: 6.6, 3: 6.9}, True), ({0: 6, 1: 13, 2: 20, 3: 27}, False)):
        injected = Frozen(3)
        for rows in (1, 2):  # the batch shrinks to one row when the other finishes first
            for k, ms in step_ms.items():
                for _ in range(3):
                    injected.costs.record_step(rows, 40, k, ms / 1000)
                if k:
                    injected.costs.record_catch_up(rows, 40, k, ms / 1000 + 0.001, 100)  # 10 us per position
        injected.acceptance.depth_accepted, injected.acceptance.depth_trials = [320.0] * 3, [400.0] * 3  # 0.8
        out = adaptive_engine(model, injected).generate(prompts, params, draft="adaptive")
        assert out.tokens == plain.tokens
        assert (sum(out.stats["steps_by_draft_heads"][1:]) > 0) == drafts
        if not drafts:
            assert out.stats["steps"] == plain.stats["steps"]


@pytest.mark.slow
@pytest.mark.parametrize("script", [
    [0, 2],  # plain, then a catch-up with two heads
    [1, 2],  # one head, then two (head 2 catches up from the prompt)
    lambda step, accepted: 2 if step == 0 else (2 if accepted % 2 else 1),  # chosen from past acceptance
])
def test_adaptive_speculative_sampling_matches_the_target_distribution(script):
    vocab = 12
    model = random_model(seed=5, vocab_size=vocab, initializer_range=0.35, bos_token_id=9, eos_token_id=10, pad_token_id=11)
    params = SamplingParams(max_new_tokens=3, temperature=0.9, top_p=0.95, seed=1234)
    prompt = [1, 2, 3]
    p2, p3 = exact_second_and_third_token(model, prompt, params, vocab)
    policy = ScriptedDraftPolicy(2, script)
    samples = sample_many(model, prompt, params, n=4000, policy=policy)
    assert policy.step >= 1 and sum(policy.chosen[1:]) >= 1  # drafts were really used
    for position, exact in ((1, p2), (2, p3)):
        counts = torch.bincount(samples[:, position], minlength=vocab)
        assert chi_square_p_value(counts, exact) > 1e-3, f"token {position + 1} is not distributed as plain sampling"


def test_logprobs_and_routing_replay_reproduce_training_forward():
    model = random_model(seed=2)
    out = RolloutEngine(model).generate([[256, 1, 2, 3, 4], [256, 7]], SamplingParams(max_new_tokens=12, seed=0),
                                        draft="mtp")
    for c in out.completions:
        seq = torch.tensor([c.sequence])
        assert c.routing.shape == (len(c.sequence), model.n_moe_layers, 2)
        assert (c.routing[:-1] >= 0).all()  # every token but the last was fed through the model
        last_fed = bool((c.routing[-1] >= 0).all())  # the last is fed only if a stop cut an accepted run
        replayed = model(seq, routing=c.routing[None])
        fresh = model(seq)
        assert torch.equal(replayed.routing[0, :-1], c.routing[:-1])
        assert torch.equal(fresh.routing[0, :-1], c.routing[:-1])
        assert (not last_fed) or torch.equal(fresh.routing[0, -1], c.routing[-1])
        lp = token_logprobs(model, seq, routing=c.routing[None])[0, len(c.prompt) - 1:]
        assert torch.allclose(lp, torch.tensor(c.logprobs), atol=1e-4)


def test_stop_sequences_and_stop_tokens_end_the_completion():
    model = pretrained()
    engine = RolloutEngine(model)
    prompt = [256] + list(b"def f(x):\n    return x\n\n\ndef g(y):\n")
    free = engine.generate([prompt], SamplingParams(max_new_tokens=60, temperature=0)).tokens[0]
    stop = bytes(free[5:8])
    out = engine.generate([prompt], SamplingParams(max_new_tokens=60, temperature=0, stop=[stop]), draft="mtp")
    c = out.completions[0]
    first = next(i for i in range(len(free)) if bytes(free[i:i + 3]) == stop)
    assert c.tokens == free[:first + 3] and c.finish_reason == "stop" and len(c.logprobs) == len(c.tokens)
    out = engine.generate([prompt], SamplingParams(max_new_tokens=60, temperature=0, stop_token_ids=[free[3]]))
    assert out.tokens[0] == free[:free.index(free[3]) + 1] and out.completions[0].finish_reason == "stop"
    out = engine.generate([prompt], SamplingParams(max_new_tokens=7, temperature=0), draft="mtp")
    assert out.tokens[0] == free[:7] and out.completions[0].finish_reason == "length"


def test_batched_generation_equals_one_by_one():
    model = random_model(seed=4)
    engine = RolloutEngine(model)
    prompts = [[256, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [256, 40], [256, 50, 51, 52]]
    params = SamplingParams(max_new_tokens=20, temperature=0)
    batch = engine.generate(prompts, params, draft="mtp").tokens
    assert batch == [engine.generate([p], params, draft="mtp").tokens[0] for p in prompts]


def test_sliding_window_cache_does_not_grow_with_context():
    model = random_model(seed=6)
    sizes = {}
    for length in (40, 300):
        cache = model.new_cache(1, slack=1)
        model(torch.randint(0, 256, (1, length)), cache=cache)
        sizes[length] = [(layer.sliding, c.nbytes()) for layer, c in zip(model.model.layers, cache.layers)]
    for (sliding, short), (_, long) in zip(sizes[40], sizes[300]):
        assert (long == short) if sliding else (long > short)


def test_bad_requests_get_clear_errors():
    engine = RolloutEngine(random_model())
    with pytest.raises(EnvfarmError, match="MTP heads"):
        engine.generate([[1]], SamplingParams(), draft="mtp", num_draft=4)
    with pytest.raises(EnvfarmError, match="empty prompt"):
        engine.generate([[]], SamplingParams())
    with pytest.raises(EnvfarmError, match="outside"):
        engine.generate([[100000]], SamplingParams())
    with pytest.raises(EnvfarmError, match="draft mode"):
        engine.generate([[1]], SamplingParams(), draft="eagle")
    with pytest.raises(EnvfarmError, match="MTP heads"):
        engine.generate([[1]], SamplingParams(), draft="adaptive", num_draft=4)
    with pytest.raises(EnvfarmError, match="top_p"):
        SamplingParams(top_p=0)


def test_policy_facade_generates_and_replays():
    from envfarm.trainer.rollout import Policy
    policy = Policy(random_model(seed=8))
    tokens, logprobs, routing = policy.generate(["def f():", [256, 65, 66]], SamplingParams(max_new_tokens=6, seed=3))
    assert len(tokens) == 2 and all(len(t) == len(lp) for t, lp in zip(tokens, logprobs))
    seq = torch.tensor([policy.encode(["def f():"])[0] + tokens[0]])
    lp = policy.token_logprobs(seq, routing=routing[0][None])[0, -len(tokens[0]):]
    assert torch.allclose(lp, torch.tensor(logprobs[0]), atol=1e-4)
    assert policy.forward(seq, routing=routing[0][None]).shape == (1, seq.shape[1], 264)
