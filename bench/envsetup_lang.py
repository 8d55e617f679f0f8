"""Env setup beyond Python, on real repositories: the miner's funnel per language and repository.

For each repository (a bare snapshot under `--mirrors`, e.g. fetched public GitHub snapshots) the
benchmark writes an offline dump (no GitHub API is reachable here) and mines the chosen pull requests
with the real pipeline (`run_inline`: language detection, patch split, env image with the real package
registry, instance image, validation). Pull requests come from the repository's history
(`tasks/sources/gitlog.py`) plus, for the ones a curated dataset lists, from `refs/pull/N/head`
(GitHub's own PR heads, present in the snapshots). Issue text cannot be fetched offline: it is
synthesized from the commit messages and marked so (the env and validation stages do not read it).

Per repository: candidates, environments built, validated, failures by class, F2P next to a curated list
where one is given, seconds per stage, instance-layer bytes (node_modules must be in the env layer).
Per language: env success rate and validated rate. Resumable: the store under `--home` keeps finished
candidates. Writes bench/results/envsetup_lang.json (the machine's load at start and end included).

    python -m bench.envsetup_lang --home /work/data/js-bench --mirrors /work/.mirror
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine_load, machine_notes, write_results

RESULTS_PATH = RESULTS / "envsetup_lang.json"

# (repository, pull requests a curated dataset lists for it, which dataset, how many more of the newest
# issue-linked PRs from history to try). Multi-SWE-bench (JS/TS) and SWE-bench Multilingual instance ids.
REPOSITORIES: list[tuple[str, list[int], str, int]] = [
    ("expressjs/express", [5555], "Multi-SWE-bench", 0),
    ("iamkun/dayjs", [2532], "Multi-SWE-bench", 0),
    ("anuraghazra/github-readme-stats", [2844], "Multi-SWE-bench", 0),
    ("axios/axios", [5892], "SWE-bench Multilingual", 0),
    ("markedjs/marked", [], "", 1),
]
# Curated FAIL_TO_PASS lists, where one was found in reachable data (instance id -> test names).
CURATED_F2P: dict[str, list[str]] = {}


def _git(repo_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, check=False).stdout.strip()


def pr_from_head(repo_dir: Path, repo: str, number: int) -> list[dict[str, Any]]:
    """A pull record (and a synthesized issue) from refs/pull/N/head: base = where the PR forked from main."""
    head = _git(repo_dir, "rev-parse", "-q", "--verify", f"refs/pull/{number}/head^{{commit}}")
    if not head:
        return []
    tip = _git(repo_dir, "rev-parse", "HEAD")
    base = _git(repo_dir, "merge-base", tip, head)
    commits = int(_git(repo_dir, "rev-list", "--count", f"{base}..{head}") or "1")
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(_git(repo_dir, "show", "-s", "--format=%ct", head))))
    message = _git(repo_dir, "log", "--format=%B", f"{base}..{head}")
    from envfarm.tasks.candidates import closing_refs

    linked = closing_refs(message, repo)
    issue = linked[0] if linked else 10_000_000 + number  # a synthesized issue, numbered apart from real ones
    subject = message.splitlines()[0] if message else f"PR #{number}"
    return [
        {"type": "issue", "data": {"number": issue, "title": f"Issue #{issue} (text unavailable offline)", "body": message or subject,
                                   "created_at": when, "state": "closed", "synthesized": True,
                                   "html_url": f"https://github.com/{repo}/issues/{issue}"}},
        {"type": "pull", "data": {"number": number, "title": subject, "body": f"Fixes #{issue}", "created_at": when, "merged_at": when,
                                  "merge_commit_sha": head, "base": {"sha": base}, "head": {"sha": head}, "commits": commits,
                                  "html_url": f"https://github.com/{repo}/pull/{number}", "synthesized_from_git": True}},
    ]


def write_dump(repo: str, mirror: Path, dumps: Path, curated: list[int], newest: int) -> list[int]:
    """The repository's dump with only the chosen pull requests; returns their numbers."""
    from envfarm.tasks.sources.gitlog import records_from_git

    owner, name = repo.split("/")
    records: list[dict[str, Any]] = []
    chosen: list[int] = []
    if newest:
        history = list(records_from_git(mirror, repo))
        from envfarm.tasks.candidates import closing_refs

        linked = [r for r in history if r["type"] == "pull" and closing_refs(r["data"]["title"] + "\n" + r["data"]["body"], repo)]
        picked = {r["data"]["number"] for r in linked[:newest * 2]}
        records += [r for r in history if r["type"] == "issue" or r["data"]["number"] in picked]
        chosen += sorted(picked)
    for number in curated:
        rows = pr_from_head(mirror, repo, number)
        records += rows
        chosen += [number] if rows else []
    (dumps / f"{owner}__{name}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    target = dumps / f"{owner}__{name}.git"
    if not target.exists():
        subprocess.run(["git", "clone", "-q", "--mirror", str(mirror), str(target)], check=True)
    return chosen


def repo_report(store: Any, repo: str, curated: list[int], dataset: str) -> dict[str, Any]:
    from envfarm.store.mining import MiningCandidateRow, MiningEnvRow, MiningRepoRow
    from envfarm.tasks.store import load_tasks

    with store.session() as session:
        cands = session.query(MiningCandidateRow).filter(MiningCandidateRow.repo == repo).all()
        envs = session.query(MiningEnvRow).filter(MiningEnvRow.repo == repo).all()
        repo_row = session.get(MiningRepoRow, repo)
    tasks = {t.instance_id: t for t in load_tasks(store, repo)}
    statuses: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for c in cands:
        statuses[c.status] = statuses.get(c.status, 0) + 1
        if c.reason_class:
            reasons[f"{c.status}:{c.reason_class}"] = reasons.get(f"{c.status}:{c.reason_class}", 0) + 1
    candidates = len(cands) - statuses.get("filtered", 0)
    layers = [c.detail.get("instance_layer_bytes") for c in cands if (c.detail or {}).get("instance_layer_bytes") is not None]
    f2p = {}
    for number in curated:
        iid = f"{repo.replace('/', '__')}-{number}"
        row = next((c for c in cands if c.instance_id == iid), None)
        entry: dict[str, Any] = {"status": row.status if row else "not_mined", "reason_class": row.reason_class if row else ""}
        if iid in tasks:
            entry["envfarm_f2p"] = tasks[iid].FAIL_TO_PASS
        if iid in CURATED_F2P:
            entry["curated_f2p"] = CURATED_F2P[iid]
        f2p[iid] = entry
    install = next((e.install_config for e in envs if e.status == "ok"), {}) or {}
    env_layers = [env_layer_bytes(e.image) for e in envs if e.status == "ok" and e.image]
    return {
        "language": (repo_row.detail or {}).get("language") if repo_row else None,
        "language_evidence": (repo_row.detail or {}).get("language_evidence") if repo_row else None,
        "repo_status": f"{repo_row.status}{':' + repo_row.reason_class if repo_row and repo_row.reason_class else ''}" if repo_row else "not_scanned",
        "pull_requests_tried": len(cands),
        "candidates": candidates,
        "env_images": {"ok": sum(e.status == "ok" for e in envs), "failed": sum(e.status != "ok" for e in envs)},
        "env_built_candidates": candidates - statuses.get("env_failed", 0) - statuses.get("pending", 0),
        "validated": statuses.get("validated", 0),
        "statuses": statuses,
        "failures_by_class": reasons,
        "env_failure_detail": [{"key": e.key, "reason_class": e.reason_class, "reason": (e.reason or "")[:600]} for e in envs if e.status != "ok"],
        "env_build_seconds": [round(e.build_seconds or 0, 1) for e in envs],
        "instance_build_seconds": [c.detail.get("instance_build_seconds") for c in cands if (c.detail or {}).get("instance_build_seconds") is not None],
        "validation_seconds": [c.detail.get("validation_seconds") for c in cands if (c.detail or {}).get("validation_seconds") is not None],
        "instance_layer_bytes": layers,
        "env_layer_bytes": [b for b in env_layers if b is not None],  # the repository + node_modules, over the Node tooling layer
        "install": {k: install.get(k) for k in ("strategy", "base_image", "python", "test_cmd", "log_parser")},
        "curated_dataset": dataset,
        "f2p_vs_curated": f2p,
    }


def env_layer_bytes(image: str) -> int | None:
    """What an env image adds over its parent (the language's tooling layer), from the engine."""
    from envfarm.engine import connect
    from envfarm.images import layer_bytes

    try:
        parent = connect().images.get(image).labels.get("envfarm.io/parent", "")
        return layer_bytes(image, parent) if parent else None
    except Exception:  # noqa: BLE001 - a pruned image leaves the number out, not the report
        return None


def language_totals(repos: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for report in repos.values():
        lang = report.get("language") or "undetected"
        agg = out.setdefault(lang, {"repositories": 0, "candidates": 0, "env_images_ok": 0, "env_images": 0, "validated": 0,
                                    "env_build_seconds": [], "instance_build_seconds": [], "validation_seconds": [], "instance_layer_bytes": [],
                                    "env_layer_bytes": []})
        agg["repositories"] += 1
        agg["candidates"] += report["candidates"]
        agg["env_images_ok"] += report["env_images"]["ok"]
        agg["env_images"] += report["env_images"]["ok"] + report["env_images"]["failed"]
        agg["validated"] += report["validated"]
        for key in ("env_build_seconds", "instance_build_seconds", "validation_seconds", "instance_layer_bytes", "env_layer_bytes"):
            agg.setdefault(key, []).extend(v for v in report.get(key) or [] if v is not None)
    for agg in out.values():
        agg["env_success_rate"] = round(agg["env_images_ok"] / agg["env_images"], 3) if agg["env_images"] else None
        agg["validated_rate"] = round(agg["validated"] / agg["candidates"], 3) if agg["candidates"] else None
        for key in ("env_build_seconds", "instance_build_seconds", "validation_seconds", "instance_layer_bytes", "env_layer_bytes"):
            values = agg.pop(key, [])
            agg[f"{key}_median"] = statistics.median(values) if values else None
            agg[f"{key}_max"] = max(values) if values else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("/work/data/lang-bench"))
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"), help="folder of <owner>+<name>/repo bare snapshots")
    parser.add_argument("--only", default="", help="comma-separated repositories to run (default: all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="write the JSON from the store as it is (no mining)")
    args = parser.parse_args(argv)
    load_at_start = machine_load()
    from envfarm.store import Store
    from envfarm.tasks.pipeline import MineConfig, run_inline

    home = args.home.resolve()
    dumps = home / "dumps"
    dumps.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{home / 'envfarm.db'}")
    config = MineConfig(home=home, offline_dir=dumps, repeats=args.repeats, run_id="bench-lang", test_timeout=600.0)
    config = replace(config, filters=replace(config.filters, language="auto", min_issue_chars=10, max_patch_lines=3000))
    only = {r for r in args.only.split(",") if r}
    chosen: dict[str, list[int]] = {}
    stage_seconds: dict[str, float] = {}
    for repo, curated, _dataset, newest in REPOSITORIES:
        if only and repo not in only:
            continue
        mirror = args.mirrors / repo.replace("/", "+") / "repo"
        if not mirror.exists():
            print(f"{repo}: no snapshot at {mirror} (fetch it first); skipped", file=sys.stderr)
            continue
        if args.report_only:
            chosen[repo] = [json.loads(line)["data"]["number"] for line in (dumps / f"{repo.replace('/', '__')}.jsonl").read_text().splitlines()
                            if '"type": "pull"' in line] if (dumps / f"{repo.replace('/', '__')}.jsonl").exists() else []
            continue
        chosen[repo] = write_dump(repo, mirror, dumps, curated, newest)
        started = time.monotonic()
        print(f"{repo}: mining pull requests {chosen[repo]}", file=sys.stderr, flush=True)
        run_inline([(repo, "")], config, store, lambda what, n=1: print(f"  {what} +{n}", file=sys.stderr, flush=True))
        stage_seconds[repo] = round(time.monotonic() - started, 1)
    repos = {repo: {**repo_report(store, repo, curated, dataset), "pull_requests": chosen.get(repo, []), "wall_seconds": stage_seconds.get(repo)}
             for repo, curated, dataset, _ in REPOSITORIES if repo in chosen}
    # A run over some repositories (--only) keeps the others' earlier results: one file for every language.
    previous = RESULTS_PATH.exists() and json.loads(RESULTS_PATH.read_text()).get("repositories", {}) or {}
    repos = {**{r: v for r, v in previous.items() if r not in repos}, **repos}
    payload = {
        "what": "env setup and validation on real JavaScript/TypeScript, Go and Rust repositories (envfarm mine, language auto-detected)",
        "store": str(home / "envfarm.db"),
        "per_language": language_totals(repos),
        "repositories": repos,
        "machine": machine_notes(load_at_start),
    }
    path = write_results("envsetup_lang", payload)
    print(json.dumps(payload["per_language"], indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
