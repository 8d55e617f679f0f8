"""A rollout worker (a Ray actor): holds the policy and a sandbox, samples groups for the tasks it is
given, grades them in the sandbox and publishes one RewardEvent per rollout to the stream.

Rollout ids are assigned by the trainer (`{group_id}-{i}`), so when a call is retried after a worker
died, the re-published rewards of rollouts that already made it are dropped as duplicates and the group
still completes. A sandbox that dies is replaced and the grading retried; if it keeps failing the
rollouts are published as failed (details.failure) so they are accounted for but never trained on.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray
import torch

from envfarm.errors import SandboxError
from envfarm.stream.events import RewardEvent
from envfarm.stream.ray_stream import publish_blocking
from envfarm.trainer.loop import partial, payload
from envfarm.trainer.loop.config import RunConfig
from envfarm.trainer.loop.sandboxes import make_sandbox
from envfarm.trainer.rollout.sampling import SamplingParams
from envfarm.trainer.tasks_func import family_tasks, grade_batch


def build_policy(cfg: RunConfig):  # type: ignore[no-untyped-def]
    from envfarm.trainer.model import PolicyModel
    from envfarm.trainer.model.config import micro, tiny
    from envfarm.trainer.rollout.policy import Policy

    if cfg.policy.checkpoint:
        return Policy.from_checkpoint(cfg.policy.checkpoint)
    torch.manual_seed(cfg.train.seed)
    return Policy(PolicyModel(tiny() if cfg.policy.preset == "tiny" else micro()).eval())


class RolloutWorker:
    def __init__(self, cfg_json: str, index: int, run_id: str, stream: Any) -> None:
        self.cfg = RunConfig.model_validate_json(cfg_json)
        torch.set_num_threads(self.cfg.train.torch_threads)
        self.index, self.run_id, self.stream = index, run_id, stream
        self.policy = build_policy(self.cfg)
        self.version = -1
        self.family = self.cfg.tasks.family
        if self.family == "swe":
            from envfarm.store.db import open_store
            from envfarm.trainer.loop.swe_tasks import load_swe_tasks

            self.tasks = {t.id: t for t in load_swe_tasks(open_store(self.cfg.store_url), self.cfg.tasks.ids)}
        else:
            self.tasks = {t.id: t for t in family_tasks(self.cfg.tasks.names)}
        self.sandbox = None
        p = self.cfg.policy
        self.sampling = SamplingParams(max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, stop=["\n"])
        self.draft = None if p.draft == "none" else "mtp"

    def pid(self) -> int:
        return os.getpid()

    def _sandbox(self):  # type: ignore[no-untyped-def]
        """The grading sandbox, created on first use (and again after it died) by the configured backend."""
        if self.sandbox is None:
            self.sandbox = make_sandbox(self.cfg, self.index, self.run_id)
        return self.sandbox

    def _drop_sandbox(self) -> None:
        if self.sandbox is not None:
            try:
                self.sandbox.close()
            except Exception:  # noqa: BLE001 - it is already dead; gc removes leftovers by run label
                pass
            self.sandbox = None

    def _grade(self, programs: list[str]) -> tuple[list[Any] | None, str]:
        reason = ""
        for _ in range(self.cfg.rollout.grade_retries + 1):
            try:
                return grade_batch(self._sandbox(), programs, self.cfg.rollout.grade_timeout), ""
            except SandboxError as exc:
                reason = exc.line()
                self._drop_sandbox()
        return None, reason

    def _sync(self, weights: list[Any], version: int) -> None:
        """Load the published weights only when the version moved (the ref is nested so Ray fetches lazily)."""
        if version != self.version:
            self.policy.model.load_state_dict(ray.get(weights[0]))
            self.policy.model.eval()
            self.version = version

    def rollout(self, work: list[dict[str, Any]], weights: list[Any], version: int) -> dict[str, Any]:
        """work: [{group_id, task_id}] (plus started_version and members for a group being continued);
        weights: [ObjectRef of a state dict] (nested so Ray does not fetch it unless the version changed)."""
        self._sync(weights, version)
        if self.family == "swe":
            return self._rollout_swe(work, version)
        if self.cfg.rollout.partial.enabled:
            return self._rollout_partial(work, version)
        g = self.cfg.rollout.group_size
        tasks = [self.tasks[w["task_id"]] for w in work]
        t0 = time.perf_counter()
        batch = self.policy.generate([t.prompt for t in tasks for _ in range(g)], self.sampling, draft=self.draft)
        gen_s = time.perf_counter() - t0
        grade_s, statuses, failed = self._grade_and_publish(work, batch.completions, [version] * len(work), [{}] * len(batch.completions))
        return {"gen_s": gen_s, "grade_s": grade_s, "tokens": sum(len(c.tokens) for c in batch.completions),
                "rollouts": len(batch.completions), "duplicates": statuses.count("duplicate"),
                "failed": failed, "acceptance": batch.stats.get("mean_acceptance_length", 1.0)}

    def _grade_and_publish(self, work: list[dict[str, Any]], completions: list[Any], versions: list[int],
                           extra: list[dict[str, Any]]) -> tuple[float, list[str], int]:
        """Grade whole groups (work[i] owns completions[i*g:(i+1)*g]) and publish one event per rollout,
        stamped with the policy version that started its group. Returns (grade seconds, statuses, failed)."""
        g = self.cfg.rollout.group_size
        tasks = [self.tasks[w["task_id"]] for w in work]
        texts = [self.policy.tokenizer.decode(c.tokens) for c in completions]
        programs = [tasks[i // g].program(texts[i]) for i in range(len(texts))]
        t1 = time.perf_counter()
        grades, failure = self._grade(programs) if programs else ([], "")
        grade_s = time.perf_counter() - t1
        statuses = []
        for i, c in enumerate(completions):
            w, task = work[i // g], tasks[i // g]
            details: dict[str, Any] = {"text": texts[i][:200], "worker": self.index, **extra[i]}
            if grades is None:
                details["failure"] = failure
                reward, passed = 0.0, False
            else:
                passed = grades[i].passed
                reward = 1.0 if passed else 0.0
                if not passed:
                    details["error"] = grades[i].error[-160:]
            event = RewardEvent(rollout_id=f"{w['group_id']}-{i % g}", task_id=task.id, policy_version=versions[i // g],
                                reward=reward, passed=passed, group_id=w["group_id"], group_size=g, run_id=self.run_id,
                                domain=task.domain, payload=payload.encode(c), details=details)
            statuses.append(publish_blocking(self.stream, event))
        return grade_s, statuses, 0 if grades is not None else len(programs)

    def _rollout_partial(self, work: list[dict[str, Any]], version: int) -> dict[str, Any]:
        """Generate within this call's budget; groups whose every member finished are graded and published
        (with their starting version), the rest come back as `parked` for the trainer to continue later.
        Nothing of an unfinished group is published, so a group dropped as too stale left no reward anywhere."""
        groups = [partial.members(w, self.cfg.rollout.group_size, self.policy.tokenizer.encode(self.tasks[w["task_id"]].prompt))
                  for w in work]
        t0 = time.perf_counter()
        tokens, acceptance = partial.extend(self.policy, [m for ms in groups for m in ms], self.sampling, self.draft,
                                            self.cfg.rollout.partial, version)
        gen_s = time.perf_counter() - t0
        max_new = self.sampling.max_new_tokens
        done = [i for i, ms in enumerate(groups) if all(m.done(max_new) for m in ms)]
        parked = [partial.park(work[i], groups[i], version) for i in range(len(work)) if i not in done]
        finished_work = [work[i] for i in done]
        members = [m for i in done for m in groups[i]]
        grade_s, statuses, failed = self._grade_and_publish(
            finished_work, [m.completion for m in members], [int(w.get("started_version", version)) for w in finished_work],
            [{"segment_versions": list(m.versions)} for m in members])
        return {"gen_s": gen_s, "grade_s": grade_s, "tokens": tokens, "rollouts": len(members), "duplicates": statuses.count("duplicate"),
                "failed": failed, "acceptance": acceptance, "parked": parked, "resumed": sum("members" in w for w in work)}

    def _rollout_swe(self, work: list[dict[str, str]], version: int) -> dict[str, Any]:
        """Agent episodes (bash / str_replace / finish) in sandboxes from each task's instance image, graded
        by SweVerifier in a fresh sandbox; every assistant turn is kept for training."""
        from pathlib import Path

        from envfarm import sandbox as sandboxes
        from envfarm.trainer.agent.episode import EpisodeLimits
        from envfarm.trainer.agent.lm import LMAgentPolicy
        from envfarm.trainer.agent.swe import swe_rollout

        a, g = self.cfg.agent, self.cfg.rollout.group_size
        limits = EpisodeLimits(a.max_steps, a.max_tokens, a.command_timeout, a.observation_chars)
        transcripts = Path(self.cfg.train.out_dir) / "transcripts" if a.transcripts else None
        make_sandbox = lambda spec: sandboxes.open(spec.image, run_id=self.run_id, task_id=spec.instance_id,  # noqa: E731
                                                   backend=self.cfg.sandbox)
        totals = {"gen_s": 0.0, "grade_s": 0.0, "tokens": 0, "rollouts": 0, "duplicates": 0, "failed": 0, "acceptance": 1.0}
        for w in work:
            item = self.tasks[w["task_id"]]
            for i in range(g):
                rid = f"{w['group_id']}-{i}"
                lm = LMAgentPolicy(self.policy, self.sampling.__class__(max_new_tokens=self.sampling.max_new_tokens,
                                   temperature=self.sampling.temperature, top_p=self.sampling.top_p), self.draft, a.max_prompt_tokens)
                t0 = time.perf_counter()
                transcript, reward = swe_rollout(item.spec, lambda: lm, make_sandbox, limits, retries=self.cfg.rollout.grade_retries,
                                                 transcript_dir=transcripts, rollout_id=rid)
                totals["gen_s"] += time.perf_counter() - t0  # episode time: generation + tools + grading
                totals["tokens"] += transcript.tokens
                totals["rollouts"] += 1
                details: dict[str, Any] = {"finish_reason": transcript.finish_reason, "steps": transcript.steps,
                                           "tool_errors": transcript.tool_errors, "reason": str(reward.details.get("reason", ""))[:300]}
                if reward.details.get("failure"):
                    details["failure"] = reward.details["failure"]
                    totals["failed"] += 1
                event = RewardEvent(rollout_id=rid, task_id=item.id, policy_version=version, reward=reward.value,
                                    passed=reward.passed, group_id=w["group_id"], group_size=g, run_id=self.run_id, domain=item.domain,
                                    payload={"turns": [payload.encode(c) for c in lm.turns]}, details=details)
                totals["duplicates"] += publish_blocking(self.stream, event) == "duplicate"
        return totals

    def evaluate(self, weights: list[Any], version: int, samples: int) -> dict[str, Any]:
        """Pass rate of every task in the family with `samples` draws each, graded like training
        rollouts but published nowhere: a fixed yardstick that the scheduler's task mix cannot bias."""
        if self.family != "func":
            return {"error": "evaluation is implemented for the func family only"}
        self._sync(weights, version)
        tasks = list(self.tasks.values())
        batch = self.policy.generate([t.prompt for t in tasks for _ in range(samples)], self.sampling, draft=self.draft)
        texts = [self.policy.tokenizer.decode(c.tokens) for c in batch.completions]
        grades, failure = self._grade([tasks[i // samples].program(x) for i, x in enumerate(texts)])
        if grades is None:
            return {"error": failure}
        per_task = {t.id: sum(g.passed for g in grades[j * samples:(j + 1) * samples]) / samples for j, t in enumerate(tasks)}
        return {"per_task": per_task, "mean": sum(per_task.values()) / len(per_task), "samples": samples}

    def close(self) -> None:
        self._drop_sandbox()
