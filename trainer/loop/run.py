"""The training driver. Per step, in this order: generate (complete groups of graded rollouts from the
reward stream, the rollout workers kept busy by the dispatcher), update (GRPO or MOPD with routing
replay), publish the new weights to the workers, checkpoint, commit the step's rewards to the ledger;
the policy is evaluated on the whole task family before the first step and after the last.

Exactly-once in effect across a kill: rewards are committed to the ledger only after the checkpoint that
contains their update is on disk; the checkpoint also lists them, and a resuming trainer commits that
list before its stream reloads the uncommitted rest. So a reward is either in the weights and committed,
or not in the weights and handed out again.

The loop is generic over task families (trainer/loop/family.py); what a rollout is lives in the family.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from rich.console import Console

from envfarm.errors import EnvfarmError
from envfarm.runs import new_run_id, run_scope
from envfarm.store.db import Store, open_store
from envfarm.stream.events import RewardEvent
from envfarm.stream.ledger import RewardLedger
from envfarm.stream.ray_stream import StreamActor
from envfarm.trainer.loop import checkpoint as ckpt
from envfarm.trainer.loop.config import RunConfig
from envfarm.trainer.loop.dispatcher import Collected, RolloutDispatcher
from envfarm.trainer.loop.family import open_family
from envfarm.trainer.loop.learner import Learner
from envfarm.trainer.loop.plot import write_plot
from envfarm.trainer.loop.sandboxes import preflight
from envfarm.trainer.loop.worker import build_policy
from envfarm.trainer.model.policy_model import PolicyModel
from envfarm.trainer.scheduler import DataScheduler


def _ray_up(cfg: RunConfig) -> bool:
    """Join RAY_ADDRESS / ray_address if given, else start a local Ray. Returns True if we started it."""
    if ray.is_initialized():
        return False
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(num_cpus=max(2, cfg.rollout.num_workers), include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _remove_run_containers(run_id: str) -> int:
    try:
        from envfarm.engine import connect
        from envfarm.sandbox.docker import LABEL_RUN

        client = connect()
        leftovers = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
        for c in leftovers:
            c.remove(force=True)
        return len(leftovers)
    except Exception:  # noqa: BLE001 - best effort; `envfarm gc` removes what a finished run left
        return 0


@dataclass
class Progress:
    """Where the run stands; `uncommitted` are the rollout ids trained since the last ledger commit."""

    run_id: str
    step: int = 0
    version: int = 0
    uncommitted: list[str] = field(default_factory=list)
    train_s: float = 0.0
    train_tokens: int = 0


def trainable(groups: list[list[RewardEvent]]) -> list[list[RewardEvent]]:
    """Groups to learn from: none with a rollout that could not be graded (the dispatcher already left out
    rollouts the stream handed out twice)."""
    return [g for g in groups if not any(e.failed for e in g)]


class Trainer:
    def __init__(self, cfg: RunConfig, console: Console | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console()
        self.out = Path(cfg.train.out_dir)
        self.ckpt_dir = self.out / "checkpoint"
        self.metrics_file = self.out / "metrics.jsonl"
        self.tasks = {t.id: t for t in open_family(cfg).tasks()}
        self.rollouts: RolloutDispatcher | None = None

    # -- the run: set-up and tear-down around the loop ---------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        preflight(cfg)  # a kubernetes backend that cannot work fails here, before anything starts
        torch.set_num_threads(cfg.train.torch_threads)
        torch.manual_seed(cfg.train.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._restore()
        run_id = state["run_id"] if state else new_run_id("train")
        store = open_store(cfg.store_url)
        self._prepare_folder(store, run_id, state)
        started_ray = _ray_up(cfg)
        try:
            with run_scope(store, "train", json.loads(cfg.model_dump_json()), run_id=run_id) as run:
                summary = self._train(store, run_id, state)
                run.summary = summary
        finally:
            if self.rollouts is not None:
                self.rollouts.close()
            _remove_run_containers(run_id)
            if started_ray:
                ray.shutdown()
        return summary

    def _restore(self) -> dict[str, Any] | None:
        found = ckpt.latest(self.ckpt_dir) if self.cfg.train.resume else None
        if found is None:
            return None
        model, state = ckpt.load(found)
        state["model"] = model
        return state

    def _prepare_folder(self, store: Store, run_id: str, state: dict[str, Any] | None) -> None:
        if state:  # trained into the checkpoint: make sure the ledger says so before anything reloads it
            RewardLedger(store, run_id).commit(state["uncommitted"], {"step": state["step"], "via": "resume"})
            if self.metrics_file.exists():
                rows = [ln for ln in self.metrics_file.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= state["step"]]
                self.metrics_file.write_text("".join(r + "\n" for r in rows))
        else:  # a fresh run in a used folder: its curve must not continue an older run's
            for old in (self.metrics_file, self.out / "eval.jsonl", self.out / "reward.png"):
                old.unlink(missing_ok=True)
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)

    def _open_stream(self, store: Store, run_id: str) -> Any:
        s = self.cfg.stream
        stream = StreamActor.remote(store.url, run_id, capacity=s.capacity, max_staleness=s.max_staleness, stale_policy=s.stale_policy)
        recovered = ray.get(stream.stats.remote())["recovered"]
        if recovered:
            self.console.print(f"reward stream: {recovered} uncommitted reward(s) recovered from the ledger")
        return stream

    # -- the loop -------------------------------------------------------------------------------
    def _train(self, store: Store, run_id: str, state: dict[str, Any] | None) -> dict[str, Any]:
        cfg, t_start = self.cfg, time.time()
        model = build_policy(cfg).model
        scheduler: DataScheduler[Any] = DataScheduler([(t.id, t.source, t) for t in self.tasks.values()], cfg.scheduler)
        progress = Progress(run_id)  # the checkpoint's own `uncommitted` was committed before the stream started
        if state:
            model.load_state_dict(state["model"].state_dict())
        model.train()
        learner = Learner(model, cfg.algo, reference=build_policy(cfg).model if cfg.algo.kl_coef else None)
        if state:
            learner.load_state_dict(state["optimizer"])
            scheduler.load_state(state["scheduler"])
            progress.step, progress.version = state["step"], state["version"]
            self.console.print(f"[bold]resumed[/] run {run_id} at step {progress.step} from {self.ckpt_dir}")
        first_step = progress.step
        stream = self._open_stream(store, run_id)
        rollouts = self.rollouts = RolloutDispatcher(cfg, run_id, stream, scheduler, self.out, self.console)
        rollouts.start(_cpu_state(model), progress.version)

        eval_start = self._evaluate(rollouts, progress, "start")
        while progress.step < cfg.train.steps:
            got = rollouts.next_groups(cfg.train.groups_per_step)                      # generate
            learn_from = trainable(got.groups)
            progress.uncommitted += [e.rollout_id for e in got.events]
            for g in got.groups:
                scheduler.record(g[0].task_id, [e.passed for e in g if not e.failed])
            t_train = time.perf_counter()
            stats = learner.update(learn_from, got.weights)                            # update
            train_s = time.perf_counter() - t_train
            progress.train_s += train_s
            progress.train_tokens += stats.get("tokens", 0)
            progress.step += 1
            progress.version += 1
            rollouts.publish_weights(_cpu_state(model), progress.version)              # publish weights
            self._log_step(progress, got, learn_from, stats, train_s, t_start)
            out_of_time = bool(cfg.train.max_minutes) and (time.time() - t_start) > cfg.train.max_minutes * 60
            if progress.step % cfg.train.checkpoint_every == 0 or progress.step >= cfg.train.steps or out_of_time:
                self._checkpoint(model, learner, scheduler, progress)                 # checkpoint
                ray.get(stream.commit.remote(progress.uncommitted, {"step": progress.step}))  # commit
                progress.uncommitted = []
                write_plot(self.metrics_file, self.out / "reward.png", f"{cfg.name}: {run_id}")
            if out_of_time:
                self.console.print(f"[yellow]train.max_minutes={cfg.train.max_minutes} reached: stopping after step {progress.step}[/]")
                break

        rollouts.drain()
        eval_end = self._evaluate(rollouts, progress, "end")                           # evaluate
        write_plot(self.metrics_file, self.out / "reward.png", f"{cfg.name}: {run_id}")
        return self._summary(progress, first_step, t_start, eval_start, eval_end, ray.get(stream.stats.remote()))

    # -- the steps' parts -----------------------------------------------------------------------
    def _checkpoint(self, model: PolicyModel, learner: Learner, scheduler: DataScheduler[Any], p: Progress) -> None:
        ckpt.save(self.ckpt_dir, model, {"run_id": p.run_id, "step": p.step, "version": p.version, "optimizer": learner.state_dict(),
                                         "scheduler": scheduler.state(), "uncommitted": p.uncommitted})

    def _evaluate(self, rollouts: RolloutDispatcher, p: Progress, label: str) -> dict[str, Any] | None:
        samples = self.cfg.train.eval_samples
        if not samples:
            return None
        t0 = time.perf_counter()
        result = rollouts.evaluate(samples)
        if result is None:  # the family has no evaluation
            return None
        result.update(step=p.step, when=label, seconds=round(time.perf_counter() - t0, 1))
        with (self.out / "eval.jsonl").open("a") as f:
            f.write(json.dumps(result) + "\n")
        if "mean" in result:
            self.console.print(f"eval ({label}, step {p.step}): pass rate over all {len(result['per_task'])} tasks "
                               f"{result['mean']:.3f} ({samples} samples each)", highlight=False)
        return result

    def _log_step(self, p: Progress, got: Collected, learned: list[list[RewardEvent]], stats: dict[str, Any], train_s: float,
                  t_start: float) -> None:
        assert self.rollouts is not None
        stats = dict(stats)
        train_tokens = stats.pop("tokens", 0)
        events = got.events
        ok = [e for e in events if not e.failed]
        row = {"step": p.step, "version": p.version, "reward_mean": sum(e.reward for e in ok) / max(1, len(ok)),
               "pass_at_k": sum(any(e.passed for e in g) for g in got.groups) / max(1, len(got.groups)),
               "groups": len(got.groups), "trained_groups": len(learned), "failed_rollouts": len(events) - len(ok),
               "staleness_max": got.staleness_max, "dropped_stale": got.dropped_stale, "redelivered": got.redelivered, "wait_s": round(got.wait_s, 3),
               "train_s": round(train_s, 3), "train_tokens": train_tokens, "elapsed_s": round(time.time() - t_start, 1),
               "rollout_ids": [e.rollout_id for e in events], "tasks": sorted({g[0].task_id for g in got.groups}), **stats}
        partials = self.rollouts.partials
        if partials is not None:
            row.update(partial_parked=len(partials.parked), partial_discarded_groups=partials.discarded,
                       continued_rollouts=sum(len(e.details.get("segment_versions", [])) > 1 for e in events))
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.console.print(
            f"step {p.step:>4}/{self.cfg.train.steps}  reward {row['reward_mean']:.3f}  pass@k {row['pass_at_k']:.2f}  "
            f"loss {stats.get('loss', 0):+.4f}  rollout tok/s {self.rollouts.totals.tokens_per_s:6.1f}  staleness {got.staleness_max}  "
            f"wait {got.wait_s:5.1f}s  train {train_s:4.1f}s", highlight=False, soft_wrap=True)

    def _summary(self, p: Progress, first_step: int, t_start: float, eval_start: dict[str, Any] | None,
                 eval_end: dict[str, Any] | None, stream_stats: dict[str, Any]) -> dict[str, Any]:
        assert self.rollouts is not None
        t, partials = self.rollouts.totals, self.rollouts.partials
        return {"run_id": p.run_id, "steps": p.step, "steps_this_process": p.step - first_step, "elapsed_s": round(time.time() - t_start, 1),
                "rollout_tokens_per_s": round(t.tokens_per_s, 2),
                "trainer_tokens_per_s": round(p.train_tokens / max(1e-9, p.train_s), 2),
                "trainer_wait_fraction": round(t.wait_s / max(1e-9, t.wait_s + p.train_s), 3),
                "mean_acceptance_length": round(sum(t.acceptance) / max(1, len(t.acceptance)), 3),
                "worker_restarts": t.worker_restarts, "failed_calls": t.failed_calls, "failed_rollouts": t.failed_rollouts,
                "eval_start": (eval_start or {}).get("mean"), "eval_end": (eval_end or {}).get("mean"),
                "calls": t.calls, "stream": stream_stats, "out_dir": str(self.out), "plot": str(self.out / "reward.png"),
                **({"partial": {"resumed_groups": t.resumed_groups, "discarded_groups": partials.discarded,
                                "parked_at_end": len(partials.parked)}} if partials is not None else {})}


def train(cfg: RunConfig, console: Console | None = None) -> dict[str, Any]:
    if cfg.rollout.group_size < 2 and cfg.algo.name == "grpo":
        raise EnvfarmError("rollout.group_size < 2 gives GRPO no baseline", "set rollout.group_size >= 2")
    return Trainer(cfg, console).run()
