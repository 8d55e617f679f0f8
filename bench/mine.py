"""Mining benchmark on the fixture repositories: validated tasks per CPU-hour, env-image cache hit rate,
seconds per stage (p50), environment success rate. Writes bench/results/mine.json.

Two passes over the same repositories with a fresh store each time: pass 1 builds cold (the fixture
history is salted, so no image tag exists yet), pass 2 shows the steady state of a re-mined repository (env and instance images hit the
content-hash cache). CPU-hours are charged as wall time x the CPUs the job may use (2 on this machine):
an upper bound, since the engine also serves other engineers' work during the run (see machine notes).
Real-repository results (if `work-repos/real-summary.json` exists, written by a real mining run) are
copied in, so one file holds both.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_load, machine_notes, write_results

CPUS = 2


def one_pass(world: dict, home: Path, repeats: int) -> dict:
    from envfarm.store import Store
    from envfarm.store.mining import MiningCandidateRow, MiningEnvRow
    from envfarm.tasks.envsetup.base import BuildOptions
    from envfarm.tasks.pipeline import MineConfig, build_group, scan_repo, validate_candidate

    store = Store(f"sqlite:///{home / 'envfarm.db'}")
    wheels = tuple((p.name, p.read_bytes()) for p in sorted(world["wheelhouse"].iterdir()))
    config = MineConfig(home=home, offline_dir=world["dump"], repeats=repeats, run_id="bench-mine",
                        options=BuildOptions(wheelhouse=wheels, offline=True))
    stages: dict[str, list[float]] = {"scan": [], "env": [], "instance_build": [], "validation": []}
    validated = 0
    started = time.monotonic()
    cpu0 = os.times()
    for repo in ("acme/calc", "acme/broken"):
        t0 = time.monotonic()
        groups = scan_repo(repo, "", config, store)
        stages["scan"].append(time.monotonic() - t0)
        for group in groups:
            t0 = time.monotonic()
            env = build_group(group, config, store)
            stages["env"].append(time.monotonic() - t0)
            if env is None:
                continue
            for item in group.items:
                validated += validate_candidate(item, group, env, config, store) == "validated"
    wall = time.monotonic() - started
    cpu1 = os.times()
    with store.session() as session:
        envs = list(session.query(MiningEnvRow))
        cands = list(session.query(MiningCandidateRow))
    env_builds = [a for e in envs for a in e.attempts if a["ok"]]
    instances = [c.detail for c in cands if "instance_cached" in (c.detail or {})]
    for detail in instances:
        stages["instance_build"].append(detail["instance_build_seconds"])
        stages["validation"].append(detail["validation_seconds"] - detail["instance_build_seconds"])
    hits = sum(a["cached"] for a in env_builds) + sum(d["instance_cached"] for d in instances)
    total = len(env_builds) + len(instances)
    store.dispose()
    return {
        "wall_s": round(wall, 2),
        "driver_cpu_s": round((cpu1.user - cpu0.user) + (cpu1.children_user - cpu0.children_user), 2),
        "validated": validated,
        "validated_per_cpu_hour": round(validated / (wall * CPUS / 3600), 1),
        "env_groups": len(envs),
        "env_success_rate": round(sum(e.status == "ok" for e in envs) / len(envs), 3) if envs else None,
        "env_failure_classes": {e.key: e.reason_class for e in envs if e.status != "ok"},
        "image_cache_hit_rate": round(hits / total, 3) if total else None,
        "image_builds": total,
        "instance_layer_bytes_p50": statistics.median([d["instance_layer_bytes"] for d in instances]) if instances else None,
        "stage_seconds_p50": {k: round(statistics.median(v), 2) for k, v in stages.items() if v},
        "stage_samples": {k: len(v) for k, v in stages.items()},
    }


def timecap_experiment(dump_dir: Path, repos: list[str], years: list[int]) -> dict:
    """Old commits of real repositories, built once with dependencies resolved as of the commit's date
    (uv --exclude-newer), once with the cap but build/test tooling floating, and once with today's packages;
    each arm runs the miner's full strategy chain."""
    from envfarm.tasks.envsetup.base import BuildOptions
    from envfarm.tasks.envsetup.build import build_env
    from envfarm.tasks.mirror import Mirror

    rows = []
    for repo in repos:
        mirror = Mirror(dump_dir / f"{repo.replace('/', '__')}.git")
        for year in years:
            commit = mirror.git("rev-list", "-1", "--first-parent", f"--before={year}-07-01", "HEAD").strip()
            if not commit:
                continue
            date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mirror.commit_time(commit)))
            for arm, options in (("capped_strict", BuildOptions(time_cap=True, float_tools=False)),
                                 ("capped_tools_float", BuildOptions(time_cap=True, float_tools=True)),
                                 ("today", BuildOptions(time_cap=False))):
                # The whole strategy chain, as the miner runs it: the first strategy that works wins.
                result = build_env(mirror, f"timecap-{repo}", f"{year}-{arm}", commit, date, [], options)
                rows.append({"repo": repo, "year": year, "commit": commit[:12], "date": date, "arm": arm, "ok": result.ok,
                             "reason_class": result.reason_class, "seconds": round(result.seconds, 1),
                             "winner": next((a.strategy for a in result.attempts if a.ok), None), "attempts": len(result.attempts)})
                print(json.dumps(rows[-1]), flush=True)
    arms = sorted({r["arm"] for r in rows})
    rates = {arm: round(sum(r["ok"] for r in rows if r["arm"] == arm) / max(1, sum(r["arm"] == arm for r in rows)), 3) for arm in arms}
    return {"builds": rows, "success_rate_by_arm": rates, "n_commits": sum(r["arm"] == "today" for r in rows),
            "arms": {"capped_strict": "uv --exclude-newer <commit date> for everything",
                     "capped_tools_float": "same, but build/test tooling (setuptools, pytest, ...) resolved as of today",
                     "today": "no cap: today's packages"}}


