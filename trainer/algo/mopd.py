"""MOPD: multi-teacher on-policy distillation (MiMo-V2-Flash), one file.

For a completion sampled by the behaviour policy mu (the rollout engine) from the student pi_theta,
with the teacher chosen by the task's domain:
    A_t = sg[log pi_teacher(y_t) - log pi_theta(y_t)] + alpha * A_outcome     (token-level reverse KL + ORM)
    w_t = sg[pi_theta(y_t) / mu(y_t)]  if eps_low <= w_t <= eps_high else 0    (token dropped)
    L   = -mean_over_sequences[(1/|y|) sum_t w_t * A_t * log pi_theta(y_t)]
The importance weight corrects the training/inference mismatch (different kernels, stale weights);
dropping tokens outside the band, rather than clipping them, keeps wildly off-policy tokens from
steering the update at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from envfarm.errors import EnvfarmError


@dataclass
class MOPDConfig:
    alpha: float = 1.0  # weight of the outcome (GRPO) advantage
    eps_low: float = 0.5
    eps_high: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.eps_low < 1 < self.eps_high:
            raise EnvfarmError(f"mopd eps_low={self.eps_low}, eps_high={self.eps_high}",
                               "use 0 <= eps_low < 1 < eps_high (e.g. 0.5 and 2.0)")


def importance_weights(logp: torch.Tensor, behaviour_logp: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """w_t = sg[pi_theta / mu], zero outside [eps_low, eps_high]."""
    w = torch.exp(logp.detach() - behaviour_logp.detach())
    return torch.where((w >= eps_low) & (w <= eps_high), w, torch.zeros_like(w))


def mopd_advantages(logp: torch.Tensor, teacher_logp: torch.Tensor, outcome_adv: torch.Tensor, alpha: float) -> torch.Tensor:
    """[B,T]: sg[log pi_teacher - log pi_theta] + alpha * A_outcome (outcome_adv [B] broadcast per token)."""
    return (teacher_logp.detach() - logp.detach()) + alpha * outcome_adv.detach()[:, None]


def mopd_loss(logp: torch.Tensor, teacher_logp: torch.Tensor, behaviour_logp: torch.Tensor,
              outcome_adv: torch.Tensor, mask: torch.Tensor, cfg: MOPDConfig = MOPDConfig(),
              weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """All token tensors [B,T] aligned on completion tokens (mask 1 there); outcome_adv [B]."""
    mask = mask.float()
    w = importance_weights(logp, behaviour_logp, cfg.eps_low, cfg.eps_high)
    adv = mopd_advantages(logp, teacher_logp, outcome_adv, cfg.alpha)
    per_token = w * adv * logp * mask
    lengths = mask.sum(-1).clamp(min=1)
    per_seq = per_token.sum(-1) / lengths
    if weights is not None:
        per_seq = per_seq * weights
    loss = -per_seq.mean()
    n_tok = mask.sum().clamp(min=1)
    metrics = {
        "dropped_frac": float(((w == 0).float() * mask).sum() / n_tok),
        "reverse_kl": float(((logp.detach() - teacher_logp.detach()) * mask).sum() / n_tok),
    }
    return loss, metrics


TeacherScorer = Callable[[torch.Tensor], torch.Tensor]  # tokens [B,T] -> log p(tokens[:,1:]) [B,T-1]


def teacher_logprobs(teachers: Mapping[str, TeacherScorer], domains: list[str], tokens: torch.Tensor) -> torch.Tensor:
    """Score each sequence with the teacher of its domain (no gradient); one forward per domain.

    Teachers route with their own experts: the recorded routing belongs to the student."""
    missing = sorted(set(domains) - teachers.keys())
    if missing:
        raise EnvfarmError(f"no MOPD teacher for domain(s) {missing}", f"add them under mopd.teachers (have {sorted(teachers)})")
    out = torch.zeros(tokens.shape[0], tokens.shape[1] - 1)
    with torch.no_grad():
        for domain in sorted(set(domains)):
            rows = torch.tensor([i for i, d in enumerate(domains) if d == domain])
            out[rows] = teachers[domain](tokens[rows]).float()
    return out
