"""Evaluate predictions on stored tasks and write the reports the official harness writes.

Each prediction (`{"instance_id", "model_name_or_path", "model_patch"}`, SWE-bench's predictions
format) runs through the one test runner, `run_tests`, in a fresh sandbox from the task's image, and is
graded by the verifier's own `reward_for` (its tampering checks included; `grade` applies the
harness's rules to tasks under its conventions). The output has the harness's
shapes and places, so tools that read `run_evaluation` output read this too:

    OUT/logs/run_evaluation/RUN_ID/MODEL/INSTANCE/{report.json, test_output.txt, patch.diff}
    OUT/MODEL.RUN_ID.json      (the run summary: counts and id lists, schema_version 2)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from envfarm.errors import EnvfarmError, PatchError
from envfarm.sandbox.protocol import Sandbox
from envfarm.task import TaskSpec
from envfarm.verifiers.run import TestRun, run_tests
from envfarm.verifiers.swe import reward_for

RunFn = Callable[[TaskSpec, str], TestRun]


@dataclass
class Prediction:
    instance_id: str
    model: str
    patch: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str) -> Prediction:
        for key in ("instance_id", "model_name_or_path"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise EnvfarmError(f"{where}: prediction field {key!r} is missing or not a string",
                                   "each prediction needs instance_id, model_name_or_path and model_patch")
        if "model_patch" not in row:
            raise EnvfarmError(f"{where}: prediction field 'model_patch' is missing", "give the patch (or null for none)")
        return cls(row["instance_id"], row["model_name_or_path"].replace("/", "__"), row["model_patch"])


def read_predictions(path: Path) -> list[Prediction]:
    """SWE-bench predictions: a JSON list, or JSON Lines."""
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise EnvfarmError(f"{path} is not JSON or JSON Lines ({exc})", "write predictions as SWE-bench does: one JSON object per line") from exc
    out = [Prediction.from_row(row, f"{path}:{i}") for i, row in enumerate(rows, 1)]
    seen = set()
    for p in out:
        if p.instance_id in seen:
            raise EnvfarmError(f"{path}: two predictions for {p.instance_id}", "keep one prediction per instance")
        seen.add(p.instance_id)
    return out


def tests_status(not_passed_f2p: Iterable[str], not_passed_p2p: Iterable[str], task: TaskSpec) -> dict[str, dict[str, list[str]]]:
    f2p_failed, p2p_failed = set(not_passed_f2p), set(not_passed_p2p)
    return {
        "FAIL_TO_PASS": {"success": [t for t in dict.fromkeys(task.FAIL_TO_PASS) if t not in f2p_failed],
                         "failure": [t for t in dict.fromkeys(task.FAIL_TO_PASS) if t in f2p_failed]},
        "PASS_TO_PASS": {"success": [t for t in dict.fromkeys(task.PASS_TO_PASS) if t not in p2p_failed],
                         "failure": [t for t in dict.fromkeys(task.PASS_TO_PASS) if t in p2p_failed]},
        "FAIL_TO_FAIL": {"success": [], "failure": []},
        "PASS_TO_FAIL": {"success": [], "failure": []},
    }


def instance_report(task: TaskSpec, prediction: Prediction, run: TestRun) -> dict[str, Any]:
    """The harness's per-instance report (get_eval_report's shape) for one run whose patch applied."""
    reward = reward_for(task, run)
    entry: dict[str, Any] = {"patch_is_None": prediction.patch is None, "patch_exists": prediction.patch is not None,
                             "patch_successfully_applied": True, "resolved": bool(reward.passed)}
    graded = reward.details.get("grade")
    if graded is not None:
        entry["tests_status"] = tests_status(graded["fail_to_pass"]["not_passed"], graded["pass_to_pass"]["not_passed"], task)
    if reward.details.get("reason"):  # why envfarm scored 0 without a test verdict (tampering, no report)
        entry["envfarm_reason"] = reward.details["reason"]
    return {task.instance_id: entry}


@dataclass
class EvalSummary:
    run_id: str
    submitted: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    empty_patch: list[str] = field(default_factory=list)
    error: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    def report(self, total: int) -> dict[str, Any]:
        """make_run_report's shape."""
        return {
            "total_instances": total, "submitted_instances": len(self.submitted), "completed_instances": len(self.completed),
            "resolved_instances": len(self.resolved), "unresolved_instances": len(self.unresolved),
            "empty_patch_instances": len(self.empty_patch), "error_instances": len(self.error),
            "completed_ids": sorted(self.completed), "incomplete_ids": sorted(self.incomplete), "empty_patch_ids": sorted(self.empty_patch),
            "submitted_ids": sorted(self.submitted), "resolved_ids": sorted(self.resolved), "unresolved_ids": sorted(self.unresolved),
            "error_ids": sorted(self.error), "schema_version": 2,
        }


def sandbox_runner(timeout: float, open_sandbox: Callable[[TaskSpec], Sandbox] | None = None) -> RunFn:
    """Run one patch with `run_tests` in a fresh sandbox from the task's image (the verifier's steps)."""
    def _open(task: TaskSpec) -> Sandbox:
        from envfarm import sandbox as sandboxes

        return sandboxes.open(task.image, run_id="eval", task_id=task.instance_id)

    opener = open_sandbox or _open

    def run(task: TaskSpec, patch: str) -> TestRun:
        with opener(task) as sandbox:
            return run_tests(sandbox, task, patch, timeout=timeout)

    return run


def evaluate(tasks: dict[str, TaskSpec], predictions: Iterable[Prediction], out: Path, run_id: str, run: RunFn) -> dict[str, Any]:
    """Grade every prediction whose task is known; write the harness's files; return the run summary."""
    predictions = list(predictions)
    unknown = [p.instance_id for p in predictions if p.instance_id not in tasks]
    if unknown:
        raise EnvfarmError(f"{len(unknown)} prediction(s) name tasks not in the store, e.g. {unknown[0]}",
                           "import the dataset first (envfarm tasks import) or drop those predictions")
    models = {p.model for p in predictions}
    if len(models) > 1:
        raise EnvfarmError(f"predictions from {len(models)} models ({', '.join(sorted(models))})", "evaluate one model per run")
    summary = EvalSummary(run_id)
    for prediction in predictions:
        task = tasks[prediction.instance_id]
        summary.submitted.append(task.instance_id)
        folder = out / "logs" / "run_evaluation" / run_id / prediction.model / task.instance_id
        folder.mkdir(parents=True, exist_ok=True)
        if not prediction.patch:
            summary.empty_patch.append(task.instance_id)
            continue
        (folder / "patch.diff").write_text(prediction.patch, encoding="utf-8")
        try:
            test_run = run(task, prediction.patch)
        except PatchError as exc:  # the harness stops such an instance before grading: an error, no report
            (folder / "run_instance.log").write_text(exc.line() + "\n", encoding="utf-8")
            summary.error.append(task.instance_id)
            continue
        (folder / "test_output.txt").write_text(test_run.log_tail, encoding="utf-8")
        report = instance_report(task, prediction, test_run)
        (folder / "report.json").write_text(json.dumps(report, indent=4) + "\n", encoding="utf-8")
        summary.completed.append(task.instance_id)
        (summary.resolved if report[task.instance_id]["resolved"] else summary.unresolved).append(task.instance_id)
    summary.incomplete = sorted(set(tasks) - set(summary.submitted))
    result = summary.report(total=len(tasks))
    model = predictions[0].model if predictions else "none"
    (out / f"{model}.{run_id}.json").write_text(json.dumps(result, indent=4) + "\n", encoding="utf-8")
    return result
