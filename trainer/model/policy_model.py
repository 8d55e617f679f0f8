"""The policy network: embedding -> hybrid SWA/GA decoder layers (dense or MoE FFN) -> norm -> LM head,
plus K MTP blocks sharing the embedding and LM head.

Module attribute names follow the Hugging Face layout (`model.layers.{i}.self_attn.q_proj.weight`,
`model.layers.{i}.mlp.experts.{e}.gate_proj.weight`, `model.mtp_layers.{k}...`, `lm_head.weight`), so
`state_dict()` keys are the checkpoint names with no translation table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from envfarm.trainer.model.attention import Attention, AttentionMasks, Rope, rope_tables
from envfarm.trainer.model.config import PolicyConfig
from envfarm.trainer.model.ffn import DenseFFN, RMSNorm
from envfarm.trainer.model.kv_cache import LayerKVCache, ModelKVCache
from envfarm.trainer.model.moe import MoE, Router
from envfarm.trainer.model.mtp import MTPBlock


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T, V]
    hidden: torch.Tensor  # [B, T, D], last layer before the final norm (MTP input)
    routing: torch.Tensor | None  # [B, T, n_moe_layers, k] int32 expert ids; None without MoE layers
    aux_loss: torch.Tensor  # scalar, MoE balance loss (0 in eval mode)


class DecoderLayer(nn.Module):
    def __init__(self, config: PolicyConfig, index: int) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.rms_norm_eps
        self.sliding = config.is_sliding(index)
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = Attention(config, sliding=self.sliding)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.is_moe = config.is_moe(index)
        self.mlp = MoE(config) if self.is_moe else DenseFFN(d, config.intermediate_size)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, rope: Rope, cache: LayerKVCache | None,
                masks: AttentionMasks, replay: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Pre-norm residual block: x + attn(norm(x)), then + ffn(norm(.)). `replay` [B,T,k]: recorded
        expert ids of this layer (MoE only). Returns (x, chosen expert ids, balance loss); the last two
        are None for a dense layer."""
        x = x + self.self_attn(self.input_layernorm(x), positions, rope, cache, masks)
        h = self.post_attention_layernorm(x)
        if not self.is_moe:
            return x + self.mlp(h), None, None
        y, ids, aux = self.mlp(h, replay, valid)
        return x + y, ids, aux


