"""Environment setup on real, curated tasks (SWE-Gym / SWE-rebench rows): env success, validated rate,
FAIL_TO_PASS exact match and PASS_TO_PASS recall/precision against the curated lists, CPU-seconds per
validated task, failures by class (python_unavailable apart), image-store bytes per validated task.

The manifest (bench/envsetup_tasks.json) holds only instance ids, repositories, base commits, PR numbers,
dates and the curated test names. Everything else is fetched at run time into an ignored folder: the
repository (a snapshot under ENVFARM_BENCH_SNAPSHOTS, else a clone from GitHub into
ENVFARM_BENCH_DATA/mirrors), and the gold patch and test patch, taken from the pull request's own diff
(`refs/pull/N/head` from its merge base with the curated base commit, split by envfarm's patch splitter).

Each task goes through envfarm's own path: `build_env` (strategies, repair loop, interpreter bases on
demand) -> instance image -> `validate` (repeated runs in fresh sandboxes, then the verifier's gold /
empty check). Results are appended per task to ENVFARM_BENCH_DATA/results-<variant>.jsonl, so a killed
run resumes where it stopped; `--summarize` only rebuilds the JSON from what ran.

CPU: `machine_cpu_seconds` is the whole machine's CPU time while the task ran (cpuacct's root counter):
an upper bound, other jobs on the machine included (the load recorded at start and end says how busy it
was); `bench_cpu_seconds` is this process's own. Builds and test runs execute inside the engine's
processes, so no per-process figure covers them.

    python -m bench.envsetup [--variant capped|uncapped] [--limit N] [--only ID ...] [--summarize]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import machine_load, machine_notes, write_results

MANIFEST = Path(__file__).with_name("envsetup_tasks.json")
DATA = Path(os.environ.get("ENVFARM_BENCH_DATA", "/work/data/envsetup"))
SNAPSHOTS = Path(os.environ.get("ENVFARM_BENCH_SNAPSHOTS", "/work/.mirror"))
REPEATS = int(os.environ.get("ENVFARM_BENCH_REPEATS", "2"))  # runs of each state per validation (the miner's default is 3)
SWE_GYM_CPU_HOURS = 4.0  # SWE-Gym's reported cost of setting up one task environment by hand


def machine_cpu_seconds() -> float:
    for path in ("/sys/fs/cgroup/cpuacct/cpuacct.usage", "/sys/fs/cgroup/cpu.stat"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path.endswith("usage"):
            return int(text.strip()) / 1e9
        for line in text.splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1]) / 1e6
    with open("/proc/stat") as handle:  # all CPUs' busy jiffies
        fields = [int(x) for x in handle.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def mirror_for(repo: str):  # type: ignore[no-untyped-def]
    from envfarm.tasks.mirror import Mirror

    snapshot = SNAPSHOTS / repo.replace("/", "+") / "repo"
    for candidate in (snapshot / ".git", snapshot):
        if (candidate / "HEAD").exists() and (candidate / "objects").is_dir():
            return Mirror(candidate)
    return Mirror.ensure(DATA / "mirrors", repo, f"https://github.com/{repo}.git")


def pr_diff(mirror, base: str, pr: int) -> str:  # type: ignore[no-untyped-def]
    """The pull request's own diff: from its head's merge base with the curated base commit, as GitHub shows it."""
    head = ""
    for ref in (f"refs/pull/{pr}/head", f"refs/pull/{pr}/merge"):
        try:
            head = mirror.git_bytes("rev-parse", "--verify", "-q", ref + "^{commit}").decode().strip()
            if ref.endswith("merge"):  # a test-merge commit: its second parent is the head
                head = mirror.parents(head)[-1]
            break
        except Exception:  # noqa: BLE001 - the ref is simply absent; try the next source
            continue
    if not head:  # a squash merge on the default branch names the PR as "(#N)"
        found = mirror.git_bytes("log", "--all", "--format=%H", "-F", f"--grep=(#{pr})", "-n", "1").decode().strip()
        if not found:
            raise LookupError(f"pull request #{pr} is in neither refs/pull nor the history")
        return mirror.diff(mirror.parents(found)[0], found).decode("utf-8", errors="replace")
    return mirror.diff(mirror.merge_base(base, head), head).decode("utf-8", errors="replace")


def shared_env(done: dict[str, dict[str, Any]], repo: str, version: str, base: str, mirror) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    """An env an earlier task of the same repository and dependency version built, at a commit before
    `base`: the miner groups candidates so (`envfarm.tasks.pipeline`), and the instance layer moves to `base`."""
    for prior in done.values():
        if prior.get("repo") == repo and prior.get("version") == version and prior.get("env_ok") and prior.get("env_commit") \
                and mirror.is_ancestor(prior["env_commit"], base):
            return prior
    return None


def run_task(row: dict[str, Any], options, done: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from envfarm.images import ensure_image, layer_bytes
    from envfarm.task import TaskSpec
    from envfarm.tasks.envsetup import recipes_for
    from envfarm.tasks.envsetup.build import build_env
    from envfarm.tasks.instance import instance_recipe
    from envfarm.tasks.patchsplit import split_diff
    from envfarm.tasks.validate import validate
    from envfarm.verifiers.run import selected_test_files

    out: dict[str, Any] = {"instance_id": row["instance_id"], "repo": row["repo"], "repeats": REPEATS}
    cpu0, own0, t0 = machine_cpu_seconds(), own_cpu_seconds(), time.monotonic()
    try:
        mirror = mirror_for(row["repo"])
        base = row["base_commit"]
        split = split_diff(pr_diff(mirror, base, int(row["pr"])))
        if not split.patch or not split.test_patch:
            raise LookupError("the pull request's diff has no code or no test part")
        test_files = selected_test_files(split.test_patch)
        existing = set(mirror.ls(base))
        collect = sorted(p for p in test_files if p in existing and p.endswith(".py"))
        recipes = recipes_for("python")
        version = recipes.version(mirror, base)
        prior = shared_env(done or {}, row["repo"], version, base, mirror)
        env_commit, env_date = (prior["env_commit"], prior.get("env_date")) if prior else (base, row.get("created_at"))
        collect = prior["collect"] if prior else collect
        out.update(version=version, env_commit=env_commit, env_date=env_date, collect=collect, env_shared_with=prior["instance_id"] if prior else None)
        env = build_env(mirror, row["repo"], version, env_commit, env_date, collect, options)
        out.update(env_ok=env.ok, env_seconds=round(env.seconds, 1), env_reason_class=env.reason_class, env_reason=env.reason[:3000],
                   attempts=[{k: v for k, v in a.__dict__.items() if k != "reason"} | {"reason": a.reason[:600]} for a in env.attempts],
                   python=env.install.python if env.install else None, strategy=env.install.strategy if env.install else None)
        if env.ok:
            assert env.install is not None
            built = ensure_image(instance_recipe(mirror, row["instance_id"], env.image, env_commit, base, test_files))
            task = TaskSpec(instance_id=row["instance_id"], repo=row["repo"], base_commit=base, patch=split.patch, test_patch=split.test_patch,
                            problem_statement="", created_at=row.get("created_at"), version=version, environment_setup_commit=env_commit,
                            image=built.tag, language="python", install=env.install,
                            extra={"test_directives": test_files, "pr_number": int(row["pr"])})
            verdict = validate(task, repeats=REPEATS, timeout=900)
            curated_f2p, curated_p2p = set(row["FAIL_TO_PASS"]), set(row["PASS_TO_PASS"])
            f2p, p2p = set(verdict.fail_to_pass), set(verdict.pass_to_pass)
            # The curated lists come from a harness that names a test by its `-rA` line, cut at the first space
            # (`test_x[a b]` -> `test_x[a`); envfarm keeps exact ids. Both comparisons are reported.
            cut = lambda ids: {i.split(" ")[0] for i in ids}  # noqa: E731
            out.update(f2p_exact_harness_ids=cut(f2p) == cut(curated_f2p), p2p_common_harness_ids=len(cut(p2p) & cut(curated_p2p)),
                       p2p_found_harness_ids=len(cut(p2p)), p2p_missing=sorted(curated_p2p - p2p)[:20], p2p_extra=sorted(p2p - curated_p2p)[:20])
            out.update(validated=verdict.accepted, validation_reason_class=verdict.reason_class, validation_reason=verdict.reason[:1000],
                       f2p_exact=f2p == curated_f2p, f2p=sorted(f2p), f2p_missing=sorted(curated_f2p - f2p), f2p_extra=sorted(f2p - curated_f2p),
                       p2p_found=len(p2p), p2p_curated=len(curated_p2p), p2p_common=len(p2p & curated_p2p),
                       env_image=env.image, instance_image=built.tag,
                       env_layer_bytes=layer_bytes(env.image, env.install.base_image), instance_layer_bytes=layer_bytes(built.tag, env.image))
        else:
            out.update(validated=False)
    except Exception as exc:  # noqa: BLE001 - one task's failure is a result row, the bench goes on
        out.update(env_ok=out.get("env_ok", False), validated=False, error=f"{type(exc).__name__}: {exc}"[:1500],
                   error_trace=traceback.format_exc()[-2000:])
    out.update(seconds=round(time.monotonic() - t0, 1), machine_cpu_seconds=round(machine_cpu_seconds() - cpu0, 1),
               bench_cpu_seconds=round(own_cpu_seconds() - own0, 1), finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return out


def load_results(variant: str) -> dict[str, dict[str, Any]]:
    path = DATA / f"results-{variant}.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run: that task runs again
            done[row["instance_id"]] = row
    return done


def store_bytes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Image-store bytes the validated tasks need: each env layer once (shared by its instances), each
    instance layer, the interpreter bases and tooling layers once per base."""
    from envfarm.engine import connect

    client = connect()
    envs: dict[str, int] = {}
    instances = 0
    bases: set[str] = set()
    for row in rows:
        if row.get("validated"):
            envs[row["env_image"]] = row.get("env_layer_bytes", 0)
            instances += row.get("instance_layer_bytes", 0)
            try:
                bases.add(client.images.get(row["env_image"]).attrs.get("Parent") or "")
            except Exception:  # noqa: BLE001 - a pruned image: its bytes are still counted from the row
                pass
    validated = sum(1 for r in rows if r.get("validated"))
    base_bytes = 0
    for tag in ("envfarm/base:bullseye", "envfarm/base:bookworm", "envfarm/base:trixie"):
        try:
            base_bytes += int(client.images.get(tag).attrs.get("Size", 0)) if any(r.get("validated") for r in rows) else 0
        except Exception:  # noqa: BLE001 - a base this machine never built
            continue
    total = sum(envs.values()) + instances
    return {"validated_tasks": validated, "env_layers": len(envs), "env_layer_bytes": sum(envs.values()), "instance_layer_bytes": instances,
            "bases_bytes_built_here": base_bytes,
            "bytes_per_validated_task": round(total / validated) if validated else None,
            "bytes_per_500_tasks_gib": round(total / validated * 500 / 2**30, 2) if validated else None,
            "note": "env + instance layers; the Debian bases are shared by every task and listed apart"}


