"""The training driver: Ray up, stream actor, rollout workers, then per step: consume complete groups
from the reward stream, GRPO or MOPD with routing replay, publish new weights, checkpoint, commit.

Exactly-once in effect across a kill: rewards are committed to the ledger only after the checkpoint that
contains their update is on disk; the checkpoint also lists them, and a resuming trainer commits that
list before its stream reloads the uncommitted rest. So a reward is either in the weights and committed,
or not in the weights and handed out again.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import torch
from rich.console import Console

from envfarm.errors import EnvfarmError
from envfarm.runs import new_run_id, run_scope
from envfarm.store.db import open_store
from envfarm.stream.ledger import RewardLedger
from envfarm.stream.ray_stream import StreamActor
from envfarm.trainer.algo.grpo import GRPOConfig, group_advantages, grpo_loss
from envfarm.trainer.algo.mopd import MOPDConfig, mopd_loss, teacher_logprobs
from envfarm.trainer.algo.replay import pack, routing_agreement, sequence_logprobs
from envfarm.trainer.loop import checkpoint as ckpt
from envfarm.trainer.loop import payload
from envfarm.trainer.loop.config import RunConfig
from envfarm.trainer.loop.plot import write_plot
from envfarm.trainer.loop.worker import RolloutWorker, build_policy
from envfarm.trainer.loop.sandboxes import preflight
from envfarm.trainer.scheduler import DataScheduler, PartialRollouts
from envfarm.trainer.tasks_func import family_tasks


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


class Trainer:
    def __init__(self, cfg: RunConfig, console: Console | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console()
        self.out = Path(cfg.train.out_dir)
        self.ckpt_dir = self.out / "checkpoint"
        self.metrics_file = self.out / "metrics.jsonl"
        if cfg.tasks.family == "swe":
            from envfarm.trainer.loop.swe_tasks import load_swe_tasks

            self.tasks = {t.id: t for t in load_swe_tasks(open_store(cfg.store_url), cfg.tasks.ids)}
        else:
            self.tasks = {t.id: t for t in family_tasks(cfg.tasks.names)}

    # -- set-up ---------------------------------------------------------------------------------
    def _restore(self) -> dict[str, Any] | None:
        found = ckpt.latest(self.ckpt_dir) if self.cfg.train.resume else None
        if found is None:
            return None
        model, state = ckpt.load(found)
        state["model"] = model
        return state

    def _teachers(self) -> dict[str, Any]:
        from envfarm.trainer.model import load_checkpoint, token_logprobs

        out = {}
        for domain, path in self.cfg.algo.teachers.items():
            teacher = load_checkpoint(path)
            out[domain] = lambda tokens, m=teacher: token_logprobs(m, tokens)
        return out

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        preflight(cfg)  # a kubernetes backend that cannot work fails here, before anything starts
        torch.set_num_threads(cfg.train.torch_threads)
        torch.manual_seed(cfg.train.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._restore()
        run_id = state["run_id"] if state else new_run_id("train")
        store = open_store(cfg.store_url)
        if state:  # trained into the checkpoint: make sure the ledger says so before anything reloads it
            RewardLedger(store, run_id).commit(state["uncommitted"], {"step": state["step"], "via": "resume"})
            self._truncate_metrics(state["step"])
        else:  # a fresh run in a used folder: its curve must not continue an older run's
            for old in (self.metrics_file, self.out / "eval.jsonl", self.out / "reward.png"):
                old.unlink(missing_ok=True)
            if self.ckpt_dir.exists():
                import shutil

                shutil.rmtree(self.ckpt_dir)
        started_ray = _ray_up(cfg)
        t_start = time.time()
        workers: list[Any] = []
        try:
            with run_scope(store, "train", json.loads(cfg.model_dump_json()), run_id=run_id) as run:
                summary = self._loop(cfg, store, run_id, state, workers, t_start)
                run.summary = summary
        finally:
            for w in workers:
                try:
                    ray.get(w.close.remote(), timeout=30)
                except Exception:  # noqa: BLE001 - a dead worker's container is removed below
                    pass
            _remove_run_containers(run_id)
            if started_ray:
                ray.shutdown()
        return summary

    def _truncate_metrics(self, step: int) -> None:
        if self.metrics_file.exists():
            rows = [ln for ln in self.metrics_file.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
            self.metrics_file.write_text("".join(r + "\n" for r in rows))

    def _new_worker(self, index: int, run_id: str, stream: Any) -> Any:
        return ray.remote(RolloutWorker).options(num_cpus=self.cfg.rollout.worker_cpus, max_restarts=0).remote(
            self.cfg.model_dump_json(), index, run_id, stream)

    def _write_worker_pids(self, workers: list[Any]) -> None:
        """Operators (and the fault tests) find the rollout worker processes here."""
        pids = ray.get([w.pid.remote() for w in workers])
        (self.out / "workers.json").write_text(json.dumps({"pids": pids, "driver": os.getpid()}))

    def _loop(self, cfg: RunConfig, store: Any, run_id: str, state: dict[str, Any] | None, workers: list[Any], t_start: float) -> dict[str, Any]:
        policy = build_policy(cfg)
        model = policy.model
        if state:
            model.load_state_dict(state["model"].state_dict())
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.algo.lr, weight_decay=0.0, betas=(0.9, 0.99))
        scheduler: DataScheduler = DataScheduler([(t.id, t.source, t) for t in self.tasks.values()], cfg.scheduler)
        step = version = 0
        if state:
            opt.load_state_dict(state["optimizer"])
            scheduler.load_state(state["scheduler"])
            step, version = state["step"], state["version"]
            self.console.print(f"[bold]resumed[/] run {run_id} at step {step} from {self.ckpt_dir}")
        teachers = self._teachers() if cfg.algo.name == "mopd" else {}
        grpo_cfg = GRPOConfig(cfg.algo.clip_low, cfg.algo.clip_high, cfg.algo.kl_coef, cfg.algo.entropy_coef)
        mopd_cfg = MOPDConfig(cfg.algo.mopd_alpha, cfg.algo.mopd_eps_low, cfg.algo.mopd_eps_high)
        ref_model = None
        if cfg.algo.kl_coef:
            ref_model = build_policy(cfg).model.eval()

        stream = StreamActor.remote(store.url, run_id, capacity=cfg.stream.capacity, max_staleness=cfg.stream.max_staleness,
                                    stale_policy=cfg.stream.stale_policy)
        recovered = ray.get(stream.stats.remote())["recovered"]
        if recovered:
            self.console.print(f"reward stream: {recovered} uncommitted reward(s) recovered from the ledger")
        workers.extend(self._new_worker(i, run_id, stream) for i in range(cfg.rollout.num_workers))
        self._write_worker_pids(workers)
        weights = ray.put(_cpu_state(model))
        inflight: dict[Any, tuple[int, list[dict[str, str]]]] = {}
        uncommitted: list[str] = []  # the checkpoint's own list was committed before the stream started
        seen: set[str] = set()
        totals = {"gen_tokens": 0, "gen_s": 0.0, "grade_s": 0.0, "wait_s": 0.0, "train_s": 0.0, "train_tokens": 0, "worker_restarts": 0, "failed_rollouts": 0,
                  "resumed_groups": 0}
        acceptance: list[float] = []
        calls: list[dict[str, float]] = []
        first_step = step
        # Unfinished groups parked between worker calls; the stream's staleness limit bounds how old they may get.
        partials: PartialRollouts[dict[str, Any]] | None = PartialRollouts(cfg.stream.max_staleness) if cfg.rollout.partial.enabled else None

        def new_work(n: int) -> list[dict[str, Any]]:
            work: list[dict[str, Any]] = [{"group_id": uuid.uuid4().hex[:16], "task_id": t.id} for t in scheduler.batch(n)]
            if partials is not None:
                for w in work:
                    w["started_version"] = version
            return work

        def dispatch(i: int, work: list[dict[str, Any]] | None = None) -> None:
            if work is None:  # continued groups first (they are the oldest), then new ones up to groups_per_call
                resumed = [p.state for p in partials.resumable(version)] if partials is not None else []
                work = resumed + new_work(max(0, cfg.rollout.groups_per_call - len(resumed))) if resumed else new_work(cfg.rollout.groups_per_call)
            inflight[workers[i].rollout.remote(work, [weights], version)] = (i, work)

        def harvest(timeout: float) -> None:
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=timeout)
            for ref in done:
                i, work = inflight.pop(ref)
                try:
                    s = ray.get(ref)
                    totals["gen_tokens"] += s["tokens"]
                    totals["gen_s"] += s["gen_s"]
                    totals["grade_s"] += s["grade_s"]
                    totals["failed_rollouts"] += s["failed"]
                    acceptance.append(s["acceptance"])
                    calls.append({"tokens": s["tokens"], "gen_s": s["gen_s"], "grade_s": s["grade_s"], "rollouts": s["rollouts"]})
                    for parked in s.get("parked", []):
                        partials.park(parked["group_id"], parked, parked["started_version"])  # type: ignore[union-attr]
                    totals["resumed_groups"] += s.get("resumed", 0)
                    dispatch(i)
                except ray.exceptions.RayActorError:  # the worker died: a new one redoes the same groups
                    totals["worker_restarts"] += 1
                    self.console.print(f"[yellow]rollout worker {i} died; restarting it and retrying its {len(work)} group(s)[/]")
                    workers[i] = self._new_worker(i, run_id, stream)
                    self._write_worker_pids(workers)
                    dispatch(i, work)

        def evaluate(label: str) -> dict[str, Any] | None:
            if not cfg.train.eval_samples or cfg.tasks.family != "func":
                return None
            t0 = time.perf_counter()
            result = ray.get(workers[0].evaluate.remote([weights], version, cfg.train.eval_samples))
            result.update(step=step, when=label, seconds=round(time.perf_counter() - t0, 1))
            with (self.out / "eval.jsonl").open("a") as f:
                f.write(json.dumps(result) + "\n")
            if "mean" in result:
                self.console.print(f"eval ({label}, step {step}): pass rate over all {len(result['per_task'])} tasks "
                                   f"{result['mean']:.3f} ({cfg.train.eval_samples} samples each)", highlight=False)
            return result

        eval_start = evaluate("start")
        for i in range(len(workers)):
            dispatch(i)
        while step < cfg.train.steps:
            t_wait = time.perf_counter()
            groups, weights_by_group, stale_seen, dropped = [], {}, 0, 0
            while len(groups) < cfg.train.groups_per_step:
                b = ray.get(stream.consume.remote(cfg.train.groups_per_step - len(groups), version))
                groups += b.groups
                weights_by_group.update(b.weights)
                stale_seen, dropped = max(stale_seen, b.max_staleness_seen), dropped + b.dropped_stale
                if len(groups) < cfg.train.groups_per_step:
                    harvest(0.2)
            wait_s = time.perf_counter() - t_wait
            totals["wait_s"] += wait_s

            events = [e for g in groups for e in g]
            uncommitted += [e.rollout_id for e in events]
            trainable = [g for g in groups if not any("failure" in e.details for e in g) and not any(e.rollout_id in seen for e in g)]
            seen.update(e.rollout_id for e in events)
            for g in groups:
                scheduler.record(g[0].task_id, [e.passed for e in g if "failure" not in e.details])
            t_train = time.perf_counter()
            metrics = self._update(model, opt, trainable, weights_by_group, cfg, grpo_cfg, mopd_cfg, teachers, ref_model)
            train_s = time.perf_counter() - t_train
            totals["train_s"] += train_s
            train_tokens = metrics.pop("tokens", 0)
            totals["train_tokens"] += train_tokens
            step += 1
            version += 1
            weights = ray.put(_cpu_state(model))
            ok = [e for e in events if "failure" not in e.details]
            row = {"step": step, "version": version, "reward_mean": sum(e.reward for e in ok) / max(1, len(ok)),
                   "pass_at_k": sum(any(e.passed for e in g) for g in groups) / max(1, len(groups)),
                   "groups": len(groups), "trained_groups": len(trainable), "failed_rollouts": len(events) - len(ok),
                   "staleness_max": stale_seen, "dropped_stale": dropped, "wait_s": round(wait_s, 3), "train_s": round(train_s, 3), "train_tokens": train_tokens,
                   "elapsed_s": round(time.time() - t_start, 1), "rollout_ids": [e.rollout_id for e in events],
                   "tasks": sorted({g[0].task_id for g in groups}), **metrics}
            if partials is not None:
                row.update(partial_parked=len(partials.parked), partial_discarded_groups=partials.discarded,
                           continued_rollouts=sum(len(e.details.get("segment_versions", [])) > 1 for e in events))
            with self.metrics_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            gen_tps = totals["gen_tokens"] / max(1e-9, totals["gen_s"])
            self.console.print(
                f"step {step:>4}/{cfg.train.steps}  reward {row['reward_mean']:.3f}  pass@k {row['pass_at_k']:.2f}  "
                f"loss {metrics.get('loss', 0):+.4f}  rollout tok/s {gen_tps:6.1f}  staleness {stale_seen}  "
                f"wait {wait_s:5.1f}s  train {train_s:4.1f}s", highlight=False, soft_wrap=True)
            out_of_time = cfg.train.max_minutes and (time.time() - t_start) > cfg.train.max_minutes * 60
            if step % cfg.train.checkpoint_every == 0 or step >= cfg.train.steps or out_of_time:
                ckpt.save(self.ckpt_dir, model, {"run_id": run_id, "step": step, "version": version, "optimizer": opt.state_dict(),
                                                 "scheduler": scheduler.state(), "uncommitted": uncommitted})
                ray.get(stream.commit.remote(uncommitted, {"step": step}))
                uncommitted = []
                write_plot(self.metrics_file, self.out / "reward.png", f"{cfg.name}: {run_id}")
            if out_of_time:
                self.console.print(f"[yellow]train.max_minutes={cfg.train.max_minutes} reached: stopping after step {step}[/]")
                break

        for ref in list(inflight):  # let the last calls finish so the end evaluation has the machine
            try:
                ray.get(ref, timeout=120)
            except Exception:  # noqa: BLE001 - a worker dying here changes nothing that was trained
                pass
        inflight.clear()
        eval_end = evaluate("end")
        write_plot(self.metrics_file, self.out / "reward.png", f"{cfg.name}: {run_id}")
        stats = ray.get(stream.stats.remote())
        elapsed = time.time() - t_start
        steps_done = step - first_step
        return {"run_id": run_id, "steps": step, "steps_this_process": steps_done, "elapsed_s": round(elapsed, 1),
                "rollout_tokens_per_s": round(totals["gen_tokens"] / max(1e-9, totals["gen_s"]), 2),
                "trainer_tokens_per_s": round(totals["train_tokens"] / max(1e-9, totals["train_s"]), 2),
                "trainer_wait_fraction": round(totals["wait_s"] / max(1e-9, totals["wait_s"] + totals["train_s"]), 3),
                "mean_acceptance_length": round(sum(acceptance) / max(1, len(acceptance)), 3),
                "worker_restarts": totals["worker_restarts"], "failed_rollouts": totals["failed_rollouts"],
                "eval_start": (eval_start or {}).get("mean"), "eval_end": (eval_end or {}).get("mean"),
                "calls": calls, "stream": stats, "out_dir": str(self.out), "plot": str(self.out / "reward.png"),
                **({"partial": {"resumed_groups": totals["resumed_groups"], "discarded_groups": partials.discarded,
                                "parked_at_end": len(partials.parked)}} if partials is not None else {})}

    def _update(self, model: Any, opt: Any, groups: list[list[Any]], group_weights: dict[str, float], cfg: RunConfig,
                grpo_cfg: GRPOConfig, mopd_cfg: MOPDConfig, teachers: dict[str, Any], ref_model: Any) -> dict[str, float]:
        """One optimizer step on the given complete groups (GRPO or MOPD, routing replay per config)."""
        events = [e for g in groups for e in g]
        if not events:
            return {"loss": 0.0, "tokens": 0}
        rewards = torch.tensor([e.reward for e in events])
        gid = {g: i for i, g in enumerate(dict.fromkeys(e.group_id for e in events))}
        adv = group_advantages(rewards, torch.tensor([gid[e.group_id] for e in events]))
        if cfg.algo.name == "grpo":  # zero-advantage samples carry no gradient: do not pay for them
            keep = [i for i in range(len(events)) if adv[i] != 0]
            if not keep:
                return {"loss": 0.0, "tokens": 0, "skipped": "no reward variance"}
            events, adv = [events[i] for i in keep], adv[keep]
        # A multi-turn episode trains every assistant turn with the episode's advantage.
        rows = [(e, payload.decode(c)) for e in events for c in (e.payload["turns"] if "turns" in e.payload else [e.payload])]
        row_adv = torch.cat([adv[i].repeat(len(e.payload["turns"]) if "turns" in e.payload else 1) for i, e in enumerate(events)])
        rows_kept = [(k, r) for k, r in enumerate(rows) if r[1].tokens]
        if not rows_kept:
            return {"loss": 0.0, "tokens": 0, "skipped": "no generated tokens"}
        adv = row_adv[[k for k, _ in rows_kept]]
        events = [r[0] for _, r in rows_kept]
        completions = [r[1] for _, r in rows_kept]
        batch = pack(completions, model.config.pad_token_id)
        seq_w = torch.tensor([group_weights.get(e.group_id, 1.0) for e in events])
        agreement = routing_agreement(model, batch)
        logp, entropy, aux = sequence_logprobs(model, batch, replay=cfg.algo.routing_replay, with_entropy=bool(cfg.algo.entropy_coef),
                                               mtp_weight=cfg.algo.mtp_loss_weight)
        if cfg.algo.name == "grpo":
            ref = None
            if ref_model is not None:
                with torch.no_grad():
                    ref, _, _ = sequence_logprobs(ref_model, batch, replay=cfg.algo.routing_replay)
            loss, m = grpo_loss(logp, batch.behaviour_logp, adv, batch.mask, grpo_cfg, ref_logp=ref, entropy=entropy, weights=seq_w)
        else:
            t_lp = teacher_logprobs(teachers, [e.domain for e in events], batch.tokens)
            loss, m = mopd_loss(logp, t_lp, batch.behaviour_logp, adv, batch.mask, mopd_cfg, weights=seq_w)
        total = loss + aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.algo.grad_clip)
        opt.step()
        model.update_expert_bias()
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "routing_agreement": round(agreement, 4),
                "tokens": int(batch.mask.sum()), **{k: round(v, 4) for k, v in m.items()}}


def train(cfg: RunConfig, console: Console | None = None) -> dict[str, Any]:
    if cfg.rollout.group_size < 2 and cfg.algo.name == "grpo":
        raise EnvfarmError("rollout.group_size < 2 gives GRPO no baseline", "set rollout.group_size >= 2")
    return Trainer(cfg, console).run()
