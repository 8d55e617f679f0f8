"""The `Policy` facade of DESIGN.md: what the RL loop sees, whichever backend generates.

    policy = Policy.from_checkpoint()                       # trainer/checkpoints/tiny
    tokens, logprobs, routing = policy.generate(prompts, SamplingParams(...), draft="mtp")
    logits = policy.forward(tokens, routing=routing)        # routing replay (R3)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Hashable

import torch

from envfarm.trainer.model import PolicyModel, load_checkpoint, token_logprobs
from envfarm.trainer.paths import TINY_CHECKPOINT
from envfarm.trainer.rollout.batcher import ContinuousBatcher
from envfarm.trainer.rollout.engine import RolloutEngine
from envfarm.trainer.rollout.remote import RemoteRolloutEngine
from envfarm.trainer.rollout.result import RolloutBatch
from envfarm.trainer.rollout.sampling import SamplingParams
from envfarm.trainer.tokenizer import ByteTokenizer



class Policy:
    def __init__(self, model: PolicyModel, backend: RolloutEngine | RemoteRolloutEngine | None = None,
                 tokenizer: ByteTokenizer | None = None) -> None:
        self.model = model
        self.backend = backend or RolloutEngine(model)
        self.tokenizer = tokenizer or ByteTokenizer()

    @classmethod
    def from_checkpoint(cls, folder: str | Path = TINY_CHECKPOINT, remote_url: str | None = None,
                        remote_model: str = "envfarm-tiny") -> "Policy":
        model = load_checkpoint(folder)
        backend = RemoteRolloutEngine(remote_url, remote_model) if remote_url else None
        return cls(model, backend)

    def encode(self, prompts: list[str] | list[list[int]]) -> list[list[int]]:
        return [self.tokenizer.encode(p) if isinstance(p, (str, bytes)) else list(p) for p in prompts]

    def _settings(self, sampling: SamplingParams, draft: str | None) -> tuple[SamplingParams, str | None]:
        """EOS always ends a completion; a model without MTP heads generates plainly whatever the draft mode."""
        eos = self.model.config.eos_token_id
        if eos not in sampling.stop_token_ids:
            sampling = dataclasses.replace(sampling, stop_token_ids=[*sampling.stop_token_ids, eos])
        if draft in ("mtp", "adaptive") and self.model.num_mtp == 0:
            draft = None
        return sampling, draft

    def generate(self, prompts: list[str] | list[list[int]], sampling: SamplingParams,
                 draft: str | None = "mtp", num_draft: int | None = None,
                 keys: list[Hashable | None] | None = None) -> RolloutBatch:
        """Unpacks as (tokens, logprobs, routing). `keys`: per prompt, the episode whose prefix cache serves
        it (in-process engine; a remote server keeps its own prefix cache)."""
        sampling, draft = self._settings(sampling, draft)
        if keys is not None and isinstance(self.backend, RolloutEngine):
            return self.backend.generate(self.encode(prompts), sampling, draft=draft, num_draft=num_draft, keys=keys)
        return self.backend.generate(self.encode(prompts), sampling, draft=draft, num_draft=num_draft)

    def batcher(self, sampling: SamplingParams, draft: str | None = "mtp", slots: int = 8) -> ContinuousBatcher | None:
        """A continuous batcher over the in-process engine for concurrent episodes (None for a remote backend,
        which batches on its server)."""
        if not isinstance(self.backend, RolloutEngine):
            return None
        sampling, draft = self._settings(sampling, draft)
        return ContinuousBatcher(self.backend, sampling, draft, slots=slots)

    def forward(self, tokens: torch.Tensor, routing: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(tokens, routing=routing, positions=positions).logits

    def token_logprobs(self, tokens: torch.Tensor, routing: torch.Tensor | None = None,
                       positions: torch.Tensor | None = None) -> torch.Tensor:
        return token_logprobs(self.model, tokens, routing=routing, positions=positions)