class Backbone(nn.Module):
    """Holds the parameters under the `model.` prefix, as Hugging Face checkpoints do."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mtp_layers = nn.ModuleList(MTPBlock(config) for _ in range(config.num_nextn_predict_layers))


class PolicyModel(nn.Module):
    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, Router):  # its weight is a bare Parameter, not an nn.Linear
            nn.init.normal_(module.weight, mean=0.0, std=std)

    @property
    def n_moe_layers(self) -> int:
        return len(self.config.moe_layers)

    @property
    def num_mtp(self) -> int:
        return len(self.model.mtp_layers)

    def new_cache(self, batch: int, slack: int = 8, dtype: torch.dtype | None = None) -> ModelKVCache:
        """`slack`: the most tokens one main-model call appends and may take back. The MTP heads
        recompute up to twice that many positions a step (see the rollout engine), so their rings
        get twice the slack, which keeps those calls on the cache's copy-free path."""
        dtype = dtype or self.lm_head.weight.dtype
        device = self.lm_head.weight.device
        return ModelKVCache(
            [layer.self_attn.new_cache(batch, slack, dtype, device) for layer in self.model.layers],
            [block.self_attn.new_cache(batch, 2 * slack, dtype, device) for block in self.model.mtp_layers])

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> dict[float, Rope]:
        c = self.config
        return {theta: rope_tables(positions, c.rope_dim, theta, dtype, c.head_dim)
                for theta in {c.rope_theta, c.swa_rope_theta}}

    def forward(self, tokens: torch.Tensor, routing: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache: ModelKVCache | None = None) -> ModelOutput:
        """tokens [B,T]; positions [B,T] absolute (-1 = padding; default arange);
        routing [B,T,n_moe_layers,k] recorded expert ids to replay (-1 = route freshly)."""
        b, t = tokens.shape
        if positions is None:
            positions = torch.arange(t, device=tokens.device).expand(b, t)
        if routing is not None and routing.shape[:3] != (b, t, self.n_moe_layers):
            from envfarm.errors import EnvfarmError
            raise EnvfarmError(
                f"routing has shape {tuple(routing.shape)}, expected ({b}, {t}, {self.n_moe_layers}, "
                f"{self.config.num_experts_per_tok})",
                "pass the routing recorded for exactly these tokens (prompt + completion)")
        x = self.model.embed_tokens(tokens)
        ropes = self._rope(positions, x.dtype)
        valid = positions >= 0
        masks = AttentionMasks()
        chosen: list[torch.Tensor] = []
        aux = x.new_zeros((), dtype=torch.float32)
        for i, layer in enumerate(self.model.layers):
            replay = routing[:, :, len(chosen)] if routing is not None and layer.is_moe else None
            x, ids, layer_aux = layer(x, positions, ropes[layer.self_attn.theta], None if cache is None else cache.layers[i],
                                      masks, replay, valid)
            if ids is not None:
                chosen.append(ids)
                aux = aux + layer_aux
        logits = self.lm_head(self.model.norm(x))
        routing_out = torch.stack(chosen, dim=2) if chosen else None
        return ModelOutput(logits=logits, hidden=x, routing=routing_out, aux_loss=aux)

    def mtp_rope(self, positions: torch.Tensor, dtype: torch.dtype) -> Rope:
        """RoPE tables of the MTP blocks (all SWA); compute once when several heads share positions."""
        c = self.config
        return rope_tables(positions, c.rope_dim, c.swa_rope_theta, dtype, c.head_dim)

    def mtp_step(self, head: int, hidden_prev: torch.Tensor, next_tokens: torch.Tensor, positions: torch.Tensor,
                 cache: ModelKVCache | None = None, rope: Rope | None = None, masks: AttentionMasks | None = None,
                 logits_at: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One MTP depth: (h^{k-1}_i, x_{i+k}) at positions i -> (h^k_i, logits for x_{i+k+1}).
        `logits_at` [B]: the logits of that column of each row only ([B, V]), as drafting needs.
        `masks` may be shared by the heads of one drafting pass: their caches agree on every position
        a query can still see."""
        block = self.model.mtp_layers[head]
        emb = F.embedding(next_tokens, self.model.embed_tokens.weight)  # hot path: no module calls (see MTPBlock)
        rope = rope if rope is not None else self.mtp_rope(positions, emb.dtype)
        h = block.forward(hidden_prev, emb, positions, rope, None if cache is None else cache.mtp[head], masks)
        out = h if logits_at is None else h[torch.arange(h.shape[0], device=h.device), logits_at]
        return h, F.linear(block.final_layernorm.forward(out), self.lm_head.weight)

    def mtp_losses(self, hidden: torch.Tensor, seq: torch.Tensor, num_heads: int | None = None) -> list[torch.Tensor]:
        """Cross-entropy of each MTP head. seq [B, T+K+1]: the main model ran on seq[:, :T] and gave
        `hidden`; head k (1-based) reads seq[:, k:k+T] and predicts seq[:, k+1:k+1+T]."""
        b, t = hidden.shape[:2]
        positions = torch.arange(t, device=seq.device).expand(b, t)
        losses, prev = [], hidden
        for head in range(self.num_mtp if num_heads is None else num_heads):
            k = head + 1
            prev, logits = self.mtp_step(head, prev, seq[:, k:k + t], positions)
            losses.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                          seq[:, k + 1:k + 1 + t].reshape(-1)))
        return losses

    @torch.no_grad()
    def update_expert_bias(self, rate: float | None = None) -> None:
        rate = self.config.expert_bias_update_rate if rate is None else rate
        for layer in self.model.layers:
            if layer.is_moe:
                layer.mlp.update_bias(rate)
