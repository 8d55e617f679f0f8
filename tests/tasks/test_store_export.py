"""Funnel rows and task rows: idempotent writes, funnel counts, SWE-bench JSONL export (SQLite and PostgreSQL)."""

import json

import envfarm.store.mining  # noqa: F401
from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.export import export_jsonl
from envfarm.tasks.store import candidate_states, funnel, load_tasks, record_candidate, record_env, record_repo

SWEBENCH_FIELDS = {"instance_id", "repo", "base_commit", "patch", "test_patch", "problem_statement", "hints_text", "created_at",
                   "version", "FAIL_TO_PASS", "PASS_TO_PASS", "environment_setup_commit"}


def task(n: int) -> TaskSpec:
    return TaskSpec(instance_id=f"acme__calc-{n}", repo="acme/calc", base_commit="a" * 40, patch="p", test_patch="t",
                    problem_statement="ünïcode statement", version="0.1+x", FAIL_TO_PASS=["t::a"], PASS_TO_PASS=["t::b"],
                    image=f"envfarm/instance.acme__calc-{n}:h", install=InstallConfig(exclude_newer="2024-01-01"))


def test_idempotent_writes_funnel_and_export(store, tmp_path):
    record_repo(store, "acme/calc", "scanned")
    record_repo(store, "acme/gone", "failed", "repo_not_found", "no dump")
    record_candidate(store, "acme__calc-5", "acme/calc", 5, "candidate", "filtered", "docs_only", "only docs")
    record_candidate(store, "acme__calc-9", "acme/calc", 9, "env", "env_failed", "build_error", "boom")
    record_env(store, "acme/calc@0.1+x", "acme/calc", "0.1+x", "ok", "envfarm/env.x:h", {"python": "3.11"})
    for _ in range(2):  # the same validated task twice: one row, not two
        record_candidate(store, "acme__calc-2", "acme/calc", 2, "validation", "validated", task=task(2))
    record_candidate(store, "acme__calc-3", "acme/calc", 3, "validation", "rejected", "no_fail_to_pass", "none")
    assert candidate_states(store, "acme/calc") == {"acme__calc-5": "filtered", "acme__calc-9": "env_failed", "acme__calc-2": "validated", "acme__calc-3": "rejected"}
    summary = funnel(store)
    assert (summary["pull_requests"], summary["candidates"], summary["env_built"], summary["validated"]) == (4, 3, 2, 1)
    assert summary["reasons"] == {"filtered:docs_only": 1, "env_failed:build_error": 1, "rejected:no_fail_to_pass": 1}
    assert summary["repos"] == {"scanned": 1, "failed:repo_not_found": 1}
    record_env(store, "acme/calc@0.2+y", "acme/calc", "0.2+y", "failed", reason_class="build_error")
    summary = funnel(store)
    assert summary["env_images"] == {"acme/calc": {"ok": 1, "failed:build_error": 1}} and summary["env_success_rate"] == 0.5
    assert [t.instance_id for t in load_tasks(store)] == ["acme__calc-2"]
    out = tmp_path / "tasks.jsonl"
    assert export_jsonl(store, out) == 1
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert SWEBENCH_FIELDS <= set(rows[0]) and json.loads(rows[0]["FAIL_TO_PASS"]) == ["t::a"]
    assert rows[0]["install_config"]["exclude_newer"] == "2024-01-01" and rows[0]["problem_statement"] == "ünïcode statement"
    assert not list(tmp_path.glob("*.tmp"))
