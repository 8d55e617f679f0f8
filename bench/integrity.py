"""`make bench-integrity`: can an agent's commands escape or starve the sandbox? Writes bench/results/integrity.json.

Sections are independent probes listed in SECTIONS (name -> function returning a JSON-able dict); add one
by writing a function and registering it. `--only NAME` reruns some sections and keeps the others' last
results. The machine's load (load average and busiest processes) is recorded as measured at the start and
at the end of the run, because other work on the machine changes the timings (never the counts).

containment: forkbomb survivors after exec, detached survivors, cross-sandbox starvation, bytes reaching the
engine's container log, and bytes a sandbox can write against its bound.
red_team (bench/integrity_redteam.py): every cheating patch of the red-team suite graded in a fresh sandbox:
attempts, scored above 0, verifier errors, and the gold control.
stream (bench/integrity_stream.py): the reward stream's actor killed between consume and commit (lost, handed
out twice) and concurrent writers on SQLite and PostgreSQL (errors). Every target is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import threading
import time
from typing import Any, Callable

from bench import integrity_redteam, integrity_stream
from bench.common import RESULTS, machine_load, machine_notes, write_results
from envfarm.config import settings
from envfarm.engine import connect
from envfarm.sandbox.docker import DockerSandbox, SandboxLimits

RUN_ID = f"bench-integrity-{os.getpid()}"
ESCAPES = {
    "setsid": "setsid sleep 901 &",
    "nohup": "nohup sleep 902 > /dev/null 2>&1 &",
    "double_fork": "( (sleep 903 &) & ) ;",
    "env_i_setsid": "env -i setsid sleep 904 &",
    "setsid_fork": "setsid -f sleep 905;",
}
BOMB = "f(){ f|f& };f"


def _count(sandbox: DockerSandbox, pattern: str) -> int:
    """Processes whose command line starts with `pattern` (the counting command's own line does not)."""
    return int(sandbox.exec(f"ps -eo args= | grep -c '^{pattern}' || true", timeout=60).output.strip().splitlines()[-1])


def forkbomb(client: Any, image: str, runs: int) -> dict[str, Any]:
    """The issue's bomb under the default limits: how long exec takes, what survives, whether the next exec forks."""
    rows = []
    for _ in range(runs):
        with DockerSandbox(image, run_id=RUN_ID, task_id="forkbomb", client=client) as sandbox:
            started = time.monotonic()
            bomb = sandbox.exec(BOMB, timeout=10)
            took = time.monotonic() - started
            survivors = _count(sandbox, "sh -c f()")
            after = sandbox.exec("sh -c 'echo forked'", timeout=30)
            rows.append({"exec_s": round(took, 3), "timed_out": bomb.timed_out, "survivors": survivors,
                         "next_exec_forks": after.output.strip() == "forked",
                         "next_exec_cannot_fork": "Cannot fork" in after.output})
    return {"pids_limit": settings().sandbox_pids, "runs": rows,
            "survivors_max": max(r["survivors"] for r in rows),
            "next_exec_failures": sum(not r["next_exec_forks"] for r in rows),
            "exec_s_median": round(statistics.median(r["exec_s"] for r in rows), 3)}


def detached(client: Any, image: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with DockerSandbox(image, run_id=RUN_ID, task_id="detached", client=client) as sandbox:
        for name, escape in ESCAPES.items():
            sandbox.exec(f"{escape} true", timeout=20)
            out[name] = _count(sandbox, "sleep 90")
        timed = sandbox.exec("setsid sleep 906 & nohup sleep 907 & sleep 300", timeout=1)
        out["after_timeout"] = _count(sandbox, "sleep 90")
        out["timeout_reported"] = timed.timed_out
        sandbox.exec("setsid sleep 908 & for p in $(pgrep -f envfarm-rc); do kill -9 $p; done; sleep 1", timeout=20)
        out["after_killing_the_wrapper"] = _count(sandbox, "sleep 90")
    return {"survivors_per_escape": out}


def starvation(client: Any, image: str) -> dict[str, Any]:
    """One sandbox holds 300 processes (uid 1000, like every sandbox); a fresh pids=64 sandbox must still fork."""
    busy = DockerSandbox(image, run_id=RUN_ID, task_id="busy", client=client, limits=SandboxLimits(pids=400))
    fresh = DockerSandbox(image, run_id=RUN_ID, task_id="fresh", client=client, limits=SandboxLimits(pids=64))
    holder = threading.Thread(target=lambda: busy.exec("for i in $(seq 300); do sleep 120 & done; wait", timeout=120), daemon=True)
    try:
        nproc = fresh.exec("grep 'Max processes' /proc/self/limits").output.split()[2:4]
        holder.start()
        held = 0
        for _ in range(300):
            held = len(client.api.top(busy.container.id).get("Processes") or [])
            if held >= 300:
                break
            time.sleep(0.1)
        forked = fresh.exec("for i in 1 2 3 4 5 6 7 8; do sh -c 'echo ok' & done; wait", timeout=30)
        return {"busy_sandbox_processes": held, "fresh_sandbox_children_started": forked.output.count("ok"),
                "fresh_sandbox_children_tried": 8, "fresh_cannot_fork": "fork" in forked.output.lower(),
                "rlimit_nproc_in_sandbox": nproc}
    finally:
        busy.close()
        fresh.close()
        holder.join(30)


def container_log(client: Any, image: str) -> dict[str, Any]:
    with DockerSandbox(image, run_id=RUN_ID, task_id="log", client=client) as sandbox:
        attempt = sandbox.exec("head -c 104857600 /dev/zero > /proc/1/fd/1 && echo wrote", timeout=60)
        sandbox.container.reload()
        log_type = sandbox.container.attrs["HostConfig"]["LogConfig"]["Type"]
        log_path = sandbox.container.attrs.get("LogPath") or ""
        size = os.path.getsize(log_path) if log_path and os.path.exists(log_path) else 0
    return {"attempted_bytes": 100 << 20, "write_allowed": "wrote" in attempt.output, "log_driver": log_type,
            "log_file_bytes": size, "log_path": log_path}


def disk(client: Any, image: str) -> dict[str, Any]:
    """The issue's 5 x 1.9 GB files, into every writable place, under the default limits."""
    limits = SandboxLimits()
    storage = "/var/lib/containers" if os.path.exists("/var/lib/containers") else "/"
    with DockerSandbox(image, run_id=RUN_ID, task_id="disk", client=client, limits=limits) as sandbox:
        free_before = shutil.disk_usage(storage).free
        script = ("for d in $HOME /var/tmp /tmp /run/lock; do for i in 1 2 3 4 5; do "
                  "dd if=/dev/zero of=$d/fill$i bs=1M count=1900 2>/dev/null; done; done; "
                  "du -sbc $HOME/fill* /var/tmp/fill* /tmp/fill* /run/lock/fill* 2>/dev/null | tail -1")
        result = sandbox.exec(script, timeout=300)
        free_after = shutil.disk_usage(storage).free
        written = [int(x) for x in result.output.split() if x.isdigit()]
        sizes = client.api.containers(all=True, size=True, filters={"id": sandbox.container.id})
        size_rw = sizes[0].get("SizeRw") if sizes else None
        root_write = sandbox.exec("dd if=/dev/zero of=/fill bs=1M count=10 2>&1; echo exit=$?", timeout=60).output.strip()
        return {"attempted_bytes": 4 * 5 * 1900 << 20, "written_bytes": written[-1] if written else None,
                "bound_bytes": {"memory_limit": limits.memory, "writable_size_per_dir": limits.writable_size,
                                "tmp": limits.tmpfs_size},
                "writable_paths": sandbox.writable_paths, "disk_bounded": sandbox.disk_bounded,
                "host_disk_free_delta_bytes": free_before - free_after, "writable_layer_size_rw": size_rw,
                "root_filesystem_write": root_write, "exit_code": result.exit_code}


def exec_cost(client: Any, image: str) -> dict[str, Any]:
    """What the containment costs: sandbox start (the writable-dir probe is cached per image) and `true`."""
    started = time.monotonic()
    with DockerSandbox(image, run_id=RUN_ID, task_id="cost", client=client) as sandbox:
        start_s = time.monotonic() - started
        times = []
        for _ in range(20):
            t = time.monotonic()
            sandbox.exec("true")
            times.append(time.monotonic() - t)
    return {"start_s": round(start_s, 3), "exec_true_p50_ms": round(statistics.median(times) * 1000, 1),
            "exec_true_max_ms": round(max(times) * 1000, 1), "n": len(times)}


def containment(args: argparse.Namespace) -> dict[str, Any]:
    client = connect()
    image = settings().base_image
    return {
        "image": image,
        "forkbomb": forkbomb(client, image, args.forkbomb_runs),
        "detached": detached(client, image),
        "cross_sandbox_starvation": starvation(client, image),
        "container_log": container_log(client, image),
        "disk": disk(client, image),
        "cost": exec_cost(client, image),
    }


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "containment": containment,
    "red_team": lambda args: integrity_redteam.run(),
    "stream": lambda args: integrity_stream.run(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--forkbomb-runs", type=int, default=5)
    args = parser.parse_args()
    path = RESULTS / "integrity.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    sections = dict(previous.get("sections", {}))
    for name in args.only or list(SECTIONS):
        load, started = machine_load(), time.monotonic()
        sections[name] = {**SECTIONS[name](args), "wall_s": round(time.monotonic() - started, 1), "machine": machine_notes(load)}
        print(json.dumps({name: sections[name]}, indent=1)[:4000])
    print(write_results("integrity", {"sections": sections}))


if __name__ == "__main__":
    main()
