"""`make bench-sandbox`: sandbox cold start, warm acquire, exec round trip and concurrency, against the
engine's own `run --rm IMAGE true` timed in the same process. Writes bench/results/sandbox.json."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console

from bench.common import machine_load, machine_notes, summary, write_results
from envfarm.config import settings
from envfarm.engine import connect, engine_url
from envfarm.images.base import build_base, has_base
from envfarm.sandbox.docker import LABEL_MANAGED, LABEL_RUN, DockerSandbox
from envfarm.sandbox.pool import SandboxPool

RUN_ID = f"bench-sandbox-{os.getpid()}"
console = Console()


def engine_cli() -> list[str]:
    """The engine's own CLI on the same socket: `docker` if present (talks to Podman's socket too), else podman."""
    if shutil.which("docker"):
        return ["docker", "-H", engine_url()]
    return ["podman"]


def baseline_run(image: str) -> float:
    started = time.perf_counter()
    subprocess.run([*engine_cli(), "run", "--rm", "--network", "none", image, "true"], check=True, capture_output=True)
    return time.perf_counter() - started


def cold_start(client, image: str) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    sandbox = DockerSandbox(image, run_id=RUN_ID, client=client)
    sandbox.exec("true", timeout=30)
    elapsed = time.perf_counter() - started
    sandbox.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    load = machine_load()
    client = connect()
    if not has_base(client):
        build_base(client=client)
    image = settings().base_image

    baseline_run(image), cold_start(client, image)  # warm the engine's caches once, untimed
    console.print(f"[bold]cold start vs `{' '.join(engine_cli()[:1])} run --rm` ({args.samples} each, interleaved)")
    cold, base = [], []
    for _ in range(args.samples):
        base.append(baseline_run(image))
        cold.append(cold_start(client, image))

    console.print("[bold]exec round trip")
    with DockerSandbox(image, run_id=RUN_ID, client=client) as sandbox:
        exec_rt = []
        for _ in range(args.samples * 2):
            started = time.perf_counter()
            sandbox.exec("true", timeout=30)
            exec_rt.append(time.perf_counter() - started)

    console.print("[bold]warm acquire")
    warm = []
    with SandboxPool(image, size=4, client=client, run_id=RUN_ID) as pool:
        for _ in range(args.samples):
            pool.wait_warm(120)
            started = time.perf_counter()
            sandbox = pool.acquire()
            warm.append(time.perf_counter() - started)
            pool.release(sandbox)
        cold_fallbacks = pool.cold_starts

    console.print(f"[bold]{args.concurrency} concurrent sandboxes (start + exec + close each)")

    def one(_: int) -> None:
        with DockerSandbox(image, run_id=RUN_ID, client=client) as sandbox:
            sandbox.exec("true", timeout=60)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as threads:
        list(threads.map(one, range(args.concurrency)))
    ours_wall = time.perf_counter() - started

    def one_baseline(_: int) -> None:
        subprocess.run([*engine_cli(), "run", "--rm", "--network", "none", image, "true"], check=True, capture_output=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as threads:
        list(threads.map(one_baseline, range(args.concurrency)))
    base_wall = time.perf_counter() - started

    leaked = client.containers.list(all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_RUN}={RUN_ID}"]})
    for container in leaked:
        container.remove(force=True)
    result = {
        "engine": engine_url(),
        "engine_version": client.version().get("Version"),
        "image": image,
        "cold_start": summary(cold),
        "baseline_engine_run_rm_true": summary(base),
        "cold_start_vs_baseline_p50_ratio": round(statistics.median(cold) / statistics.median(base), 3),
        "warm_acquire": summary(warm),
        "warm_acquire_cold_fallbacks": cold_fallbacks,
        "exec_round_trip": summary(exec_rt),
        "concurrent": {
            "sandboxes": args.concurrency,
            "wall_s": round(ours_wall, 3),
            "sandboxes_per_s": round(args.concurrency / ours_wall, 2),
            "baseline_engine_run_rm_per_s": round(args.concurrency / base_wall, 2),
            "ratio_vs_baseline": round((args.concurrency / ours_wall) / (args.concurrency / base_wall), 3),
        },
        "leaked_containers": len(leaked),
        "targets": {"warm_acquire_p50_ms_below": 20, "cold_start_vs_baseline_ratio_below": 1.5, "leaked_containers": 0},
        "machine": machine_notes(load),
    }
    path = write_results("sandbox", result)
    console.print_json(data=result)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
