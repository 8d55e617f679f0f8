"""Correctness of the policy network: attention masks, sink bias, KV cache, MoE dispatch, batching,
routing replay, config parsing and checkpoints. All on CPU with the `micro` preset."""

from __future__ import annotations

import json

import pytest
import torch

from envfarm.errors import EnvfarmError
from envfarm.trainer.model import PolicyConfig, PolicyModel, load_checkpoint, micro, mimo_v2_flash, save_checkpoint, token_logprobs
from envfarm.trainer.model.attention import apply_partial_rope, attend, rope_tables
from envfarm.trainer.model.moe import HAS_GROUPED_MM, MoE

torch.set_num_threads(1)


def make_model(seed: int = 0, **overrides) -> PolicyModel:
    torch.manual_seed(seed)
    return PolicyModel(micro(**overrides)).eval()


def test_sliding_window_masks_exactly_the_window():
    torch.manual_seed(0)
    b, h, t, d, window = 1, 2, 20, 8, 5
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, h, t, d), torch.randn(b, h, t, d)
    pos = torch.arange(t)[None]
    base = attend(q, k, v, pos, pos, window, None)
    query = 12
    for key in range(t):
        v2 = v.clone()
        v2[:, :, key] += 10.0
        changed = not torch.allclose(attend(q, k, v2, pos, pos, window, None)[0, :, query], base[0, :, query])
        assert changed == (query - window < key <= query), f"key {key} seen={changed}"


def test_sink_bias_equals_an_extra_zero_value_logit():
    torch.manual_seed(1)
    b, h, t, d = 2, 4, 6, 8
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, h, t, d), torch.randn(b, h, t, d)
    sink = torch.randn(h)
    pos = torch.arange(t).expand(b, t)
    got = attend(q, k, v, pos, pos, None, sink)
    # Reference from the formula: s_ij = exp(a_ij - m) / (exp(sink - m) + sum_j exp(a_ij - m)).
    a = q @ k.transpose(-1, -2) / d ** 0.5
    a = a.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    m = torch.maximum(a.amax(-1, keepdim=True), sink.view(1, h, 1, 1))
    num = (a - m).exp()
    probs = num / ((sink.view(1, h, 1, 1) - m).exp() + num.sum(-1, keepdim=True))
    assert torch.allclose(got, probs @ v, atol=1e-6)
    assert not torch.allclose(got, attend(q, k, v, pos, pos, None, None), atol=1e-3)  # the sink matters


@pytest.mark.parametrize("chunk", [1, 3])
def test_kv_cache_matches_full_forward(chunk):
    model = make_model()
    tokens = torch.randint(0, 256, (2, 40))  # longer than 4x the SWA window: the ring wraps
    full = model(tokens).logits
    cache = model.new_cache(2, slack=chunk)
    pieces = [model(tokens[:, :10], cache=cache).logits]
    for start in range(10, 40, chunk):
        pos = torch.arange(start, start + chunk).expand(2, chunk)
        pieces.append(model(tokens[:, start:start + chunk], positions=pos, cache=cache).logits)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-4)
    swa = [c for c, layer in zip(cache.layers, model.model.layers) if layer.sliding]
    assert all(c.capacity == model.config.sliding_window + chunk for c in swa)


def test_kv_cache_rollback_after_rejected_tokens():
    model = make_model()
    tokens = torch.randint(0, 256, (1, 30))
    full = model(tokens).logits
    cache = model.new_cache(1, slack=4)
    model(tokens[:, :20], cache=cache)
    junk = torch.randint(0, 256, (1, 4))
    model(junk, positions=torch.arange(20, 24)[None], cache=cache)  # a rejected 4-token draft
    cache.crop(torch.tensor([20]))
    got = model(tokens[:, 20:], positions=torch.arange(20, 30)[None], cache=cache).logits
    assert torch.allclose(got, full[:, 20:], atol=1e-4)


@pytest.mark.parametrize("grad", [True, False], ids=["loop", "grouped_mm"])
def test_moe_dispatch_equals_naive_per_token_loop(grad):
    torch.manual_seed(2)
    moe = MoE(micro(n_routed_experts=6, num_experts_per_tok=3)).eval()
    torch.nn.init.normal_(moe.gate.weight, std=0.5)
    moe.gate.e_score_correction_bias.normal_(std=0.1)
    x = torch.randn(3, 7, 32)
    with torch.set_grad_enabled(grad):
        assert moe._use_grouped_mm(21, x) == (not grad and HAS_GROUPED_MM)
        out, ids, _ = moe(x)
    flat = x.reshape(-1, 32)
    ref = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        scores = torch.sigmoid(flat[n].float() @ moe.gate.weight.t())
        chosen = torch.topk(scores + moe.gate.e_score_correction_bias, 3).indices
        w = scores[chosen] / scores[chosen].sum()
        for e, weight in zip(chosen.tolist(), w):
            ref[n] += weight * moe.experts[e](flat[n:n + 1])[0]
        assert sorted(chosen.tolist()) == sorted(ids.reshape(-1, 3)[n].tolist())
    assert torch.allclose(out.reshape(-1, 32), ref, atol=1e-5)


