"""`envfarm tasks validate`: does each imported task grade its own gold patch as resolved, and an
empty patch as not, over N runs?

Every run goes through the evaluation's own step (`harness_eval.grade_one`: `run_tests` in a fresh
sandbox, graded by the verifier), so a task that validates here grades the same way in `envfarm eval`
and in the RL loop. Outcomes per task:

- `valid`: the gold patch resolved it in every run and the empty patch in none;
- `gold_fails`: the gold patch did not resolve it in any run (public datasets have such tasks: a
  check of SWE-bench Verified found 14 of 500), `gold_flaky`: in some runs only;
- `empty_passes`: the tests pass without any fix (the task cannot tell a fix from nothing);
- `infrastructure`: a run failed for reasons that are not the task's (no environment, engine errors,
  or a log the harness's own signatures label as an environment failure; SWE-bench 5.0's
  `infra_failure` rules). Those runs are not counted for or against the task; when every run of a
  task failed that way, the task is listed apart, never as a failing task.

The report is written as JSON (`--out`) with each run's outcome, and the tasks whose gold patch fails
are listed by name.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from envfarm.task import TaskSpec
from envfarm.tasks.harness_eval import TIER_ENVIRONMENT, RunFn, classify, grade_one

VALID, GOLD_FAILS, GOLD_FLAKY, EMPTY_PASSES, INFRASTRUCTURE = "valid", "gold_fails", "gold_flaky", "empty_passes", "infrastructure"


@dataclass
class TaskValidation:
    instance_id: str
    status: str = ""
    gold: list[str] = field(default_factory=list)  # each run's outcome: resolved | unresolved | error | infrastructure
    empty: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def decide(self) -> str:
        gold = [o for o in self.gold if o != INFRASTRUCTURE]
        empty = [o for o in self.empty if o != INFRASTRUCTURE]
        if not gold and not empty:
            self.status = INFRASTRUCTURE
        elif "resolved" in empty:
            self.status = EMPTY_PASSES
        elif not gold or "resolved" not in gold:
            self.status = GOLD_FAILS if gold else INFRASTRUCTURE
        elif any(o != "resolved" for o in gold):
            self.status = GOLD_FLAKY
        else:
            self.status = VALID
        return self.status


def _one_run(task: TaskSpec, patch: str, run: RunFn, scratch: Path) -> tuple[str, str]:
    """(outcome, reason) of one graded run, with infrastructure failures told apart."""
    folder = scratch / task.instance_id
    outcome = grade_one(task, patch, folder, run)  # an empty patch runs too: nothing applied, the tests as the task sets them
    if outcome == "resolved":
        return outcome, ""
    text = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in (folder / "run_instance.log", folder / "test_output.txt") if f.exists())
    found = classify(text)
    if found and found[1] == TIER_ENVIRONMENT:
        return INFRASTRUCTURE, found[0]
    reason = (folder / "run_instance.log").read_text(encoding="utf-8").strip() if (folder / "run_instance.log").exists() else ""
    if not reason and (folder / "report.json").exists():
        entry = json.loads((folder / "report.json").read_text(encoding="utf-8"))[task.instance_id]
        failing = entry.get("tests_status", {})
        reason = entry.get("envfarm_reason", "") or "; ".join(
            f"{kind} failing: {len(failing[kind]['failure'])}" for kind in ("FAIL_TO_PASS", "PASS_TO_PASS") if failing.get(kind, {}).get("failure"))
    return outcome, reason[:300]


def validate_tasks(tasks: Iterable[TaskSpec], run: RunFn, runs: int = 1,
                   on_progress: Callable[[TaskValidation], None] | None = None) -> list[TaskValidation]:
    """Gold and empty patch, `runs` times each, for every task; one TaskValidation per task."""
    results = []
    with tempfile.TemporaryDirectory(prefix="envfarm-validate-") as scratch:
        for task in tasks:
            result = TaskValidation(task.instance_id)
            for _ in range(max(1, runs)):
                for patch, outcomes in ((task.patch, result.gold), ("", result.empty)):
                    outcome, reason = _one_run(task, patch, run, Path(scratch))
                    outcomes.append(outcome)
                    if reason:
                        result.reasons.append(f"{'gold' if outcomes is result.gold else 'empty'}: {reason}")
            result.decide()
            results.append(result)
            if on_progress:
                on_progress(result)
    return results


def validation_report(results: list[TaskValidation], runs: int) -> dict[str, Any]:
    by_status: dict[str, list[str]] = {s: [] for s in (VALID, GOLD_FAILS, GOLD_FLAKY, EMPTY_PASSES, INFRASTRUCTURE)}
    for r in results:
        by_status[r.status].append(r.instance_id)
    return {
        "runs_per_patch": runs,
        "tasks": len(results),
        "counts": {k: len(v) for k, v in by_status.items()},
        "gold_patch_fails_ids": sorted(by_status[GOLD_FAILS] + by_status[GOLD_FLAKY]),
        **{f"{k}_ids": sorted(v) for k, v in by_status.items()},
        "instances": {r.instance_id: {"status": r.status, "gold": r.gold, "empty": r.empty, "reasons": r.reasons} for r in results},
    }
