"""Benchmark of the RL loop on this machine (`python -m bench.train`, `make bench-train`).

Short runs of the real loop in one process and one local Ray (same tasks, same seed, sandboxes on the local
engine), `reps` per draft setting in rotating order: adaptive (the demo config's: heads per step from measured costs), none,
and every MTP head every step. Reports medians over the rollout calls and trainer steps, the ratios of
adaptive and mtp to none, the fraction of time the trainer waits for rewards, the reward-stream latency
(verified -> consumed) p50/p95, and end-to-end episodes per minute. The machine's load is measured at
start and end (bench/common.py), because other work shares its 2 cores.

    python -m bench.train [--steps 8] [--reps 3]

Headline ratios are medians of per-repetition ratios (draft / none within one repetition, run back to back).
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bench.common import machine_load, machine_notes
from envfarm.trainer.loop.config import load_config

OUT = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


DRAFTS = ("adaptive", "none", "mtp")


def _run(draft: str, steps: int, tmp: Path, console: Console, rep: int = 0) -> dict:
    from envfarm.trainer.loop.run import train

    out = tmp / f"run-{draft}-{rep}"
    cfg = load_config(REPO / "trainer/configs/demo.yaml", [
        f"policy.draft={draft}", f"train.steps={steps}", "train.checkpoint_every=1000", "train.eval_samples=0",
        "train.max_minutes=0", f"train.out_dir={out}", f"store_url=sqlite:///{tmp / f'{draft}-{rep}.db'}"])
    t0 = time.perf_counter()
    summary = train(cfg, console)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    calls = summary["calls"]
    rollouts = sum(r["groups"] for r in rows) * cfg.rollout.group_size
    train_rates = [r["train_tokens"] / r["train_s"] for r in rows if r.get("train_tokens") and r["train_s"] > 0]
    wait, train_s = sum(r["wait_s"] for r in rows), sum(r["train_s"] for r in rows)
    return {
        "draft": draft, "rep": rep, "steps": len(rows), "wall_s": round(wall, 1),
        "rollout_tokens_per_s_median": round(statistics.median(c["tokens"] / c["gen_s"] for c in calls), 1),
        "rollout_calls": len(calls),
        "grade_s_per_call_median": round(statistics.median(c["grade_s"] for c in calls), 3),
        "trainer_tokens_per_s_median": round(statistics.median(train_rates), 1) if train_rates else None,
        "trainer_wait_fraction": round(wait / max(1e-9, wait + train_s), 3),
        "stream_latency_p50_s": round(summary["stream"]["latency_p50_s"], 3),
        "stream_latency_p95_s": round(summary["stream"]["latency_p95_s"], 3),
        "episodes_per_minute": round(rollouts / (rows[-1]["elapsed_s"] / 60), 1),
        "mean_acceptance_length": summary["mean_acceptance_length"],
        "rollout_tokens_per_s_all": [round(c["tokens"] / c["gen_s"], 1) for c in calls],
        "reward_mean_first_last": [rows[0]["reward_mean"], rows[-1]["reward_mean"]],
    }


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    colors = ["tab:blue", "tab:gray", "tab:orange"][:len(runs)]
    axes[0].bar([r["draft"] for r in runs], [r["rollout_tokens_per_s_median"] for r in runs], color=colors)
    axes[0].set_title("rollout tokens/s (median per call)")
    axes[1].bar([r["draft"] for r in runs], [r["episodes_per_minute"] for r in runs], color=colors)
    axes[1].set_title("episodes / minute (end to end)")
    axes[2].bar(["p50", "p95"], [runs[0]["stream_latency_p50_s"], runs[0]["stream_latency_p95_s"]], color="tab:green")
    axes[2].set_title(f"reward stream latency, s ({runs[0]['draft']} run)")
    load = result["machine"]["load_at_start"]["loadavg_1m_5m_15m"][0]
    fig.suptitle(f"envfarm RL loop on {result['machine']['cpus']} CPUs (load avg {load:.1f} at start)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pooled(runs: list[dict], draft: str) -> dict:
    """One draft setting over its repetitions: medians of the per-call and per-run figures."""
    mine = [r for r in runs if r["draft"] == draft]
    rates = [x for r in mine for x in r["rollout_tokens_per_s_all"]]
    return {"draft": draft, "runs": len(mine), "rollout_tokens_per_s_median": round(statistics.median(rates), 1),
            "episodes_per_minute": round(statistics.median(r["episodes_per_minute"] for r in mine), 1),
            "mean_acceptance_length": round(statistics.median(r["mean_acceptance_length"] for r in mine), 3),
            "stream_latency_p50_s": round(statistics.median(r["stream_latency_p50_s"] for r in mine), 3),
            "stream_latency_p95_s": round(statistics.median(r["stream_latency_p95_s"] for r in mine), 3)}


def _ratios(runs: list[dict], draft: str, key: str) -> list[float]:
    """draft / none for `key`, within each repetition (runs of one repetition ran back to back)."""
    by_rep = {(r["rep"], r["draft"]): r[key] for r in runs}
    return [round(by_rep[(rep, draft)] / by_rep[(rep, "none")], 3) for rep in sorted({r["rep"] for r in runs})]


def main(steps: int = 8, reps: int = 3) -> dict:
    console = Console()
    load_at_start = machine_load()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            runs = []
            for rep in range(reps):  # the order rotates, so drift in the machine's load hits each setting alike
                for draft in DRAFTS[rep % len(DRAFTS):] + DRAFTS[:rep % len(DRAFTS)]:
                    runs.append(_run(draft, steps, Path(tmp), console, rep))
        finally:
            ray.shutdown()
    pooled = [_pooled(runs, d) for d in DRAFTS]
    ratios = {f"{d}_over_plain_{key}_per_rep": _ratios(runs, d, f"{key}_median" if key == "rollout_tokens_per_s" else key)
              for d in ("adaptive", "mtp") for key in ("rollout_tokens_per_s", "episodes_per_minute")}
    result = {
        "what": "the RL loop (demo config: tiny policy, line-completion tasks graded in Podman sandboxes, GRPO + R3) on local Ray",
        "setup": {"steps_per_run": steps, "reps": reps, "drafts": list(DRAFTS)},
        "machine": {**machine_notes(load_at_start), "platform": platform.platform()},
        "by_draft": pooled,
        **{f"{d}_over_plain_rollout_tokens_per_s": round(statistics.median(ratios[f"{d}_over_plain_rollout_tokens_per_s_per_rep"]), 3)
           for d in ("adaptive", "mtp")},
        **{f"{d}_over_plain_episodes_per_minute": round(statistics.median(ratios[f"{d}_over_plain_episodes_per_minute_per_rep"]), 3)
           for d in ("adaptive", "mtp")},
        **ratios,
        "runs": runs,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train.json").write_text(json.dumps(result, indent=2))
    _plot({**result, "runs": pooled}, OUT / "train.png")
    console.print_json(data=result)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="trainer steps per run")
    parser.add_argument("--reps", type=int, default=3, help="runs per draft setting (order rotated)")
    args = parser.parse_args()
    main(args.steps, args.reps)
