"""Sampling parameters and the logits -> probabilities warp (temperature, top-p) shared by the plain
and the speculative paths: speculative decoding is lossless only against the *warped* target."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from envfarm.errors import EnvfarmError


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop: list[bytes | str] = field(default_factory=list)  # stop sequences; the completion keeps them
    stop_token_ids: list[int] = field(default_factory=list)  # e.g. EOS
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise EnvfarmError(f"temperature={self.temperature} is negative", "use 0 for greedy or a positive value")
        if not 0 < self.top_p <= 1:
            raise EnvfarmError(f"top_p={self.top_p} is outside (0, 1]", "use a top_p in (0, 1]")
        if self.max_new_tokens < 1:
            raise EnvfarmError(f"max_new_tokens={self.max_new_tokens}", "ask for at least one new token")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def stop_sequences(self) -> list[list[int]]:
        """Stop strings as byte-token sequences (the byte tokenizer maps bytes to ids 0-255)."""
        return [list(s.encode("utf-8") if isinstance(s, str) else s) for s in self.stop if len(s) > 0]


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution actually sampled from: one-hot argmax when greedy, else tempered and top-p cut."""
    logits = logits.float()
    if params.greedy:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        cut = (sorted_p.cumsum(-1) - sorted_p) >= params.top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(cut, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of a [..., V] probability tensor."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
