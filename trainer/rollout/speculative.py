"""The lossless speculative-sampling rule (Leviathan et al. / Chen et al.), vectorised over a batch.

Draft token d_j ~ q_j is accepted with probability min(1, p_j(d_j) / q_j(d_j)); at the first
rejection the replacement is drawn from norm(max(0, p_j - q_j)); if all K drafts pass, a bonus token
comes from p_K. The output is then distributed exactly as sampling from p alone. With one-hot
(greedy) p and q the same rule reduces to "accept while the draft equals the target's argmax".
"""

from __future__ import annotations

import torch

from envfarm.trainer.rollout.sampling import sample


def accept_drafts(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, generator: torch.Generator | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """p [B,K+1,V] target probs, q [B,K,V] draft probs, drafts [B,K] ->
    (accepted count a [B] in 0..K, next token [B] drawn from the residual at a or the bonus at K)."""
    b, k = drafts.shape
    if k == 0:
        return torch.zeros(b, dtype=torch.long), sample(p[:, 0], generator)
    p_d = p[:, :k].gather(-1, drafts[..., None]).squeeze(-1)
    q_d = q.gather(-1, drafts[..., None]).squeeze(-1)
    u = torch.rand(b, k, generator=generator)
    ok = u * q_d < p_d  # u < p/q without dividing by a zero q
    accepted = ok.long().cumprod(dim=1).sum(dim=1)
    rows = torch.arange(b)
    target = p[rows, accepted]  # [B,V]: p at the first rejected slot, or p_K for the bonus
    draft_at = torch.cat([q, torch.zeros_like(q[:, :1])], dim=1)[rows, accepted]  # zero for the bonus
    residual = (target - draft_at).clamp(min=0)
    mass = residual.sum(-1, keepdim=True)
    residual = torch.where(mass > 0, residual / mass.clamp(min=1e-30), target)  # p == q: residual is p
    return accepted, sample(residual, generator)


def accept_greedy(target: torch.Tensor, drafts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rule for temperature 0, on token ids instead of one-hot distributions: target [B,K+1]
    argmax ids of the main model -> (accepted count [B], next token [B]: the target at the first
    mismatch, or the bonus). Equal to `accept_drafts` on one-hot p and q, without [B,K,V] tensors."""
    k = drafts.shape[1]
    accepted = (drafts == target[:, :k]).long().cumprod(dim=1).sum(dim=1)
    return accepted, target.gather(1, accepted[:, None]).squeeze(1)