@pytest.mark.skipif(not HAS_GROUPED_MM, reason="this torch has no torch._grouped_mm")
def test_grouped_mm_dispatch_sees_every_weight_change():
    """The stacked expert weights are a cache: an optimizer step, load_state_dict (in place or with
    assign=True) and replacing a weight must all show up in the next no-grad call."""
    torch.manual_seed(3)
    moe = MoE(micro(n_routed_experts=4, num_experts_per_tok=2)).eval()
    x = torch.randn(1, 5, 32)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            fast = moe(x)[0]
        return fast, moe(x)[0].detach()  # grad enabled: the per-expert loop on the live weights

    fast, ref = both()
    assert torch.allclose(fast, ref, atol=1e-6)
    opt = torch.optim.SGD(moe.parameters(), lr=0.5)
    moe(x)[0].pow(2).sum().backward()
    opt.step()
    fast2, ref2 = both()
    assert not torch.allclose(ref2, ref, atol=1e-4) and torch.allclose(fast2, ref2, atol=1e-6)
    state = {k: v + 0.1 for k, v in moe.state_dict().items()}
    moe.load_state_dict(state)
    fast3, ref3 = both()
    assert torch.allclose(fast3, ref3, atol=1e-6) and not torch.allclose(ref3, ref2, atol=1e-4)
    moe.load_state_dict({k: v * 0.5 for k, v in state.items()}, assign=True)
    fast4, ref4 = both()
    assert torch.allclose(fast4, ref4, atol=1e-6) and not torch.allclose(ref4, ref3, atol=1e-4)
    moe.experts[1].down_proj.weight = torch.nn.Parameter(torch.zeros_like(moe.experts[1].down_proj.weight))
    fast5, ref5 = both()
    assert torch.allclose(fast5, ref5, atol=1e-6)


def test_grouped_mm_is_only_for_small_no_grad_calls():
    moe = MoE(micro(n_routed_experts=4, num_experts_per_tok=2))
    x = torch.zeros(1, 1, 32)
    with torch.no_grad():
        limit = moe.grouped_mm_max_rows_per_expert * 4 // 2  # tokens at the limit (2 slots each)
        assert moe._use_grouped_mm(limit, x) == HAS_GROUPED_MM
        assert not moe._use_grouped_mm(limit + 1, x)  # long prefills keep the loop (faster there)
    assert not moe._use_grouped_mm(1, x)  # training: no CPU backward for the grouped GEMM


def test_rope_equals_the_rotate_half_formula_bit_for_bit():
    torch.manual_seed(4)
    head_dim, rope_dim = 12, 4
    x = torch.randn(2, 5, 3, head_dim)
    pos = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, -1, -1]])
    got = apply_partial_rope(x, rope_tables(pos, rope_dim, 10_000.0, torch.float32, head_dim))
    inv = 1.0 / (10_000.0 ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim))
    ang = pos.clamp(min=0).float()[..., None] * inv
    cos, sin = ang.cos()[:, :, None], ang.sin()[:, :, None]
    x1, x2, rest = x[..., :2], x[..., 2:4], x[..., 4:]
    want = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)
    assert torch.equal(got, want)


def test_mixed_batch_gives_each_sequence_its_own_logits():
    model = make_model()
    a, b = torch.randint(0, 256, (1, 23)), torch.randint(0, 256, (1, 9))
    batch = torch.full((2, 23), 258)
    batch[0], batch[1, :9] = a[0], b[0]
    pos = torch.arange(23).expand(2, 23).clone()
    pos[1, 9:] = -1
    out = model(batch, positions=pos)
    assert torch.allclose(out.logits[0], model(a).logits[0], atol=1e-5)
    assert torch.allclose(out.logits[1, :9], model(b).logits[0], atol=1e-5)


