"""Helpers shared by the benchmarks: percentiles, machine notes and load as measured, and writing results JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

RESULTS = Path(__file__).parent / "results"
# The PostgreSQL that store benchmarks use: a private schema in it, dropped afterwards (`make setup` starts one).
PG_URL = os.environ.get("ENVFARM_BENCH_PG_URL") or os.environ.get("ENVFARM_TEST_PG_URL", "")


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


def busiest_processes(interval: float = 0.5, top: int = 5) -> list[str]:
    """The processes that used the most CPU over the last `interval` seconds ("pid pcpu% command"),
    sampled from /proc twice: `ps`'s %CPU is a lifetime average and misses a job that just started."""
    def sample() -> dict[int, tuple[int, str]]:
        out: dict[int, tuple[int, str]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            out[int(entry)] = (int(rest[11]) + int(rest[12]), name)  # utime + stime, in clock ticks
        return out

    try:
        before = sample()
        time.sleep(interval)
        after = sample()
    except OSError:  # no /proc (not Linux): ps's lifetime averages are what there is
        lines = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
        return [line.strip() for line in lines.splitlines()[1:top + 1]]
    ticks = os.sysconf("SC_CLK_TCK") * interval
    used = sorted(((after[pid][0] - before.get(pid, (after[pid][0], ""))[0], pid, after[pid][1]) for pid in after), reverse=True)
    return [f"{pid} {100 * delta / ticks:.0f}% {_command(pid, name)}" for delta, pid, name in used[:top] if delta > 0]


def _command(pid: int, name: str, width: int = 100) -> str:
    """The process's command line (arguments say which job a `python` is), else its name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        argv = ""
    return " ".join((argv or name).split())[:width]  # one line: `python -c` scripts carry newlines


def machine_load() -> dict[str, Any]:
    """The machine's load as measured now: load averages and the busiest processes."""
    return {"loadavg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()], "busiest_processes": busiest_processes()}


def machine_notes(load_at_start: dict[str, Any]) -> dict[str, Any]:
    """Machine facts for a results file, with its load as measured: `load_at_start` is `machine_load()` taken
    when the benchmark began, the end is measured now. Only measurements: what else ran shows in the busiest
    processes, never in a sentence written ahead of time."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "load_at_start": load_at_start,
            "load_at_end": machine_load()}


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


@contextmanager
def postgres_schema(pg_url: str = PG_URL) -> Iterator[str]:
    """A store URL for a private schema in the PostgreSQL at `pg_url`, dropped (with the store's engines) on exit."""
    import sqlalchemy as sa

    admin = sa.create_engine(pg_url)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        from envfarm.store import db

        for url, store in list(db._stores.items()):
            if schema in url:
                store.dispose()
                db._stores.pop(url, None)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
