"""The miner's own bookkeeping at the reference's scale: 100,000 candidates over 3,000 repositories, PostgreSQL.

The reference mined over 100,000 tasks. Building 100,000 images is out of reach here, and not what this
measures: the pipeline's own overhead is. So the real driver (`envfarm.tasks.pipeline.run_inline`) runs with
its three units replaced by stand-ins that make exactly the store calls the real units make (candidate
states for resume, a funnel row per candidate and stage, an env row per group, a task row per validated
candidate with a realistic spec) and draw outcomes at realistic rates, deterministically per candidate so a
resumed run reaches the same end state:
- an env group fails to build with probability 0.30 (the reference deployed about 70% of environments);
- a candidate of a built group validates with 0.55, is rejected with 0.40, hits an infrastructure error
  with 0.05 (not terminal: a re-run retries it, and half of those then validate).

Measured, on a private schema of the PostgreSQL that `make setup` starts:
- per-candidate store overhead: wall time per candidate of the whole driver, and the latency of each store
  transaction (p50/p99);
- driver memory: the driver process's peak RSS (sampled from /proc while it runs, and its own ru_maxrss);
- resume after a kill: the driver is SIGKILLed once half the candidates are finished, then run again; counted
  are finished candidates that the second run redid (must be 0), the time the second run spent skipping
  what was done, and whether the end state equals the expected one (every candidate terminal or retried);
- funnel query time: `envfarm mine funnel`'s query (`envfarm.tasks.store.funnel`) on the full table.

`make bench-mine-scale` writes bench/results/mine_scale.json; `--candidates/--repos` scale it down.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from bench.common import PG_URL, machine_load, machine_notes, pct, postgres_schema, write_results

ENV_FAIL = 0.30
VALIDATED, REJECTED = 0.55, 0.40  # the rest of a built group's candidates: infrastructure errors
PATCH = "diff --git a/pkg/mod.py b/pkg/mod.py\n" + "".join(f"-    old line {i}\n+    new line {i}\n" for i in range(40))
TEST_PATCH = "diff --git a/tests/test_mod.py b/tests/test_mod.py\n" + "".join(f"+def test_case_{i}():\n+    assert f({i})\n" for i in range(40))
STATEMENT = "The function returns the wrong value when called with an empty list. " * 15


def _unit(key: str) -> float:
    """A deterministic draw in [0, 1) per key: a resumed run meets the same outcome."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def world(candidates: int, repos: int) -> dict[str, list[tuple[str, int]]]:
    """Repository -> [(version, number of candidates)]: a long-tailed spread, 1-4 env versions each."""
    weights = [1.0 / (i + 1) ** 0.8 for i in range(repos)]
    scale = candidates / sum(weights)
    counts = [max(1, int(w * scale)) for w in weights]
    counts[0] += candidates - sum(counts)  # exact total
    out: dict[str, list[tuple[str, int]]] = {}
    for i, n in enumerate(counts):
        versions = 1 + int(_unit(f"v{i}") * 4)
        per = [n // versions + (1 if v < n % versions else 0) for v in range(versions)]
        out[f"org{i % 97}/repo{i}"] = [(f"{v + 1}.0", k) for v, k in enumerate(per) if k]
    return out


# -- the driver process ------------------------------------------------------------------------------
def drive(store_url: str, candidates: int, repos: int, latencies_out: str) -> None:
    """Run the real inline driver with stand-in units on `store_url`; print the driver's own figures."""
    from envfarm.store import open_store
    from envfarm.task import InstallConfig
    from envfarm.tasks import pipeline
    from envfarm.tasks.store import TERMINAL, candidate_states, env_row, record_candidate, record_env, record_repo
    from envfarm.tasks.work import BuiltEnv, EnvGroup, WorkItem, task_spec

    layout = world(candidates, repos)
    store = open_store(store_url)
    latencies: list[float] = []
    counts: Counter[str] = Counter()

    def timed(fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            latencies.append(time.perf_counter() - start)

    def scan(repo: str, _url: str, _config: Any, st: Any) -> list[EnvGroup]:
        start = time.perf_counter()
        done = timed(candidate_states, st, repo)
        groups = []
        pr = 0
        for version, n in layout[repo]:
            items = []
            for _ in range(n):
                pr += 1
                iid = f"{repo.replace('/', '__')}-{pr}"
                if done.get(iid) in TERMINAL:
                    counts["skipped_done"] += 1
                    continue
                items.append(WorkItem(iid, repo, pr, "a" * 40, "b" * 40, PATCH, TEST_PATCH, ["tests/test_mod.py"], STATEMENT,
                                      "2024-01-01T00:00:00+00:00", {"pull_request": f"https://github.com/{repo}/pull/{pr}"}, "keyword"))
            if items:
                groups.append(EnvGroup(repo, version, "a" * 40, None, "/nonexistent", items))
        timed(record_repo, st, repo, "scanned", detail={"pull_requests": pr, "candidates": pr})
        for group in groups:
            for item in group.items:
                timed(record_candidate, st, item.instance_id, repo, item.pr_number, "candidate", "pending", env_key=group.key, detail={"link": "keyword"})
        if not any(g.items for g in groups) and pr:
            counts["resume_skip_seconds_x1e6"] += int((time.perf_counter() - start) * 1e6)
        return groups

    def build(group: EnvGroup, _config: Any, st: Any) -> BuiltEnv | None:
        previous = timed(env_row, st, group.key)
        ok = previous.status == "ok" if previous is not None else _unit(group.key) >= ENV_FAIL
        if previous is None:
            timed(record_env, st, group.key, group.repo, group.version, "ok" if ok else "failed", f"envfarm/env:{abs(hash(group.key))}" if ok else "",
                  {"pre_install": ["apt-get install -y gcc"], "install": "pip install -e .", "test_cmd": "pytest"},
                  [{"strategy": "pyproject", "ok": ok}], "" if ok else "dependency_resolution", "" if ok else "No solution found", 0.0)
        if not ok:
            for item in group.items:
                timed(record_candidate, st, item.instance_id, group.repo, item.pr_number, "env", "env_failed", "dependency_resolution", "No solution found", group.key)
            return None
        return BuiltEnv("envfarm/env:x", InstallConfig(python="3.11", install=["uv pip install -e ."], test_cmd="python -m pytest -rA"))

    def validate(item: WorkItem, group: EnvGroup, env: BuiltEnv, _config: Any, st: Any) -> str:
        counts["validations"] += 1
        draw = _unit(item.instance_id)
        if draw >= VALIDATED + REJECTED and _unit(f"{item.instance_id}@{os.getpid()}") >= 0.5:
            draw = 0.0  # an infrastructure error is transient: half of them clear on a later run
        if draw < VALIDATED:
            task = task_spec(item, group, env, f"envfarm/inst:{item.instance_id.lower()}", "python", ["tests/test_mod.py"])
            task = task.model_copy(update={"FAIL_TO_PASS": [f"tests/test_mod.py::test_case_{i}" for i in range(3)],
                                           "PASS_TO_PASS": [f"tests/test_mod.py::test_case_{i}" for i in range(3, 60)]})
            timed(record_candidate, st, item.instance_id, item.repo, item.pr_number, "validation", "validated", env_key=group.key,
                  detail={"runs": 3}, task=task)
            return "validated"
        if draw < VALIDATED + REJECTED:
            timed(record_candidate, st, item.instance_id, item.repo, item.pr_number, "validation", "rejected", "no_fail_to_pass",
                  "no test fails before the fix and passes after it", group.key)
            return "rejected"
        timed(record_candidate, st, item.instance_id, item.repo, item.pr_number, "validation", "infra_error", "sandbox_error",
              "the engine did not answer", group.key)
        return "infra_error"

    pipeline.scan_repo, pipeline.build_group, pipeline.validate_candidate = scan, build, validate
    config = pipeline.MineConfig(run_id="bench-scale")
    started = time.perf_counter()
    pipeline.run_inline([(repo, "") for repo in layout], config, store)
    wall = time.perf_counter() - started
    with open(latencies_out, "w") as handle:
        json.dump(latencies, handle)
    print(json.dumps({"wall_s": wall, "transactions": len(latencies), "validations": counts["validations"],
                      "skipped_done": counts["skipped_done"], "resume_skip_s": counts["resume_skip_seconds_x1e6"] / 1e6,
                      "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# -- the measuring parent ----------------------------------------------------------------------------
def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _finished(store_url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from envfarm.store import open_store
    from envfarm.store.mining import MiningCandidateRow

    with open_store(store_url).session(readonly=True) as session:
        return dict(session.execute(select(MiningCandidateRow.status, func.count()).group_by(MiningCandidateRow.status)).all())


def _attempts(store_url: str) -> dict[str, tuple[str, int]]:
    from sqlalchemy import select

    from envfarm.store import open_store
    from envfarm.store.mining import MiningCandidateRow

    with open_store(store_url).session(readonly=True) as session:
        rows = session.execute(select(MiningCandidateRow.instance_id, MiningCandidateRow.status, MiningCandidateRow.attempts)).all()
    return {iid: (status, attempts or 0) for iid, status, attempts in rows}


def _run_driver(store_url: str, candidates: int, repos: int, latencies: str, kill_at: float | None, progress: bool) -> dict[str, Any]:
    """Start the driver; with `kill_at`, SIGKILL it once that share of candidates is terminal."""
    cmd = [sys.executable, "-m", "bench.mine_scale", "--drive", store_url, "--candidates", str(candidates), "--repos", str(repos),
           "--latencies", latencies]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak, killed, started, last = 0.0, False, time.perf_counter(), 0.0
    terminal = {"validated", "rejected", "env_failed", "filtered"}
    while proc.poll() is None:
        time.sleep(0.5)
        peak = max(peak, _rss_mib(proc.pid))
        if kill_at is not None or (progress and time.perf_counter() - last > 30):
            done = sum(n for s, n in _finished(store_url).items() if s in terminal)
            if progress and time.perf_counter() - last > 30:
                last = time.perf_counter()
                print(f"  {done}/{candidates} candidates finished, {last - started:.0f} s", file=sys.stderr, flush=True)
            if kill_at is not None and done >= kill_at * candidates:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed = True
                break
    out = proc.stdout.read() if proc.stdout else ""
    figures = json.loads(out.strip().splitlines()[-1]) if out.strip() and not killed else {}
    return {"killed": killed, "wall_s": round(time.perf_counter() - started, 2), "peak_rss_mib_sampled": round(peak, 1), **figures}


def run(candidates: int = 100_000, repos: int = 3_000, progress: bool = True) -> dict[str, Any]:
    import tempfile

    if not PG_URL:
        return {"skipped": "PostgreSQL missing: set ENVFARM_BENCH_PG_URL or ENVFARM_TEST_PG_URL (make setup starts one)"}
    from envfarm.tasks.store import funnel
    from envfarm.store import open_store

    load_at_start = machine_load()
    with postgres_schema() as url, tempfile.TemporaryDirectory() as tmp:
        first = _run_driver(url, candidates, repos, f"{tmp}/lat1.json", kill_at=0.5, progress=progress)
        before = _attempts(url)
        done_before = {iid for iid, (status, _) in before.items() if status in ("validated", "rejected", "env_failed")}
        second = _run_driver(url, candidates, repos, f"{tmp}/lat2.json", kill_at=None, progress=progress)
        after = _attempts(url)
        redone = sum(1 for iid in done_before if after[iid][1] > before[iid][1])
        statuses = Counter(status for status, _ in after.values())
        latencies = json.load(open(f"{tmp}/lat2.json"))
        funnel_s = []
        for _ in range(5):
            start = time.perf_counter()
            report = funnel(open_store(url))
            funnel_s.append(time.perf_counter() - start)
        expected_terminal = sum(1 for iid in after if after[iid][0] in ("validated", "rejected", "env_failed"))
    return {
        "candidates": candidates,
        "repositories": repos,
        "rates": {"env_fail": ENV_FAIL, "validated": VALIDATED, "rejected": REJECTED, "infra_error": round(1 - VALIDATED - REJECTED, 2)},
        "first_run_killed_at_half": first,
        "resumed_run": second,
        "resume": {
            "finished_before_kill": len(done_before),
            "finished_candidates_redone": redone,
            "rows": len(after),
            "statuses_at_end": dict(statuses),
            "terminal_at_end": expected_terminal,
            "every_candidate_has_one_row": len(after) == candidates,
        },
        "store_overhead": {
            "wall_ms_per_candidate_resumed_run": round(second["wall_s"] * 1000 / max(1, candidates - len(done_before)), 3),
            "transaction_ms": {"p50": round(statistics.median(latencies) * 1000, 3), "p99": round(pct(latencies, 99) * 1000, 3),
                               "count": len(latencies)},
        },
        "driver_peak_rss_mib": max(first["peak_rss_mib_sampled"], second["peak_rss_mib_sampled"], second.get("max_rss_mib", 0)),
        "funnel_query_s": {"median": round(statistics.median(funnel_s), 3), "max": round(max(funnel_s), 3), "runs": len(funnel_s),
                           "pull_requests": report["pull_requests"], "validated": report["validated"]},
        "machine": machine_notes(load_at_start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--repos", type=int, default=3_000)
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    parser.add_argument("--latencies", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args.drive, args.candidates, args.repos, args.latencies)
        return
    result = run(args.candidates, args.repos)
    path = write_results("mine_scale", result)
    print(json.dumps({k: result.get(k) for k in ("resume", "store_overhead", "driver_peak_rss_mib", "funnel_query_s")}, indent=1))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    main()