def test_routing_replay_uses_recorded_experts_and_trains_the_router():
    model = make_model()
    tokens = torch.randint(0, 256, (2, 12))
    out = model(tokens)
    assert out.routing.shape == (2, 12, 3, 2) and out.routing.dtype == torch.int32
    same = model(tokens, routing=out.routing)
    assert torch.equal(same.routing, out.routing) and torch.allclose(same.logits, out.logits, atol=1e-6)
    other = (out.routing + 1) % 4  # a different but valid routing
    other = torch.where(other[..., :1] == other[..., 1:], (other + 1) % 4, other)
    model.train()
    replayed = model(tokens, routing=other)
    assert torch.equal(replayed.routing, other.to(torch.int32))
    assert not torch.allclose(replayed.logits, out.logits, atol=1e-4)
    replayed.logits.logsumexp(-1).sum().backward()
    assert model.model.layers[1].mlp.gate.weight.grad.abs().sum() > 0
    partial = out.routing.clone()
    partial[:, -1] = -1  # unrecorded tokens are routed freshly
    assert torch.allclose(model.eval()(tokens, routing=partial).logits, out.logits, atol=1e-6)


def test_routing_with_wrong_shape_is_rejected():
    model = make_model()
    with pytest.raises(EnvfarmError, match="routing has shape"):
        model(torch.randint(0, 256, (1, 5)), routing=torch.zeros(1, 4, 3, 2, dtype=torch.int32))


def test_token_logprobs_match_log_softmax():
    model = make_model()
    tokens = torch.randint(0, 256, (2, 10))
    ref = torch.log_softmax(model(tokens).logits[:, :-1], -1).gather(-1, tokens[:, 1:, None])[..., 0]
    assert torch.allclose(token_logprobs(model, tokens), ref, atol=1e-5)


def test_mtp_losses_train_the_heads():
    model = make_model().train()
    seq = torch.randint(0, 256, (2, 16 + 4))
    out = model(seq[:, :16])
    losses = model.mtp_losses(out.hidden, seq)
    assert len(losses) == 3
    sum(losses).backward()
    assert model.model.mtp_layers[2].eh_proj.weight.grad.abs().sum() > 0


@pytest.mark.slow  # builds 37k modules on the meta device (about 20 s)
def test_reference_size_matches_the_report():
    config = mimo_v2_flash()
    assert config.hybrid_layer_pattern.count(1) == 39 and config.hybrid_layer_pattern.count(0) == 9
    with torch.device("meta"):
        model = PolicyModel(config)
    main = sum(p.numel() for n, p in model.named_parameters() if "mtp_layers" not in n)
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = main - expert + expert * config.num_experts_per_tok // config.n_routed_experts
    assert 305e9 < main < 312e9, main  # 309B total
    assert 14e9 < active < 16.5e9, active  # 15B active
    mtp_each = sum(p.numel() for p in model.model.mtp_layers[0].parameters())
    assert 0.3e9 < mtp_each < 0.36e9  # 0.33B per MTP block


def test_config_reads_hf_fields_and_rejects_bad_patterns(tmp_path):
    hf = micro().to_hf_dict()
    del hf["hybrid_layer_pattern"], hf["moe_layer_freq"]
    hf["layer_types"] = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    hf["mlp_layer_types"] = ["dense", "sparse", "sparse", "dense"]
    hf["some_unknown_field"] = 1
    config = PolicyConfig.from_hf_dict(hf)
    assert config.hybrid_layer_pattern == [0, 1, 1, 0] and config.moe_layer_freq == [0, 1, 1, 0]
    with pytest.raises(EnvfarmError, match="one 0/1 entry per layer"):
        micro(hybrid_layer_pattern=[0, 1])
    with pytest.raises(EnvfarmError, match="multiple of the KV head count"):
        micro(swa_num_attention_heads=5)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(EnvfarmError, match="not valid JSON"):
        PolicyConfig.from_json(tmp_path)


def test_checkpoint_round_trip_with_hf_names(tmp_path):
    model = make_model(seed=3)
    save_checkpoint(model, tmp_path)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in names
    assert "model.layers.1.self_attn.attention_sink_bias" in names
    assert "model.layers.0.self_attn.attention_sink_bias" not in names  # GA: no sink by default
    assert "model.mtp_layers.2.eh_proj.weight" in names
    assert json.loads((tmp_path / "config.json").read_text())["hybrid_layer_pattern"] == [0, 1, 1, 0]
    loaded = load_checkpoint(tmp_path)
    tokens = torch.randint(0, 256, (1, 12))
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)
    with pytest.raises(EnvfarmError, match="no model.safetensors"):
        load_checkpoint(tmp_path / "missing")
