"""Hybrid attention: sliding-window (SWA) or global (GA), GQA, partial RoPE, attention-sink bias.

The mask is built from absolute positions (query vs key), never from tensor indices, so the same
code serves training (positions = arange), ragged batches (padding has position -1), KV-cached
decoding and speculative verification. The sink is one learnable logit per head that joins the
softmax denominator and carries no value (gpt-oss style): heads may attend to "nothing".

Decoding a small model is bound by the number of kernels, not by arithmetic, so the hot path
counts them: RoPE is four kernels (x*cos + (x@R)*sin with a signed permutation R, exact), the
mask of a forward pass is built once per layer kind and shared (`AttentionMasks`), and scores and
outputs are plain batched matmuls.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from envfarm.trainer.model.config import PolicyConfig
from envfarm.trainer.model.kv_cache import LayerKVCache

Rope = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # cos [B,T,1,D], sin [B,T,1,D], R [D,D]


@functools.lru_cache(maxsize=16)
def _rotate_half_matrix(head_dim: int, rope_dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """R with x @ R == rotate_half(x[..., :rope_dim]) padded with zeros: (x1, x2) -> (-x2, x1).
    Each output sums one signed input and exact zeros, so the product is exact in any float type."""
    half = rope_dim // 2
    r = torch.zeros(head_dim, head_dim, dtype=dtype, device=device)
    idx = torch.arange(half, device=device)
    r[idx + half, idx] = -1.0
    r[idx, idx + half] = 1.0
    return r


@functools.lru_cache(maxsize=16)
def _frequencies(head_dim: int, rope_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """[head_dim] angular frequencies: the rotated pairs' twice (rotate-half layout), then zeros, so
    cos/sin of position * frequency are 1/0 on the dims RoPE passes through."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32, device=device) / rope_dim))
    return torch.cat([inv_freq, inv_freq, torch.zeros(head_dim - rope_dim, device=device)])


def rope_tables(positions: torch.Tensor, rope_dim: int, theta: float, dtype: torch.dtype, head_dim: int) -> Rope:
    """Full-width cos/sin [B, T, 1, head_dim] for absolute positions (padding clamps to 0): the
    rotated leading `rope_dim` dims get cos/sin, the rest cos=1, sin=0 (passed through unchanged)."""
    angles = positions.clamp(min=0).to(torch.float32)[..., None, None] * _frequencies(head_dim, rope_dim, theta,
                                                                                     positions.device)
    rotate = _rotate_half_matrix(head_dim, rope_dim, dtype, positions.device)
    return angles.cos().to(dtype), angles.sin().to(dtype), rotate


def apply_partial_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate the leading rope_dim dims of each head (rotate-half layout), pass the rest.
    x [B, T, H, D]. Equal, bit for bit, to cat([x1*cos - x2*sin, x2*cos + x1*sin, rest])."""
    cos, sin, r = rope
    return x * cos + (x @ r) * sin


class AttentionMasks:
    """The blocked-key mask of one forward pass, per window (None = global), shared by its layers.
    Valid because the layers of a kind agree on every position a query can still see: the main
    layers' caches are written and cropped alike, and the MTP heads' differ only before their
    trimmed prompt pass, outside every later window. A layer whose query or key count differs
    recomputes rather than trusting the memo."""

    def __init__(self) -> None:
        self._blocked: dict[int | None, torch.Tensor] = {}

    def blocked(self, q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
        mask = self._blocked.get(window)
        if mask is None or mask.shape[-1] != k_pos.shape[-1] or mask.shape[-2] != q_pos.shape[-1]:
            mask = blocked_keys(q_pos, k_pos, window)
            self._blocked[window] = mask
        return mask


def blocked_keys(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """[B, 1, 1, T, S] True where query t may not see key s (empty slot, future, or out of window)."""
    q, k = q_pos[:, :, None], k_pos[:, None, :]
    allowed = (k >= 0) & (k <= q)
    if window is not None:
        allowed &= k > q - window
    return ~allowed[:, None, None]


class Attention(nn.Module):
    def __init__(self, config: PolicyConfig, sliding: bool) -> None:
        super().__init__()
        self.sliding = sliding
        self.n_heads = config.swa_num_attention_heads if sliding else config.num_attention_heads
        self.n_kv = config.swa_num_key_value_heads if sliding else config.num_key_value_heads
        self.head_dim, self.v_dim = config.head_dim, config.v_head_dim
        self.window = config.sliding_window if sliding else None
        self.value_scale = config.attention_value_scale
        self.theta = config.swa_rope_theta if sliding else config.rope_theta
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.v_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.v_dim, d, bias=False)
        use_sink = config.add_swa_attention_sink_bias if sliding else config.add_full_attention_sink_bias
        self.attention_sink_bias = nn.Parameter(torch.zeros(self.n_heads)) if use_sink else None

    def new_cache(self, batch: int, slack: int, dtype: torch.dtype, device) -> LayerKVCache:
        return LayerKVCache(batch, self.n_kv, self.head_dim, self.v_dim, self.window, slack, dtype, device)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, rope: Rope, cache: LayerKVCache | None = None,
                masks: AttentionMasks | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q = apply_partial_rope(self.q_proj(x).view(b, t, self.n_heads, self.head_dim), rope)
        k = apply_partial_rope(self.k_proj(x).view(b, t, self.n_kv, self.head_dim), rope)
        v = self.v_proj(x).view(b, t, self.n_kv, self.v_dim) * self.value_scale
        if cache is not None:
            k, v, key_pos = cache.extend(k, v, positions)
        else:
            k, v, key_pos = k.transpose(1, 2), v.transpose(1, 2), positions
        blocked = masks.blocked(positions, key_pos, self.window) if masks is not None else None
        out = attend(q.transpose(1, 2), k, v, positions, key_pos, self.window, self.attention_sink_bias, blocked)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.v_dim))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
           window: int | None, sink: torch.Tensor | None, blocked: torch.Tensor | None = None) -> torch.Tensor:
    """Grouped-query attention. q [B,H,T,D], k [B,Hkv,S,D], v [B,Hkv,S,Dv] -> [B,H,T,Dv].
    `blocked` [B,1,1,T,S] is the mask from `blocked_keys` when the caller already has it."""
    b, h, t, d = q.shape
    h_kv = k.shape[1]
    g = h // h_kv
    scores = (q.reshape(b, h_kv, g * t, d) @ k.transpose(-1, -2)).view(b, h_kv, g, t, -1) / math.sqrt(d)
    if blocked is None:
        blocked = blocked_keys(q_pos, k_pos, window)
    scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
    if sink is not None:
        sink_logit = (sink if sink.dtype == scores.dtype else sink.to(scores.dtype)).view(1, h_kv, g, 1, 1)
        sink_logit = sink_logit.expand(b, h_kv, g, t, 1)
        probs = F.softmax(torch.cat([scores, sink_logit], dim=-1), dim=-1)[..., :-1]
    else:
        probs = F.softmax(scores, dim=-1)
    out = probs.reshape(b, h_kv, g * t, -1) @ v
    return out.view(b, h, t, v.shape[-1])
