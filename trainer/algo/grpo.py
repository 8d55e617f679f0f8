"""GRPO: several rollouts per task, advantages normalised within the group, PPO-clipped surrogate.

Why group normalisation: with binary rewards from unit tests there is no value network to trust on
2 cores; the other samples of the same prompt are the baseline. A group whose rewards are all equal
carries no signal (advantage 0), which is why the data scheduler skips tasks solved 0% or 100%.

Loss (token-mean over every completion token in the batch, DAPO-style, so long answers are not
down-weighted per token):
    ratio_t = exp(logp_t - old_logp_t)
    L = -mean_t min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)
        + kl_coef * mean_t k3(ref || theta) - entropy_coef * mean_t H_t
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envfarm.errors import EnvfarmError


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, std_normalize: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """A_i = (r_i - mean_g) / (std_g + eps) over the rollouts i of group g (std skipped if not wanted).

    rewards [N] float, group_ids [N] int (any labels). Singleton groups get advantage 0: no baseline."""
    if rewards.shape != group_ids.shape or rewards.dim() != 1:
        raise EnvfarmError(f"rewards {tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)} must be equal 1-D shapes",
                           "pass one reward and one group id per rollout")
    rewards = rewards.float()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(n_groups).index_add_(0, inverse, torch.ones_like(rewards))
    mean = torch.zeros(n_groups).index_add_(0, inverse, rewards) / count
    centred = rewards - mean[inverse]
    if std_normalize:
        var = torch.zeros(n_groups).index_add_(0, inverse, centred ** 2) / (count - 1).clamp(min=1)
        centred = centred / (var.sqrt()[inverse] + eps)
    return torch.where(count[inverse] > 1, centred, torch.zeros_like(centred))


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token unbiased, always non-negative estimator of KL(theta || ref) (Schulman's k3)."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


@dataclass
class GRPOConfig:
    clip_low: float = 0.2
    clip_high: float = 0.28  # asymmetric (clip-higher) keeps exploration alive on rare successes
    kl_coef: float = 0.0
    entropy_coef: float = 0.0


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              cfg: GRPOConfig = GRPOConfig(), ref_logp: torch.Tensor | None = None,
              entropy: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """logp/old_logp/mask [B,T] (mask 1 on completion tokens), advantages [B] or [B,T],
    optional per-sequence weights [B] (e.g. staleness down-weighting). Returns (loss, metrics)."""
    mask = mask.float()
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    ratio = torch.exp(logp - old_logp.detach())
    clipped = ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    if weights is not None:
        surrogate = surrogate * weights[:, None]
    n_tok = mask.sum().clamp(min=1)
    loss = -(surrogate * mask).sum() / n_tok
    metrics = {"clip_frac": float((((ratio - clipped).abs() > 1e-9).float() * mask).sum() / n_tok)}
    if cfg.kl_coef:
        if ref_logp is None:
            raise EnvfarmError("kl_coef > 0 but no reference log-probs were given", "pass ref_logp or set kl_coef: 0")
        kl = (k3_kl(logp, ref_logp.detach()) * mask).sum() / n_tok
        loss = loss + cfg.kl_coef * kl
        metrics["kl"] = float(kl)
    if cfg.entropy_coef:
        if entropy is None:
            raise EnvfarmError("entropy_coef > 0 but no entropies were given", "pass entropy or set entropy_coef: 0")
        ent = (entropy * mask).sum() / n_tok
        loss = loss - cfg.entropy_coef * ent
        metrics["entropy"] = float(ent)
    return loss, metrics
