"""`envfarm eval`: predictions through the verifier's path, reports in the harness's shapes.

No container runs here: the run step is handed the test command's output from real harness logs and
read by `read_run`, the reading half of `run_tests`; the per-instance reports written must then equal
the reports the harness itself wrote for those runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("swebench", reason="the swebench package (pinned in pyproject.toml) is not installed")

from envfarm.errors import EnvfarmError, PatchError  # noqa: E402 - after the skip above
from envfarm.sandbox.protocol import ExecResult  # noqa: E402
from envfarm.task import TaskSpec  # noqa: E402
from envfarm.tasks.harness_eval import Prediction, evaluate, read_predictions  # noqa: E402
from envfarm.verifiers import harness  # noqa: E402
from envfarm.verifiers.run import read_run  # noqa: E402

DATA = Path(__file__).parent / "data" / "swebench_logs"


def _task(instance: str) -> TaskSpec:
    report = json.loads((DATA / instance / "report.json").read_text())[instance]["tests_status"]
    return TaskSpec(instance_id=instance, repo="django/django", test_ids="swebench",
                    FAIL_TO_PASS=report["FAIL_TO_PASS"]["success"] + report["FAIL_TO_PASS"]["failure"],
                    PASS_TO_PASS=report["PASS_TO_PASS"]["success"] + report["PASS_TO_PASS"]["failure"])


def _recorded_run(task: TaskSpec, patch: str):  # type: ignore[no-untyped-def]
    if "does-not-apply" in patch:
        raise PatchError("the patch does not apply", "fix the patch")
    log = (DATA / task.instance_id / "test_output.log").read_text()
    start, end = harness.markers()
    inner = log.split(start, 1)[1].split(end, 1)[0].split("\n", 1)[1]
    exit_code = int(re.search(r">>>>> Test Exit Code: (\d+)", log).group(1))  # type: ignore[union-attr]
    return read_run(task, ExecResult(exit_code=exit_code, output=inner, truncated=False, duration=1.0), None)


def test_reports_equal_the_harness_reports_for_the_same_runs(tmp_path: Path) -> None:
    names = ["django__django-11049", "django__django-11283", "django__django-12286", "django__django-12453"]
    tasks = {n: _task(n) for n in names}
    preds = [Prediction("django__django-11049", "m", "diff --git a/x b/x"), Prediction("django__django-11283", "m", "diff --git a/y b/y"),
             Prediction("django__django-12286", "m", ""), Prediction("django__django-12453", "m", "does-not-apply")]
    summary = evaluate(tasks, preds, tmp_path, "r1", _recorded_run)
    for name in ("django__django-11049", "django__django-11283"):
        written = json.loads((tmp_path / "logs/run_evaluation/r1/m" / name / "report.json").read_text())[name]
        harness_report = json.loads((DATA / name / "report.json").read_text())[name]
        assert written["resolved"] == harness_report["resolved"]
        assert written["tests_status"] == harness_report["tests_status"]
    assert (summary["submitted_instances"], summary["completed_instances"], summary["resolved_ids"], summary["unresolved_ids"],
            summary["empty_patch_ids"], summary["error_ids"]) == (4, 2, ["django__django-11049"], ["django__django-11283"],
                                                                ["django__django-12286"], ["django__django-12453"])
    assert json.loads((tmp_path / "m.r1.json").read_text()) == summary and summary["schema_version"] == 2


def test_predictions_are_read_as_the_harness_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps({"instance_id": "a__b-1", "model_name_or_path": "org/model", "model_patch": "diff"}) + "\n")
    (pred,) = read_predictions(path)
    assert (pred.instance_id, pred.model, pred.patch) == ("a__b-1", "org__model", "diff")
    path.write_text(json.dumps([{"instance_id": "a__b-1", "model_patch": "diff"}]))
    with pytest.raises(EnvfarmError, match="'model_name_or_path' is missing"):
        read_predictions(path)


def test_a_prediction_for_an_unknown_task_stops_the_run(tmp_path: Path) -> None:
    with pytest.raises(EnvfarmError, match="prediction names instance 'x__y-1', which is not among the tasks"):
        evaluate({}, [Prediction("x__y-1", "m", "diff")], tmp_path, "r", _recorded_run)
    assert not (tmp_path / "logs").exists()
