"""The learned policy behind the scaffold: one generation per turn, stopped at the end of a tool call.

Each episode has a key in the engine's prefix cache (trainer/rollout/prefix_cache.py), so a turn prefills only
what the conversation gained since the last one (the tool observation and the next assistant header) and its
routing-replay payload takes the history's routed experts from the cache. Concurrent episodes of a worker
share one `ContinuousBatcher` (`LMAgentPolicy.batcher`): their turns decode together.
"""

from __future__ import annotations

import uuid

from envfarm.agent.protocol import STOP
from envfarm.trainer.rollout.batcher import ContinuousBatcher
from envfarm.trainer.rollout.policy import Policy
from envfarm.trainer.rollout.result import Completion
from envfarm.trainer.rollout.sampling import SamplingParams

HEAD_TOKENS = 256  # kept from the start of a truncated conversation: the system prompt and the task
# A truncated conversation is cut back to this share of max_prompt_tokens: the room left lasts the next turns
# (2,000-byte observations are 2,000 byte tokens; a cut to 3/4 of 4,096 left room for about one turn).
REFILL = 0.5


def agent_sampling(sampling: SamplingParams) -> SamplingParams:
    """The episode's sampling: generation also stops at the end of a tool call."""
    return SamplingParams(**{**sampling.__dict__, "stop": [*sampling.stop, STOP]})


class LMAgentPolicy:
    """Keeps every turn's tokens, log-probs and routing so the RL loop can train on the whole episode."""

    def __init__(self, policy: Policy, sampling: SamplingParams, draft: str | None = "mtp",
                 max_prompt_tokens: int = 4096, batcher: ContinuousBatcher | None = None,
                 prefix_cache: bool = True) -> None:
        self.policy = policy
        self.sampling = agent_sampling(sampling)
        self.draft = draft
        self.max_prompt_tokens = max_prompt_tokens
        self.batcher = batcher  # made with LMAgentPolicy.batcher (the same sampling), shared by a worker's episodes
        self.key = f"episode-{uuid.uuid4().hex}" if prefix_cache else None
        self._cut = 0  # conversation tokens dropped after the head (grows in steps, see _truncate)
        self.turns: list[Completion] = []  # Completion per assistant turn

    @staticmethod
    def batcher_for(policy: Policy, sampling: SamplingParams, draft: str | None = "mtp", slots: int = 8) -> ContinuousBatcher | None:
        """One batcher for a worker's concurrent episodes (None for a remote backend)."""
        return policy.batcher(agent_sampling(sampling), draft, slots)

    def _truncate(self, ids: list[int]) -> list[int]:
        """Keep the head (system prompt, task) and the most recent turns. Once over the limit the cut goes back
        to REFILL of it, not just under it: the kept prefix then stays the same for the next turns, whose
        prompts only grow at the end, so the prefix cache serves them until the limit is reached again (a cut
        that moved every turn would change the kept prefix, and recompute it, every turn)."""
        head = min(HEAD_TOKENS, self.max_prompt_tokens // 4)
        if len(ids) - self._cut > self.max_prompt_tokens:
            self._cut = len(ids) - int(self.max_prompt_tokens * REFILL)
        if self._cut <= 0 or len(ids) <= head:
            return ids
        return ids[:head] + ids[head + self._cut:]

    def act(self, prompt: str) -> tuple[str, int]:
        ids = self._truncate(self.policy.tokenizer.encode(prompt))
        if self.batcher is not None:
            completion = self.batcher.generate(ids, key=self.key)
        else:
            keys = None if self.key is None else [self.key]
            completion = self.policy.generate([ids], self.sampling, draft=self.draft, keys=keys).completions[0]
        self.turns.append(completion)
        return self.policy.tokenizer.decode(completion.tokens), len(completion.tokens)

    def release(self) -> None:
        """The episode is over: its prefix-cache entry goes (the budget would evict it later anyway)."""
        cache = getattr(self.policy.backend, "prefix_cache", None)
        if cache is not None and self.key is not None:
            cache.drop(self.key)
