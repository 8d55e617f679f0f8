"""Per-token log-probabilities of given tokens, the quantity every policy-gradient loss needs."""

from __future__ import annotations

import torch

from envfarm.trainer.model.policy_model import PolicyModel


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] without materialising the full [.., V] log-softmax tensor."""
    logits = logits.float()
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(model: PolicyModel, tokens: torch.Tensor, routing: torch.Tensor | None = None,
                   positions: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T-1]: log p(tokens[:, t+1] | tokens[:, :t+1]), replaying `routing` when given (R3).

    Gradients flow (call under torch.no_grad() for reference/behaviour log-probs)."""
    out = model(tokens, routing=routing, positions=positions)
    return gather_logprobs(out.logits[:, :-1], tokens[:, 1:])
