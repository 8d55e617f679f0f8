"""The line-completion family (trainer/tasks_func/) in the RL loop: a group is `group_size` samples of one
prompt, generated in one batch and graded with one exec in the worker's sandbox. With rollout.partial on,
generation runs within a per-call budget and unfinished groups are parked for a later call to continue.

Every rollout of a group is published with the policy version that started the group. A grading sandbox
that keeps dying makes the call's rollouts failed (RewardEvent.failure): accounted for, never trained on.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from envfarm.stream.events import RewardEvent
from envfarm.trainer.loop import partial, payload
from envfarm.trainer.loop.config import RunConfig
from envfarm.trainer.loop.family import CallStats, GroupWork, RolloutHost
from envfarm.trainer.rollout.result import Completion
from envfarm.trainer.rollout.sampling import SamplingParams
from envfarm.trainer.tasks_func import FuncTask, family_tasks, grade_batch


class FuncFamily:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.by_id = {t.id: t for t in family_tasks(cfg.tasks.names)}

    def tasks(self) -> list[FuncTask]:
        return list(self.by_id.values())

    @staticmethod
    def _sampling(host: RolloutHost) -> SamplingParams:
        """A completion is one line: generation stops at the newline."""
        return replace(host.sampling, stop=["\n"])

    def rollout(self, host: RolloutHost, work: list[GroupWork], version: int) -> CallStats:
        if self.cfg.rollout.partial.enabled:
            return self._rollout_partial(host, work, version)
        g = self.cfg.rollout.group_size
        t0 = time.perf_counter()
        batch = host.policy.generate([self.by_id[w.task_id].prompt for w in work for _ in range(g)], self._sampling(host), draft=host.draft)
        stats = CallStats(gen_s=time.perf_counter() - t0, tokens=sum(len(c.tokens) for c in batch.completions),
                          rollouts=len(batch.completions), acceptance=batch.stats.get("mean_acceptance_length", 1.0))
        self._grade_and_publish(host, work, batch.completions, [version] * len(work), [{}] * len(batch.completions), stats)
        return stats

    def _rollout_partial(self, host: RolloutHost, work: list[GroupWork], version: int) -> CallStats:
        """Generate within this call's budget; groups whose every member finished are graded and published
        (with their starting version), the rest come back as `parked` for the trainer to continue later.
        Nothing of an unfinished group is published, so a group dropped as too stale left no reward anywhere."""
        tokenizer = host.policy.tokenizer
        groups = [partial.members(w, self.cfg.rollout.group_size, tokenizer.encode(self.by_id[w.task_id].prompt)) for w in work]
        t0 = time.perf_counter()
        tokens, acceptance = partial.extend(host.policy, [m for ms in groups for m in ms], self._sampling(host), host.draft,
                                            self.cfg.rollout.partial, version)
        max_new = host.sampling.max_new_tokens
        done = [i for i, ms in enumerate(groups) if all(m.done(max_new) for m in ms)]
        finished = [work[i] for i in done]
        members = [m for i in done for m in groups[i]]
        stats = CallStats(gen_s=time.perf_counter() - t0, tokens=tokens, rollouts=len(members), acceptance=acceptance,
                          parked=[partial.park(work[i], groups[i]) for i in range(len(work)) if i not in done],
                          resumed=sum(w.resumed for w in work))
        self._grade_and_publish(host, finished, [m.completion for m in members], [w.started_version for w in finished],  # type: ignore[misc]
                                [{"segment_versions": list(m.versions)} for m in members], stats)
        return stats

    def _grade_and_publish(self, host: RolloutHost, work: list[GroupWork], completions: list[Completion], versions: list[int],
                           extra: list[dict[str, Any]], stats: CallStats) -> None:
        """Grade whole groups (work[i] owns completions[i*g:(i+1)*g]) and publish one event per rollout,
        stamped with the policy version that started its group."""
        g = self.cfg.rollout.group_size
        tasks = [self.by_id[w.task_id] for w in work]
        texts = [host.policy.tokenizer.decode(c.tokens) for c in completions]
        programs = [tasks[i // g].program(texts[i]) for i in range(len(texts))]
        t0 = time.perf_counter()
        timeout = self.cfg.rollout.grade_timeout
        grades, failure = host.in_sandbox(lambda sandbox: grade_batch(sandbox, programs, timeout)) if programs else ([], "")
        stats.grade_s += time.perf_counter() - t0
        for i, c in enumerate(completions):
            w, task = work[i // g], tasks[i // g]
            details: dict[str, Any] = {"text": texts[i][:200], "worker": host.index, **extra[i]}
            passed = grades is not None and grades[i].passed
            if grades is not None and not passed:
                details["error"] = grades[i].error[-160:]
            event = RewardEvent(rollout_id=f"{w.group_id}-{i % g}", task_id=task.id, policy_version=versions[i // g],
                                reward=1.0 if passed else 0.0, passed=passed, group_id=w.group_id, group_size=g, run_id=host.run_id,
                                domain=task.domain, payload=payload.encode(c), details=details,
                                failure="" if grades is not None else failure,
                                failure_class="" if grades is not None else "infrastructure")
            stats.duplicates += host.publish(event) == "duplicate"
        if grades is None:
            stats.failed += len(programs)

    def evaluate(self, host: RolloutHost, samples: int) -> dict[str, Any]:
        """Pass rate of every task in the family with `samples` draws each, graded like training
        rollouts but published nowhere: a fixed yardstick that the scheduler's task mix cannot bias."""
        tasks = self.tasks()
        batch = host.policy.generate([t.prompt for t in tasks for _ in range(samples)], self._sampling(host), draft=host.draft)
        texts = [host.policy.tokenizer.decode(c.tokens) for c in batch.completions]
        programs = [tasks[i // samples].program(x) for i, x in enumerate(texts)]
        timeout = self.cfg.rollout.grade_timeout
        grades, failure = host.in_sandbox(lambda sandbox: grade_batch(sandbox, programs, timeout))
        if grades is None:
            return {"error": failure}
        per_task = {t.id: sum(g.passed for g in grades[j * samples:(j + 1) * samples]) / samples for j, t in enumerate(tasks)}
        return {"per_task": per_task, "mean": sum(per_task.values()) / len(per_task), "samples": samples}