def summarize(variant: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    env_ok = [r for r in rows if r.get("env_ok")]
    validated = [r for r in rows if r.get("validated")]
    reasons = Counter((r.get("env_reason_class") or ("error" if r.get("error") else "")) for r in rows if not r.get("env_ok"))
    rejected = Counter(r.get("validation_reason_class") for r in env_ok if not r.get("validated"))
    unavailable = reasons.pop("python_unavailable", 0)
    p2p_found = sum(r.get("p2p_found", 0) for r in validated)
    p2p_curated = sum(r.get("p2p_curated", 0) for r in validated)
    p2p_common = sum(r.get("p2p_common", 0) for r in validated)
    cpu = [r["machine_cpu_seconds"] for r in rows]
    repos = sorted({r["repo"] for r in rows})
    return {
        "variant": variant, "tasks": n, "validation_repeats": sorted({r.get("repeats", 2) for r in rows}), "repositories": len(repos), "repository_names": repos,
        "env_success": len(env_ok), "env_success_rate": round(len(env_ok) / n, 3) if n else None,
        "validated": len(validated), "validated_rate": round(len(validated) / n, 3) if n else None,
        "validated_rate_on_available_interpreters": round(len(validated) / (n - unavailable), 3) if n - unavailable else None,
        "f2p_exact_match": sum(1 for r in validated if r.get("f2p_exact")),
        "f2p_exact_match_rate": round(sum(1 for r in validated if r.get("f2p_exact")) / len(validated), 3) if validated else None,
        "p2p_recall": round(p2p_common / p2p_curated, 4) if p2p_curated else None,
        "p2p_precision": round(p2p_common / p2p_found, 4) if p2p_found else None,
        "with_harness_test_ids": {  # ids cut at the first space, as the curated lists' harness names them
            "f2p_exact_match": sum(1 for r in validated if r.get("f2p_exact_harness_ids", r.get("f2p_exact"))),
            "p2p_recall": round(sum(r.get("p2p_common_harness_ids", r.get("p2p_common", 0)) for r in validated) / p2p_curated, 4) if p2p_curated else None,
            "p2p_precision": (round(sum(r.get("p2p_common_harness_ids", r.get("p2p_common", 0)) for r in validated)
                                    / sum(r.get("p2p_found_harness_ids", r.get("p2p_found", 0)) for r in validated), 4) if p2p_found else None),
        },
        "env_failures_by_class": dict(reasons.most_common()), "python_unavailable": unavailable,
        "validation_rejections_by_class": dict(rejected.most_common()),
        "repairs_used": dict(Counter(rep for r in rows for a in r.get("attempts", []) if a.get("ok") for rep in a.get("repairs", [])).most_common()),
        "machine_cpu_seconds_total": round(sum(cpu), 1),
        "machine_cpu_seconds_per_validated_task": round(sum(cpu) / len(validated), 1) if validated else None,
        "cpu_hours_per_validated_task_vs_swe_gym": (f"{sum(cpu) / len(validated) / 3600:.3f} CPU-h (upper bound) vs SWE-Gym's ~{SWE_GYM_CPU_HOURS} CPU-h"
                                                    if validated else None),
        "bench_cpu_seconds_total": round(sum(r.get("bench_cpu_seconds", 0) for r in rows), 1),
        "seconds_median_per_task": round(statistics.median(r["seconds"] for r in rows), 1) if rows else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("capped", "uncapped"), default="capped")
    parser.add_argument("--limit", type=int, default=None, help="run at most N new tasks this time")
    parser.add_argument("--only", nargs="*", default=None, help="instance ids to run")
    parser.add_argument("--summarize", action="store_true", help="write the JSON from what already ran, run nothing")
    args = parser.parse_args(argv)
    from envfarm.tasks.envsetup.base import BuildOptions

    manifest = json.loads(MANIFEST.read_text())
    tasks = [t for t in manifest["tasks"] if not args.only or t["instance_id"] in args.only]
    DATA.mkdir(parents=True, exist_ok=True)
    load_at_start = machine_load()
    done = load_results(args.variant)
    options = BuildOptions(time_cap=args.variant == "capped")
    todo = [t for t in tasks if t["instance_id"] not in done]
    if args.limit is not None:
        todo = todo[:args.limit]
    if not args.summarize:
        with (DATA / f"results-{args.variant}.jsonl").open("a") as sink:
            for index, row in enumerate(todo, 1):
                print(f"[{time.strftime('%H:%M:%S')}] {args.variant} {index}/{len(todo)} {row['instance_id']} ...", flush=True)
                result = run_task(row, options, done)
                sink.write(json.dumps(result) + "\n")
                sink.flush()
                done[row["instance_id"]] = result
                print(f"    env_ok={result.get('env_ok')} validated={result.get('validated')} f2p_exact={result.get('f2p_exact')} "
                      f"class={result.get('env_reason_class') or result.get('validation_reason_class') or result.get('error', '')[:80]} "
                      f"{result['seconds']}s", flush=True)
    payload: dict[str, Any] = {"manifest": MANIFEST.name, "datasets": manifest.get("datasets"), "variants": {}}
    previous = {}
    results_path = Path(__file__).parent / "results" / "envsetup.json"
    if results_path.exists():
        previous = json.loads(results_path.read_text()).get("variants", {})
    payload["variants"] = previous
    for variant in ("capped", "uncapped"):
        rows = [r for r in load_results(variant).values() if r["instance_id"] in {t["instance_id"] for t in manifest["tasks"]}]
        if rows:
            store = store_bytes(rows) if variant == args.variant else payload["variants"].get(variant, {}).get("image_store")
            if variant == args.variant:  # rows with `p2p_missing` were built with one env layer (4f611dc added both)
                current = [r for r in rows if "p2p_missing" in r]
                store = {"all_tasks": store, "tasks_built_with_one_env_layer": store_bytes(current) if current else None}
            payload["variants"][variant] = summarize(variant, rows) | {"image_store": store}
    payload["per_task"] = {v: [{k: r.get(k) for k in ("instance_id", "env_ok", "validated", "f2p_exact", "env_reason_class", "validation_reason_class",
                                                    "python", "strategy", "seconds", "machine_cpu_seconds", "error")}
                              for r in load_results(v).values()] for v in ("capped", "uncapped")}
    payload["machine"] = machine_notes(load_at_start)
    path = write_results("envsetup", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
