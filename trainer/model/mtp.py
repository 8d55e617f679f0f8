"""Multi-token prediction block (one SWA layer + dense FFN), used as a self-speculative draft head.

Head k at position i reads the previous depth's hidden state h^{k-1}_i (the main model's for k=1)
and the embedding of token x_{i+k}, and predicts x_{i+k+1} through the shared LM head. Heads chain:
each feeds its hidden state to the next, so K heads draft K tokens beyond the main model's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from envfarm.trainer.model.attention import Attention, AttentionMasks, Rope
from envfarm.trainer.model.config import PolicyConfig
from envfarm.trainer.model.ffn import DenseFFN, RMSNorm
from envfarm.trainer.model.kv_cache import LayerKVCache


class MTPBlock(nn.Module):
    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.rms_norm_eps
        self.enorm = RMSNorm(d, eps)
        self.hnorm = RMSNorm(d, eps)
        self.eh_proj = nn.Linear(2 * d, d, bias=False)
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = Attention(config, sliding=True)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.mlp = DenseFFN(d, config.mtp_intermediate_size)
        self.final_layernorm = RMSNorm(d, eps)

    def forward(self, hidden_prev: torch.Tensor, token_emb: torch.Tensor, positions: torch.Tensor,
                rope: Rope, cache: LayerKVCache | None = None, masks: AttentionMasks | None = None) -> torch.Tensor:
        """Return this depth's hidden state (before final_layernorm, which the caller applies for logits).

        The rollout engine runs this K times per decoding step, so it calls its parts' `forward`
        and `F.linear` directly: an `nn.Module` call costs several microseconds on a CPU, as much
        as the small kernel inside it. (Module hooks on the parts therefore do not fire.)"""
        x = F.linear(torch.cat([self.enorm.forward(token_emb), self.hnorm.forward(hidden_prev)], dim=-1),
                     self.eh_proj.weight)
        x = x + self.self_attn.forward(self.input_layernorm.forward(x), positions, rope, cache, masks)
        return x + self.mlp.forward(self.post_attention_layernorm.forward(x))
