"""Hybrid attention: sliding-window (SWA) or global (GA), GQA, partial RoPE, attention-sink bias.

The mask is built from absolute positions (query vs key), never from tensor indices, so the same
code serves training (positions = arange), ragged batches (padding has position -1), KV-cached
decoding and speculative verification. The sink is one learnable logit per head that joins the
softmax denominator and carries no value (gpt-oss style): heads may attend to "nothing".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.model.config import PolicyConfig
from trainer.model.kv_cache import LayerKVCache


def rope_tables(positions: torch.Tensor, rope_dim: int, theta: float, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [B, 1, T, rope_dim/2] for absolute positions (padding clamps to 0)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32, device=positions.device) / rope_dim))
    angles = positions.clamp(min=0).to(torch.float32)[..., None] * inv_freq
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the leading 2*cos.shape[-1] dims of each head (rotate-half layout), pass the rest."""
    rd = cos.shape[-1] * 2
    rot, rest = x[..., :rd], x[..., rd:]
    x1, x2 = rot[..., : rd // 2], rot[..., rd // 2:]
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return torch.cat([rotated, rest], dim=-1)


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

    def forward(self, x: torch.Tensor, positions: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                cache: LayerKVCache | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.v_dim).transpose(1, 2) * self.value_scale
        cos, sin = rope
        q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
        if cache is not None:
            k, v, key_pos = cache.extend(k, v, positions)
        else:
            key_pos = positions
        out = attend(q, k, v, positions, key_pos, self.window, self.attention_sink_bias)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.v_dim))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
           window: int | None, sink: torch.Tensor | None) -> torch.Tensor:
    """Grouped-query attention. q [B,H,T,D], k [B,Hkv,S,D], v [B,Hkv,S,Dv] -> [B,H,T,Dv]."""
    b, h, t, d = q.shape
    h_kv = k.shape[1]
    g = h // h_kv
    qg = q.view(b, h_kv, g, t, d)
    scores = torch.einsum("bkgtd,bksd->bkgts", qg, k) / math.sqrt(d)
    allowed = (k_pos[:, None, :] >= 0) & (k_pos[:, None, :] <= q_pos[:, :, None])
    if window is not None:
        allowed &= k_pos[:, None, :] > q_pos[:, :, None] - window
    scores = scores.masked_fill(~allowed[:, None, None], torch.finfo(scores.dtype).min)
    if sink is not None:
        sink_logit = sink.to(scores.dtype).view(1, h_kv, g, 1, 1).expand(b, h_kv, g, t, 1)
        probs = F.softmax(torch.cat([scores, sink_logit], dim=-1), dim=-1)[..., :-1]
    else:
        probs = F.softmax(scores, dim=-1)
    out = torch.einsum("bkgts,bksd->bkgtd", probs, v)
    return out.reshape(b, h, t, v.shape[-1])