def main() -> None:
    os.environ.setdefault("DOCKER_HOST", "unix:///run/podman/podman.sock")
    previous = {}
    results_file = Path(__file__).parent / "results" / "mine.json"
    if results_file.exists():
        previous = json.loads(results_file.read_text())
    if "--timecap" in sys.argv:
        load = machine_load()
        experiment = timecap_experiment(Path("work-repos/dumps"), ["pallets/itsdangerous", "tkem/cachetools"], [2015, 2018, 2021])
        previous["time_cap_experiment"] = {**experiment, "machine": machine_notes(load)}
        print(f"wrote {write_results('mine', {k: v for k, v in previous.items() if k not in ('benchmark', 'finished_at')})}")
        return
    os.environ.setdefault("PYTHON", sys.executable)
    from tests.tasks.fixtures import build_wheelhouse, make_broken_repo, make_calc_repo

    load_before = machine_load()
    with tempfile.TemporaryDirectory(prefix="bench-mine-") as tmp:
        root = Path(tmp)
        wheelhouse = build_wheelhouse(root / "wheels")
        dump, _ = make_calc_repo(root, salt=f" bench {time.time_ns()}")  # new history: pass 1 builds cold
        make_broken_repo(root, dump)
        world = {"dump": dump, "wheelhouse": wheelhouse}
        passes = []
        for index in (1, 2):
            home = root / f"home{index}"
            home.mkdir()
            passes.append(one_pass(world, home, repeats=3))
            print(f"pass {index}: {json.dumps(passes[-1])}", flush=True)
    real = Path("work-repos/real-summary.json")
    payload = {
        "what": "fixture repositories acme/calc (2 issue-closing PRs + 3 filtered) and acme/broken (unbuildable env); validation repeats=3",
        "passes": passes,
        "validated_per_cpu_hour_p50": statistics.median(p["validated_per_cpu_hour"] for p in passes),
        "real_repositories": json.loads(real.read_text()) if real.exists() else "not run (see report)",
        "machine": machine_notes(load_before),
        "time_cap_experiment": previous.get("time_cap_experiment", "not run: python -m bench.mine --timecap (needs network and work-repos/dumps)"),
    }
    print(f"wrote {write_results('mine', payload)}")


if __name__ == "__main__":
    main()
