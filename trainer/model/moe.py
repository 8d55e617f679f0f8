"""Routed mixture of experts: FP32 sigmoid router, top-k with a load-balancing bias, no shared expert.

Selection uses `score + e_score_correction_bias` (aux-loss-free balancing: the bias is nudged toward
under-used experts outside the gradient, see `update_bias`), while the gating weights use the raw
scores, so the bias steers load without distorting outputs. A small sequence-wise auxiliary loss
is returned as well. Dispatch sorts the (token, slot) pairs by expert and runs each expert once on
its contiguous slice: the Python loop is over experts, never over tokens.

Decoding is different: a step (or a speculative verification) brings a handful of tokens, and the
loop then launches a dozen small kernels per touched expert; on a CPU that launch cost, not the
arithmetic, is the step. So without autograd, and while the experts get few tokens each, the layer
runs `torch._grouped_mm` (one grouped GEMM over the expert-sorted rows) on stacked weights: about
fifteen kernels whatever the number of experts, and only the used experts' weights are read, which
matters as much at batch 1, where a step is bound by weight reads once the model outgrows the cache.
The stacks are built once and rebuilt when any expert weight changes (optimizer step,
load_state_dict, .to()); they double the experts' memory of a model used for inference. Training
keeps the loop: the grouped GEMM has no CPU backward.

Routing replay (R3): given recorded expert ids, the layer uses them instead of its own top-k, but
the gating weights still come from the current router scores at those ids, so the router trains.
Entries of -1 mean "not recorded": those tokens are routed freshly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from envfarm.trainer.model.config import PolicyConfig
from envfarm.trainer.model.ffn import DenseFFN


class Router(nn.Module):
    def __init__(self, dim: int, n_experts: int) -> None:
        super().__init__()
        # Never left uninitialized (a bare MoE, as the tests build, read whatever memory held: NaN at times).
        # A private generator keeps the global RNG stream, and so every seeded model's init, as it was;
        # PolicyModel re-initializes it with the config's initializer_range anyway.
        self.weight = nn.Parameter(nn.init.normal_(torch.empty(n_experts, dim, dtype=torch.float32), std=0.02,
                                                   generator=torch.Generator().manual_seed(0)))
        self.register_buffer("e_score_correction_bias", torch.zeros(n_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid scores in fp32, [N, E]."""
        return torch.sigmoid(x.float() @ self.weight.float().t())


# Mean (token, slot) pairs per expert up to which a no-grad call takes the grouped GEMM. Measured on
# the tiny preset, one CPU thread (bench/results/rollout.json, moe_dispatch): the loop takes 1.0-1.7x
# as long from 1 to 257 tokens (up to 64 pairs per expert), and at 2048 tokens (512 per expert) the
# two trade places from run to run (0.87-1.2x): there the loop's per-expert launch cost is amortised.
GROUPED_MM_MAX_ROWS_PER_EXPERT = 128
HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


class MoE(nn.Module):
    grouped_mm_max_rows_per_expert: int = GROUPED_MM_MAX_ROWS_PER_EXPERT

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
        self._stack_key: tuple | None = None
        self._stack: tuple[torch.Tensor, torch.Tensor] | None = None
        self._linears: list[nn.Linear] | None = None

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

        n = b * t
        if self._use_grouped_mm(n, x):
            out = self._grouped_mm_dispatch(flat, ids, weights)
        else:
            out = self._grouped_dispatch(flat, ids, weights)

        if self.training:  # balancing statistics only matter to the step that trains on them
            valid_flat = torch.ones(n, dtype=torch.bool, device=x.device) if valid is None else valid.reshape(-1)
            with torch.no_grad():
                self.expert_load = torch.bincount(ids[valid_flat].reshape(-1), minlength=self.n_experts).float()
            aux = self._sequence_balance_loss(scores.view(b, t, -1), ids.view(b, t, -1), valid_flat.view(b, t))
        else:
            aux = scores.new_zeros(())
        return out.view(b, t, d), ids.view(b, t, self.top_k).to(torch.int32), aux

    def _grouped_dispatch(self, flat: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Each touched expert once, on the contiguous slice of its (token, slot) pairs."""
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
        return out

    def _use_grouped_mm(self, n_tokens: int, x: torch.Tensor) -> bool:
        return (HAS_GROUPED_MM and not torch.is_grad_enabled() and x.device.type == "cpu"
                and n_tokens * self.top_k <= self.grouped_mm_max_rows_per_expert * self.n_experts)

    def _grouped_mm_dispatch(self, flat: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The loop's arithmetic in one grouped GEMM per projection: rows sorted by expert, `offs`
        their cumulative ends, so expert e multiplies only its own rows (empty groups cost nothing)."""
        gate_up, down = self._stacked_weights()  # [E, D, 2H], [E, H, D]
        flat_ids = ids.reshape(-1)
        order = torch.argsort(flat_ids, stable=True)
        offs = torch.bincount(flat_ids, minlength=self.n_experts).cumsum(0).to(torch.int32)
        token_of = order // self.top_k
        hidden = down.shape[1]
        h = torch._grouped_mm(flat.index_select(0, token_of), gate_up, offs=offs)
        h = F.silu(h[:, :hidden]) * h[:, hidden:]
        y = torch._grouped_mm(h, down, offs=offs) * weights.reshape(-1)[order, None]
        return torch.zeros_like(flat).index_add_(0, token_of, y)

    def _stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """([E, D, 2H] gate_proj|up_proj, [E, H, D] down_proj), each expert's weights transposed for
        `x @ w`, rebuilt whenever a weight was replaced or changed in place (its storage or its
        version counter moved)."""
        if self._linears is None:  # Module.__getattr__ costs ~1 us a hop; read the dicts directly per call
            self._linears = [m for ex in self.experts for m in (ex.gate_proj, ex.up_proj, ex.down_proj)]
        params = [m._parameters["weight"] for m in self._linears]  # sees Parameters replaced by assign=True
        key = tuple((p.data_ptr(), p._version) for p in params)
        if key != self._stack_key or self._stack is None:
            with torch.no_grad():
                gate_up = torch.stack([torch.cat(params[i:i + 2]).t() for i in range(0, len(params), 3)]).contiguous()
                down = torch.stack([w.t() for w in params[2::3]]).contiguous()
            self._stack = (gate_up, down)
            self._stack_key = key
        return self._stack

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
