"""Partial rollouts inside a worker call: generation in budgeted segments, and the JSON state that lets a
later call (maybe on another worker, maybe under newer weights) continue an unfinished group.

A continued completion keeps the prompt of its first segment; its tokens and behaviour log-probs are the
segments concatenated, and its routing keeps what the starting policy routed, filling only positions that
were never fed through the model (the last token of a segment) from the continuing call. `versions` lists
the policy version of every segment; the group keeps the version that started it, which is what the
stream's staleness limit is measured against.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from envfarm.trainer.loop import payload
from envfarm.trainer.loop.config import PartialCfg
from envfarm.trainer.loop.family import GroupWork
from envfarm.trainer.rollout.result import Completion
from envfarm.trainer.rollout.sampling import SamplingParams


@dataclass
class Member:
    """One rollout of a group: its prompt tokens and, once started, the completion so far."""

    prompt: list[int]
    completion: Completion | None = None
    versions: list[int] = field(default_factory=list)

    @property
    def generated(self) -> list[int]:
        return self.completion.tokens if self.completion is not None else []

    def done(self, max_new_tokens: int) -> bool:
        c = self.completion
        return c is not None and (c.finish_reason == "stop" or len(c.tokens) >= max_new_tokens)

    def merge(self, segment: Completion, version: int) -> None:
        """Append a segment generated from prompt + tokens so far."""
        self.versions.append(version)
        old = self.completion
        if old is None:
            self.completion = segment
            return
        routing = segment.routing
        if old.routing is not None and routing is not None:
            routing = routing.clone()
            n = old.routing.shape[0]
            routing[:n] = torch.where(old.routing >= 0, old.routing, routing[:n])
        self.completion = Completion(old.prompt, old.tokens + segment.tokens, old.logprobs + segment.logprobs, routing,
                                     segment.finish_reason)


def members(work: GroupWork, group_size: int, prompt: list[int]) -> list[Member]:
    """The group's members: fresh ones for new work, or decoded from the state a previous call parked."""
    if not work.resumed:
        return [Member(list(prompt)) for _ in range(group_size)]
    out = []
    for state in work.members:
        c = payload.decode(state["payload"])
        out.append(Member(c.prompt, c, list(state["versions"])))
    return out


def park(work: GroupWork, group: list[Member]) -> GroupWork:
    """The group with its members' JSON state; `started_version` survives every continuation."""
    states = [{"payload": payload.encode(m.completion), "versions": m.versions} for m in group if m.completion is not None]
    if len(states) != len(group):  # a member never generated (only possible with a zero budget): start it over
        states = []
    return GroupWork(work.group_id, work.task_id, work.started_version, states)


def extend(policy: Any, todo: list[Member], sampling: SamplingParams, draft: str | None, cfg: PartialCfg,
           version: int) -> tuple[int, float]:
    """Generate for the unfinished members until each is done or the call's budget is spent: at most
    `token_budget` new tokens per rollout, and no new segment once `time_budget_s` passed (one segment
    always runs, so every call makes progress). Returns (new tokens, mean acceptance length)."""
    t0, spent, tokens, acceptance = time.perf_counter(), 0, 0, []
    max_new = sampling.max_new_tokens
    while True:
        active = [m for m in todo if not m.done(max_new)]
        room = cfg.token_budget - spent if cfg.token_budget else max_new
        if not active or room <= 0 or (spent and cfg.time_budget_s and time.perf_counter() - t0 >= cfg.time_budget_s):
            return tokens, sum(acceptance) / max(1, len(acceptance)) if acceptance else 1.0
        step = min(room, cfg.segment_tokens) if cfg.time_budget_s else room
        by_length: dict[int, list[Member]] = defaultdict(list)
        for m in active:
            by_length[min(step, max_new - len(m.generated))].append(m)
        for n, group in by_length.items():
            params = replace(sampling, max_new_tokens=n)
            batch = policy.generate([m.prompt + m.generated for m in group], params, draft=draft)
            for m, c in zip(group, batch.completions):
                m.merge(c, version)
                tokens += len(c.tokens)
            acceptance.append(batch.stats.get("mean_acceptance_length", 1.0))
        spent += step
