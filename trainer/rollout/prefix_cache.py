"""Request-level prefix cache: what a multi-turn episode already put through the model, kept between its turns.

Why: an agent's conversation grows by a tool observation and an assistant header per turn, and the episode
used to prefill its whole history again every turn (trainer/agent/lm.py), so its prefill cost grew with the
square of its length and the routed experts of the history were recomputed each turn. The reference keeps KV
and routed experts per request across turns (REFERENCE-MIMO.md, R3 with a request-level prefix cache).

A `PrefixEntry` holds, for the tokens already processed (positions 0..len-1):
- the main model's KV cache as a batch-1 cache (global layers hold every position, sliding-window layers only
  their ring of window + slack slots, as during generation), sized to what it holds;
- the routed experts of every processed token (the routing-replay payload of the prefix, as recorded when the
  tokens were first fed: a turn's payload is the cached rows plus the new ones, equal to a full pass);
- the last main-model hidden states the MTP heads can still reach (they rebuild their own caches from these).

A new turn reuses the longest common prefix of its prompt and the entry's tokens, but at most all but the
last prompt token (whose logits start the turn). Going back from the entry's end is only possible while the
sliding-window rings still hold the keys the first new query needs (`min_reuse`); otherwise, as when a long
conversation is truncated and its kept prefix changes, the entry is dropped and the prompt recomputed.

`PrefixCache` maps keys (an episode id) to entries, least recently used first out when the entries' bytes
exceed the budget. Prompts admitted with a key are also kept as shared snapshots (key ("prompt", hash)), so
the other members of a GRPO group start from the group's prompt without prefilling it again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

import torch

from envfarm.trainer.model.kv_cache import ModelKVCache


@dataclass
class PrefixEntry:
    tokens: list[int]  # processed tokens: the cache holds positions < len(tokens)
    cache: ModelKVCache  # batch 1, main layers only
    routing: torch.Tensor | None  # [len(tokens), n_moe_layers, top_k] int32
    hidden: torch.Tensor | None  # [h, D]: main hidden states of positions len(tokens) - h .. len(tokens) - 1
    min_reuse: int = 0  # the shortest prefix the rings can still serve (their keys of earlier positions are gone)

    def reusable(self, prompt: list[int]) -> int:
        """How many leading tokens of `prompt` this entry can serve (0: none, recompute everything)."""
        limit = min(len(self.tokens), len(prompt) - 1)
        m = 0
        if limit > 0 and self.tokens[:limit] == prompt[:limit]:
            m = limit
        else:
            while m < limit and self.tokens[m] == prompt[m]:
                m += 1
        return m if m >= max(1, self.min_reuse) else 0

    def crop(self, m: int) -> None:
        """Keep positions < m (m >= min_reuse)."""
        if m == len(self.tokens):
            return
        cut = len(self.tokens) - m
        self.cache.crop(torch.tensor([m]))
        self.tokens = self.tokens[:m]
        if self.routing is not None:
            self.routing = self.routing[:m]
        if self.hidden is not None:
            self.hidden = self.hidden[:max(0, self.hidden.shape[0] - cut)]

    def clone(self) -> "PrefixEntry":
        cache = ModelKVCache([c.empty_like(1, len(self.tokens)) for c in self.cache.layers], [])
        cache.copy_rows(self.cache, torch.tensor([0]), torch.tensor([0]))
        return PrefixEntry(list(self.tokens), cache, None if self.routing is None else self.routing.clone(),
                           None if self.hidden is None else self.hidden.clone(), self.min_reuse)

    def nbytes(self) -> int:
        total = sum(self.cache.nbytes().values()) + sum(c.pos.numel() * c.pos.element_size() for c in self.cache.layers)
        for t in (self.routing, self.hidden):
            if t is not None:
                total += t.numel() * t.element_size()
        return total + 8 * len(self.tokens)


@dataclass
class PrefixCacheStats:
    hits: int = 0  # admissions that reused a prefix
    misses: int = 0
    dropped: int = 0  # entries whose kept prefix changed beyond what the rings can serve (recomputed)
    evicted: int = 0  # entries pushed out by the memory budget
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    peak_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class PrefixCache:
    """Entries by key, evicted least recently used first beyond `budget_bytes`. An entry taken by a running
    request is out of the cache (not evictable) until the request puts it back."""

    def __init__(self, budget_bytes: int = 512 << 20, share_prompts: bool = True) -> None:
        self.budget_bytes = budget_bytes
        self.share_prompts = share_prompts
        self._entries: OrderedDict[Hashable, PrefixEntry] = OrderedDict()
        self._bytes: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self.stats = PrefixCacheStats()

    @staticmethod
    def prompt_key(prompt: list[int]) -> tuple[str, int, int]:
        return ("prompt", len(prompt), hash(tuple(prompt)))

    def take(self, key: Hashable, prompt: list[int]) -> tuple[PrefixEntry | None, int]:
        """The entry to start `prompt` from and how many tokens it serves: the key's own entry, else a copy of
        the shared snapshot of this very prompt; (None, 0) when nothing can be reused."""
        with self._lock:
            entry = self._entries.pop(key, None)
            self._bytes.pop(key, None)
            if entry is not None:
                m = entry.reusable(prompt)
                if m:
                    return entry, m
                self.stats.dropped += 1
            shared = self._entries.get(self.prompt_key(prompt)) if self.share_prompts else None
            if shared is not None and shared.tokens == prompt:
                self._entries.move_to_end(self.prompt_key(prompt))
                entry = shared.clone()
                m = entry.reusable(prompt)
                if m:
                    return entry, m
        return None, 0

    def put(self, key: Hashable, entry: PrefixEntry) -> None:
        size = entry.nbytes()
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = entry
            self._bytes[key] = size
            while sum(self._bytes.values()) > self.budget_bytes and len(self._entries) > 1:
                old, _ = self._entries.popitem(last=False)
                self._bytes.pop(old, None)
                self.stats.evicted += 1
            if sum(self._bytes.values()) > self.budget_bytes:  # one entry alone over budget: not kept
                self._entries.pop(key, None)
                self._bytes.pop(key, None)
                self.stats.evicted += 1
            self.stats.peak_bytes = max(self.stats.peak_bytes, sum(self._bytes.values()))

    def has_prompt(self, prompt: list[int]) -> bool:
        with self._lock:
            return self.prompt_key(prompt) in self._entries

    def drop(self, key: Hashable) -> None:
        """Forget a finished episode's entry."""
        with self._lock:
            self._entries.pop(key, None)
            self._bytes.pop(key, None)

    def clear(self) -> None:
        """Forget every entry: they were computed with weights the policy no longer has."""
        with self._lock:
            self._entries.clear()
            self._bytes.clear()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def nbytes(self) -> int:
        with self._lock:
            return sum(self._bytes.values())

    def entry_bytes(self) -> dict[Hashable, int]:
        with self._lock:
            return dict(self._bytes)


__all__ = ["PrefixCache", "PrefixEntry", "PrefixCacheStats"]
