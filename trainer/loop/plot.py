"""The run's curve: mean reward and pass rate per step, written next to the metrics as a PNG."""

from __future__ import annotations

import json
from pathlib import Path


def write_plot(metrics_file: Path, out: Path, title: str = "") -> Path | None:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] if metrics_file.exists() else []
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["reward_mean"] for r in rows], label="mean reward", marker=".")
    ax.plot(steps, [r["pass_at_k"] for r in rows], label="pass@k (groups with a passing sample)", alpha=0.6)
    k = 5
    if len(rows) >= k:
        smooth = [sum(r["reward_mean"] for r in rows[max(0, i - k + 1):i + 1]) / min(k, i + 1) for i in range(len(rows))]
        ax.plot(steps, smooth, label=f"mean reward ({k}-step average)", linewidth=2)
    evals_file = metrics_file.with_name("eval.jsonl")
    if evals_file.exists():
        evals = [json.loads(line) for line in evals_file.read_text().splitlines() if line.strip()]
        evals = [e for e in evals if "mean" in e]
        if evals:
            ax.scatter([e["step"] for e in evals], [e["mean"] for e in evals], marker="D", s=50, color="black", zorder=5,
                       label="eval: pass rate on every task (fixed samples)")
    ax.set_xlabel("trainer step (policy version)")
    ax.set_ylabel("reward / pass rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "envfarm RL run")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
