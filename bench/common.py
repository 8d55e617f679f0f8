"""Helpers shared by the benchmarks: percentiles, machine notes, and writing results JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

RESULTS = Path(__file__).parent / "results"


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); medians are statistics.median."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p95/mean in milliseconds by default."""
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * scale, 3),
        "p95_ms": round(pct(values, 95) * scale, 3),
        "mean_ms": round(statistics.fmean(values) * scale, 3),
    }


def machine_notes(extra: str = "") -> dict[str, Any]:
    top = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout.splitlines()[1:6]
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "busiest_processes_at_end": [line.strip() for line in top],
        "note": extra,
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
