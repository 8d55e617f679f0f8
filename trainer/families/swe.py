"""The SWE family in the RL loop: mined tasks read from the store (`tasks` table, TaskSpec JSON, so the
trainer never imports the miner), each rollout an agent episode (bash / str_replace / finish) with the
learned policy in a sandbox from the task's instance image, graded by SweVerifier in a fresh sandbox
(agent/swe.py, envfarm.agent.swe). Every assistant turn is kept for training (RewardEvent.turns). A call's
episodes run concurrently (agent.concurrent_episodes), their turns batched together in one engine."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from envfarm import sandbox as sandboxes
from envfarm.errors import EnvfarmError
from envfarm.sandbox.protocol import Sandbox
from envfarm.store.db import Store, open_store
from envfarm.store.models import TaskRow
from envfarm.stream.events import RewardEvent
from envfarm.task import TaskSpec
from envfarm.agent.episode import EpisodeLimits, Transcript
from envfarm.trainer.agent.lm import LMAgentPolicy
from envfarm.agent.swe import swe_rollout
from envfarm.trainer.loop import payload
from envfarm.trainer.loop.config import RunConfig
from envfarm.trainer.loop.family import CallStats, GroupWork, RolloutHost
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.swe import SweVerifier


@dataclass(frozen=True)
class SweItem:
    id: str
    source: str  # the repository: the scheduler's quota unit
    spec: TaskSpec
    domain: str = "swe"


def load_swe_tasks(store: Store, ids: list[str] | None = None) -> list[SweItem]:
    with store.session() as session:
        query = select(TaskRow).where(TaskRow.kind == "swe")
        query = query.where(TaskRow.instance_id.in_(ids)) if ids else query.where(TaskRow.status == "validated")
        rows = session.scalars(query.order_by(TaskRow.instance_id)).all()
        items = [SweItem(r.instance_id, r.repo or "swe", TaskSpec.model_validate(r.spec)) for r in rows]
    missing = sorted(set(ids or []) - {i.id for i in items})
    if missing:
        raise EnvfarmError(f"SWE task(s) {missing[:5]} are not in the store", "mine them first (make mine) or fix tasks.ids")
    if not items:
        raise EnvfarmError("no validated SWE tasks in the store", "run make mine, or use tasks.family=func for the demo")
    no_image = [i.id for i in items if not i.spec.image]
    if no_image:
        raise EnvfarmError(f"SWE task(s) {no_image[:5]} have no instance image", "re-run the miner's environment setup for them")
    return items


class SweFamily:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.by_id = {t.id: t for t in load_swe_tasks(open_store(cfg.store_url), cfg.tasks.ids)}

    def tasks(self) -> list[SweItem]:
        return list(self.by_id.values())

    def rollout(self, host: RolloutHost, work: list[GroupWork], version: int) -> CallStats:
        a, g = self.cfg.agent, self.cfg.rollout.group_size
        limits = EpisodeLimits(a.max_steps, a.max_tokens, a.command_timeout, a.observation_chars)
        transcripts = Path(self.cfg.train.out_dir) / "transcripts" if a.transcripts else None

        def make_sandbox(spec: TaskSpec) -> Sandbox:
            return sandboxes.open(spec.image, run_id=host.run_id, task_id=spec.instance_id, backend=self.cfg.sandbox)

        verifier = SweVerifier(timeout=a.test_timeout)
        stats = CallStats()
        jobs = [(w, self.by_id[w.task_id], i) for w in work for i in range(g)]
        # Concurrent episodes: each in its own thread (its sandbox commands block there), their turns decoded
        # together by one continuously batched engine, each turn from its episode's prefix cache.
        batcher = (LMAgentPolicy.batcher_for(host.policy, host.sampling, host.draft, slots=a.concurrent_episodes)
                   if a.concurrent_episodes > 1 else None)

        def episode(job: tuple[GroupWork, SweItem, int]) -> tuple[LMAgentPolicy, Transcript, Reward]:
            w, item, i = job
            lm = LMAgentPolicy(host.policy, host.sampling, host.draft, a.max_prompt_tokens, batcher=batcher)
            try:
                transcript, reward = swe_rollout(item.spec, lambda: lm, make_sandbox, limits, verifier=verifier,
                                                 retries=self.cfg.rollout.grade_retries, transcript_dir=transcripts,
                                                 rollout_id=f"{w.group_id}-{i}")
            finally:
                lm.release()
            return lm, transcript, reward

        t0 = time.perf_counter()
        try:
            with ThreadPoolExecutor(max_workers=a.concurrent_episodes, thread_name_prefix="episode") as pool:
                finished = list(pool.map(episode, jobs))
        finally:
            if batcher is not None:
                batcher.close()
        stats.gen_s += time.perf_counter() - t0  # the call's episodes: generation + tools + grading, concurrently
        for (w, item, i), (lm, transcript, reward) in zip(jobs, finished):
            rid = f"{w.group_id}-{i}"
            stats.tokens += transcript.tokens
            stats.rollouts += 1
            failure = str(reward.details.get("failure") or "")
            stats.failed += bool(failure)
            details: dict[str, Any] = {"finish_reason": transcript.finish_reason, "steps": transcript.steps,
                                       "tool_errors": transcript.tool_errors, "reason": str(reward.details.get("reason", ""))[:300]}
            event = RewardEvent(rollout_id=rid, task_id=item.id, policy_version=version, reward=reward.value,
                                passed=reward.passed, group_id=w.group_id, group_size=g, run_id=host.run_id, domain=item.domain,
                                turns=[payload.encode(c) for c in lm.turns], details=details, failure=failure,
                                failure_class=str(reward.details.get("failure_class") or ("infrastructure" if failure else "")))
            stats.duplicates += host.publish(event) == "duplicate"
        return stats

    def evaluate(self, host: RolloutHost, samples: int) -> None:
        """No held-out yardstick for SWE tasks yet: every episode costs minutes of sandbox time."""
        return None
