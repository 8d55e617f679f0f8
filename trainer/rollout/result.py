"""What a rollout returns, identical for the in-process engine and the remote (OpenAI-compatible) one."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Completion:
    prompt: list[int]
    tokens: list[int]  # generated tokens (a stop sequence or stop token is kept at the end)
    logprobs: list[float]  # log p(token) under the untempered policy, one per generated token
    # Expert ids [len(prompt) + len(tokens), n_moe_layers, top_k] int32 for routing replay; -1 marks
    # tokens the server never fed through the model (the last one) or a server that returns none.
    routing: torch.Tensor | None
    finish_reason: str  # "stop" | "length"
    # In-process engine: time to first token (ttft_s, from submission), prefix tokens reused and prefilled.
    stats: dict = field(default_factory=dict)

    @property
    def sequence(self) -> list[int]:
        return self.prompt + self.tokens


@dataclass
class RolloutBatch:
    completions: list[Completion]
    stats: dict = field(default_factory=dict)

    def __iter__(self):
        """`tokens, logprobs, routing = batch` (the Policy.generate shape in DESIGN.md)."""
        return iter((self.tokens, self.logprobs, self.routing))

    @property
    def tokens(self) -> list[list[int]]:
        return [c.tokens for c in self.completions]

    @property
    def logprobs(self) -> list[list[float]]:
        return [c.logprobs for c in self.completions]

    @property
    def routing(self) -> list[torch.Tensor | None]:
        return [c.routing for c in self.completions]
