"""Routed mixture of experts: FP32 sigmoid router, top-k with a load-balancing bias, no shared expert.

Selection uses `score + e_score_correction_bias` (aux-loss-free balancing: the bias is nudged toward
under-used experts outside the gradient, see `update_bias`), while the gating weights use the raw
scores, so the bias steers load without distorting outputs. A small sequence-wise auxiliary loss
is returned as well. Dispatch sorts the (token, slot) pairs by expert and runs each expert once on
its contiguous slice: the Python loop is over experts, never over tokens.

Routing replay (R3): given recorded expert ids, the layer uses them instead of its own top-k, but
the gating weights still come from the current router scores at those ids, so the router trains.
Entries of -1 mean "not recorded": those tokens are routed freshly.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.model.config import PolicyConfig
from trainer.model.ffn import DenseFFN


class Router(nn.Module):
    def __init__(self, dim: int, n_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, dim, dtype=torch.float32))
        self.register_buffer("e_score_correction_bias", torch.zeros(n_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid scores in fp32, [N, E]."""
        return torch.sigmoid(x.float() @ self.weight.float().t())


class MoE(nn.Module):
    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.n_experts = config.n_routed_experts
        self.norm_topk_prob = config.norm_topk_prob
        self.scaling = config.routed_scaling_factor
        self.aux_alpha = config.aux_loss_alpha
        self.gate = Router(config.hidden_size, config.n_routed_experts)
        self.experts = nn.ModuleList(
            DenseFFN(config.hidden_size, config.moe_intermediate_size) for _ in range(config.n_routed_experts))
        self.register_buffer("expert_load", torch.zeros(config.n_routed_experts), persistent=False)

    def route(self, scores: torch.Tensor, recorded: torch.Tensor | None) -> torch.Tensor:
        """Expert ids [N, k]: recorded ones where given (>= 0), fresh top-k of score + bias elsewhere."""
        fresh = torch.topk(scores.detach() + self.gate.e_score_correction_bias, self.top_k, dim=-1).indices
        if recorded is None:
            return fresh
        recorded = recorded.to(torch.long)
        missing = (recorded < 0).any(dim=-1, keepdim=True)
        return torch.where(missing, fresh, recorded)

    def forward(self, x: torch.Tensor, routing: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B,T,D], routing [B,T,k] or None, valid [B,T] -> (out, expert ids [B,T,k] int32, aux loss)."""
        b, t, d = x.shape
        flat = x.reshape(b * t, d)
        scores = self.gate(flat)
        ids = self.route(scores, None if routing is None else routing.reshape(b * t, self.top_k))
        weights = scores.gather(1, ids)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        weights = (weights * self.scaling).to(x.dtype)

        out = torch.zeros_like(flat)
        flat_ids = ids.reshape(-1)
        order = torch.argsort(flat_ids, stable=True)
        counts = torch.bincount(flat_ids, minlength=self.n_experts)
        token_of = order // self.top_k
        slot_weight = weights.reshape(-1)[order]
        start = 0
        for expert, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            idx = token_of[start:start + count]
            y = self.experts[expert](flat.index_select(0, idx)) * slot_weight[start:start + count, None]
            out.index_add_(0, idx, y)
            start += count

        valid_flat = torch.ones(b * t, dtype=torch.bool, device=x.device) if valid is None else valid.reshape(-1)
        with torch.no_grad():
            self.expert_load = torch.bincount(ids[valid_flat].reshape(-1), minlength=self.n_experts).float()
        aux = self._sequence_balance_loss(scores.view(b, t, -1), ids.view(b, t, -1), valid_flat.view(b, t))
        return out.view(b, t, d), ids.view(b, t, self.top_k).to(torch.int32), aux

    def _sequence_balance_loss(self, scores: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """DeepSeek-V3's per-sequence balance loss: alpha * sum_e f_e * P_e, averaged over sequences."""
        if self.aux_alpha == 0 or not self.training:
            return scores.new_zeros(())
        mask = valid.float()
        n_tok = mask.sum(-1).clamp(min=1)  # [B]
        chosen = torch.zeros_like(scores).scatter_(-1, ids, 1.0) * mask[..., None]
        f = chosen.sum(1) * self.n_experts / (self.top_k * n_tok[:, None])
        p = ((scores / scores.sum(-1, keepdim=True)) * mask[..., None]).sum(1) / n_tok[:, None]
        return self.aux_alpha * (f.detach() * p).sum(-1).mean()

    @torch.no_grad()
    def update_bias(self, rate: float) -> None:
        """Aux-loss-free balancing: raise the bias of under-loaded experts, lower over-loaded ones."""
        load = self.expert_load
        if load.sum() == 0:
            return
        self.gate.e_score_correction_bias += rate * torch.sign(load.mean() - load)
