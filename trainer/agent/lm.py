"""The learned policy behind the scaffold: one generation per turn, stopped at the end of a tool call."""

from __future__ import annotations

from envfarm.agent.protocol import STOP
from envfarm.trainer.rollout.policy import Policy
from envfarm.trainer.rollout.sampling import SamplingParams


class LMAgentPolicy:
    """Keeps every turn's tokens, log-probs and routing so the RL loop can train on the whole episode."""

    def __init__(self, policy: Policy, sampling: SamplingParams, draft: str | None = "mtp",
                 max_prompt_tokens: int = 4096) -> None:
        self.policy = policy
        self.sampling = SamplingParams(**{**sampling.__dict__, "stop": [*sampling.stop, STOP]})
        self.draft = draft
        self.max_prompt_tokens = max_prompt_tokens
        self.turns: list = []  # Completion per assistant turn

    def act(self, prompt: str) -> tuple[str, int]:
        ids = self.policy.tokenizer.encode(prompt)
        if len(ids) > self.max_prompt_tokens:  # keep the system prompt's head and the most recent turns
            ids = ids[:256] + ids[-(self.max_prompt_tokens - 256):]
        completion = self.policy.generate([ids], self.sampling, draft=self.draft).completions[0]
        self.turns.append(completion)
        return self.policy.tokenizer.decode(completion.tokens), len(completion.tokens)
