"""Benchmark of the RL loop on this machine (`python -m bench.train`, `make bench-train`).

Two short runs of the real loop in one process and one local Ray (same tasks, same seed, sandboxes on
the local engine): rollouts drafted by the MTP heads, then without drafting. Reports medians over the
rollout calls and trainer steps, their ratio, the fraction of time the trainer waits for rewards, the
reward-stream latency (verified -> consumed) p50/p95, and end-to-end episodes per minute. The machine's
load average is recorded before and after, because other work shares its 2 cores.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from envfarm.trainer.loop.config import load_config

OUT = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def _run(draft: str, steps: int, tmp: Path, console: Console) -> dict:
    from envfarm.trainer.loop.run import train

    out = tmp / f"run-{draft}"
    cfg = load_config(REPO / "trainer/configs/demo.yaml", [
        f"policy.draft={draft}", f"train.steps={steps}", "train.checkpoint_every=1000", "train.eval_samples=0",
        "train.max_minutes=0", f"train.out_dir={out}", f"store_url=sqlite:///{tmp / f'{draft}.db'}"])
    t0 = time.perf_counter()
    summary = train(cfg, console)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    calls = summary["calls"]
    rollouts = sum(r["groups"] for r in rows) * cfg.rollout.group_size
    train_rates = [r["train_tokens"] / r["train_s"] for r in rows if r.get("train_tokens") and r["train_s"] > 0]
    wait, train_s = sum(r["wait_s"] for r in rows), sum(r["train_s"] for r in rows)
    return {
        "draft": draft, "steps": len(rows), "wall_s": round(wall, 1),
        "rollout_tokens_per_s_median": round(statistics.median(c["tokens"] / c["gen_s"] for c in calls), 1),
        "rollout_calls": len(calls),
        "grade_s_per_call_median": round(statistics.median(c["grade_s"] for c in calls), 3),
        "trainer_tokens_per_s_median": round(statistics.median(train_rates), 1) if train_rates else None,
        "trainer_wait_fraction": round(wait / max(1e-9, wait + train_s), 3),
        "stream_latency_p50_s": round(summary["stream"]["latency_p50_s"], 3),
        "stream_latency_p95_s": round(summary["stream"]["latency_p95_s"], 3),
        "episodes_per_minute": round(rollouts / (rows[-1]["elapsed_s"] / 60), 1),
        "mean_acceptance_length": summary["mean_acceptance_length"],
        "reward_mean_first_last": [rows[0]["reward_mean"], rows[-1]["reward_mean"]],
    }


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    axes[0].bar([r["draft"] for r in runs], [r["rollout_tokens_per_s_median"] for r in runs], color=["tab:blue", "tab:gray"])
    axes[0].set_title("rollout tokens/s (median per call)")
    axes[1].bar([r["draft"] for r in runs], [r["episodes_per_minute"] for r in runs], color=["tab:blue", "tab:gray"])
    axes[1].set_title("episodes / minute (end to end)")
    axes[2].bar(["p50", "p95"], [runs[0]["stream_latency_p50_s"], runs[0]["stream_latency_p95_s"]], color="tab:green")
    axes[2].set_title("reward stream latency, s (mtp run)")
    fig.suptitle(f"envfarm RL loop on {result['machine']['cpus']} CPUs (load avg {result['machine']['load_before'][0]:.1f} at start)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(steps: int = 12) -> dict:
    console = Console()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            runs = [_run("mtp", steps, Path(tmp), console), _run("none", steps, Path(tmp), console)]
        finally:
            ray.shutdown()
    mtp, plain = runs
    result = {
        "what": "the RL loop (demo config: tiny policy, line-completion tasks graded in Podman sandboxes, GRPO + R3) on local Ray",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": load_before, "load_after": os.getloadavg(),
                    "note": "shared machine: other engineers' tests and training ran on the same 2 cores during this benchmark"},
        "runs": runs,
        "mtp_over_plain_rollout_tokens_per_s": round(mtp["rollout_tokens_per_s_median"] / plain["rollout_tokens_per_s_median"], 3),
        "mtp_over_plain_episodes_per_minute": round(mtp["episodes_per_minute"] / plain["episodes_per_minute"], 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train.json").write_text(json.dumps(result, indent=2))
    _plot(result, OUT / "train.png")
    console.print_json(data=result)
    return result


if __name__ == "__main__":
    main()
