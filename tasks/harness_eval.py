"""Evaluate predictions on tasks and write the reports the official harness writes (`envfarm eval`).

Each prediction (`{"instance_id", "model_name_or_path", "model_patch"}`, SWE-bench's predictions
format) runs through the one test runner, `run_tests`, in a fresh sandbox from the task's image, and is
graded by the verifier's own `reward_for` (its tampering checks included; `grade` applies the
harness's rules to tasks under its conventions). The output has the harness's shapes and places, so
tools that read `run_evaluation` output read this too:

    OUT/logs/run_evaluation/RUN_ID/MODEL/INSTANCE/{report.json, test_output.txt, patch.diff, run_instance.log}
    OUT/MODEL.RUN_ID.json      (the run summary: make_run_report's counts and id lists, schema_version 2)

As in the harness, an instance is done when its report.json exists: a run killed part way is resumed
by running the same command again (reports are written whole, through a rename), and the summary is
computed from the files on disk, so it is the same whether the run went in one go or in several.
Instances that could not be graded (no environment, engine failure, a patch that does not apply) get
a run_instance.log saying why and no report: the harness counts them as errors and so does envfarm;
`infra_failure_ids` / `ambiguous_failure_ids` / `failure_reasons` label the failures that are not the
model's, by the harness's own log signatures (swebench.harness.infra_failure) and by envfarm's own
knowledge of what failed (an environment or the engine, never the patch).
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from envfarm.errors import EngineUnavailable, EnvfarmError, ImageMissing, PatchError, SandboxError
from envfarm.task import TaskSpec
from envfarm.verifiers import harness
from envfarm.verifiers.run import TestPatchError, TestRun, run_tests
from envfarm.verifiers.swe import reward_for

RunFn = Callable[[TaskSpec, str], TestRun]
Progress = Callable[[str, str], None]  # (instance id, outcome) after each instance
INFRA_ERRORS = (SandboxError, EngineUnavailable, ImageMissing)
INFRA_MARK = "envfarm-infrastructure-failure:"  # run_instance.log line naming a failure that is not the patch's
TIER_ENVIRONMENT, TIER_AMBIGUOUS = "environment", "ambiguous"


@dataclass
class Prediction:
    instance_id: str
    model: str
    patch: str | None
    where: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str) -> Prediction:
        for key in ("instance_id", "model_name_or_path"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise EnvfarmError(f"{where}: prediction field {key!r} is missing or not a string",
                                   "each prediction needs instance_id, model_name_or_path and model_patch")
        if "model_patch" not in row:
            raise EnvfarmError(f"{where}: prediction field 'model_patch' is missing", "give the patch (or null for none)")
        return cls(row["instance_id"], row["model_name_or_path"].replace("/", "__"), row["model_patch"], where)


def read_predictions(path: Path) -> list[Prediction]:
    """SWE-bench predictions: a JSON list, a JSON object keyed by instance id (sb-cli), or JSON Lines."""
    from envfarm.userfiles import read_text

    text = read_text(path, "predictions file", "pass --predictions FILE: SWE-bench predictions as JSON Lines")
    try:
        if text.lstrip().startswith("["):
            rows = [(f"{path}:item {i}", row) for i, row in enumerate(json.loads(text), 1)]
        elif text.lstrip().startswith("{") and "\n{" not in text.strip():
            data = json.loads(text)
            keyed = all(isinstance(v, dict) for v in data.values()) and "instance_id" not in data
            rows = [(f"{path}:{k}", {"instance_id": k, **v}) for k, v in data.items()] if keyed else [(f"{path}:1", data)]
        else:
            rows = [(f"{path}:{i}", json.loads(line)) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    except (json.JSONDecodeError, AttributeError) as exc:
        raise EnvfarmError(f"{path} is not JSON or JSON Lines ({exc})", "write predictions as SWE-bench does: one JSON object per line") from exc
    out = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise EnvfarmError(f"{where}: a prediction must be a JSON object", "write one {instance_id, model_name_or_path, model_patch} object per line")
        out.append(Prediction.from_row(row, where))
    if not out:
        raise EnvfarmError(f"{path} holds no prediction", "write one JSON object per line: instance_id, model_name_or_path, model_patch")
    seen: dict[str, str] = {}
    for p in out:
        if p.instance_id in seen:
            raise EnvfarmError(f"{p.where}: a second prediction for {p.instance_id} (the first is at {seen[p.instance_id]})", "keep one prediction per instance")
        seen[p.instance_id] = p.where
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


def instance_report(task: TaskSpec, patch: str | None, run: TestRun) -> dict[str, Any]:
    """The harness's per-instance report (get_eval_report's shape) for one run whose patch applied."""
    reward = reward_for(task, run)
    entry: dict[str, Any] = {"patch_is_None": patch is None, "patch_exists": patch is not None,
                             "patch_successfully_applied": True, "resolved": bool(reward.passed)}
    graded = reward.details.get("grade")
    if graded is not None:
        entry["tests_status"] = tests_status(graded["fail_to_pass"]["not_passed"], graded["pass_to_pass"]["not_passed"], task)
    if reward.details.get("reason"):  # why envfarm scored 0 without a test verdict (tampering, no report)
        entry["envfarm_reason"] = reward.details["reason"]
    return {task.instance_id: entry}


def infra_reason(exc: BaseException) -> str | None:
    """Why a failure is not the patch's (envfarm's own knowledge), or None when it may be."""
    from envfarm.tasks.importers.images import TaskEnvError

    if isinstance(exc, TaskEnvError):
        return "environment_unavailable"
    if isinstance(exc, ImageMissing):
        return "image_unavailable"
    if isinstance(exc, INFRA_ERRORS):
        return "container_unavailable"
    return None


def classify(log_text: str) -> tuple[str, str] | None:
    """(reason, tier) of a failure, as SWE-bench 5.0 labels them: envfarm's mark first, then the
    harness's own log signatures (`swebench.harness.infra_failure.classify_text`)."""
    for line in log_text.splitlines():
        if line.startswith(INFRA_MARK):
            return line[len(INFRA_MARK):].strip(), TIER_ENVIRONMENT
    found = harness.module("infra_failure").classify_text(log_text)
    return (str(found[0]), str(found[1])) if found else None


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a kill mid-write leaves no half report that a resume would count."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def instance_dir(out: Path, run_id: str, model: str, instance_id: str) -> Path:
    return out / "logs" / "run_evaluation" / run_id / model / instance_id


def grade_one(task: TaskSpec, patch: str, folder: Path, run: RunFn) -> str:
    """Run and grade one patch; write its files; the outcome (resolved | unresolved | error)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").unlink(missing_ok=True)
    _write(folder / "patch.diff", patch)
    try:
        test_run = run(task, patch)
    except PatchError as exc:  # the harness stops such an instance before grading: an error, no report
        _write(folder / "run_instance.log", f">>>>> Patch Apply Failed\n{exc.line()}\n")
        return "error"
    except TestPatchError as exc:  # the task's own test patch: the task is broken, not the model
        _write(folder / "run_instance.log", f"the task's test_patch does not apply: {exc.line()}\n")
        return "error"
    except EnvfarmError as exc:
        reason = infra_reason(exc)
        if reason is None:
            raise
        _write(folder / "run_instance.log", f"{INFRA_MARK} {reason}\n{exc.line()}\n")
        return "error"
    _write(folder / "test_output.txt", test_run.log_tail)
    report = instance_report(task, patch, test_run)
    _write(folder / "report.json", json.dumps(report, indent=4) + "\n")
    return "resolved" if report[task.instance_id]["resolved"] else "unresolved"


def check_predictions(tasks: dict[str, TaskSpec], predictions: list[Prediction], source: str) -> None:
    """Every prediction names a known task and one model: else one line naming the first that does not."""
    for p in predictions:
        if p.instance_id not in tasks:
            raise EnvfarmError(f"{p.where or 'predictions'}: prediction names instance {p.instance_id!r}, which is not among the tasks ({source})",
                               "import its dataset first (envfarm tasks import) or pass it with --tasks, or drop the prediction")
    models = sorted({p.model for p in predictions})
    if len(models) > 1:
        raise EnvfarmError(f"predictions from {len(models)} models ({', '.join(models)})", "evaluate one model per run (split the file by model_name_or_path)")


def evaluate(tasks: dict[str, TaskSpec], predictions: Iterable[Prediction], out: Path, run_id: str, run: RunFn, *,
             workers: int = 1, source: str = "the store", on_progress: Progress | None = None) -> dict[str, Any]:
    """Grade every prediction whose report is not written yet; write the harness's files; return the summary."""
    predictions = list(predictions)
    check_predictions(tasks, predictions, source)
    pending = [p for p in predictions if p.patch
               and not (instance_dir(out, run_id, p.model, p.instance_id) / "report.json").is_file()]
    waiting = {p.instance_id for p in pending}
    for p in predictions:
        if p.instance_id not in waiting and on_progress:
            on_progress(p.instance_id, "done before" if p.patch else "empty_patch")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(grade_one, tasks[p.instance_id], p.patch or "", instance_dir(out, run_id, p.model, p.instance_id), run): p
                   for p in pending}
        for future in as_completed(futures):
            outcome = future.result()
            if on_progress:
                on_progress(futures[future].instance_id, outcome)
    summary = run_summary(tasks, predictions, out, run_id)
    model = predictions[0].model if predictions else "none"
    _write(out / f"{model}.{run_id}.json", json.dumps(summary, indent=4) + "\n")
    return summary


def run_summary(tasks: dict[str, TaskSpec], predictions: list[Prediction], out: Path, run_id: str) -> dict[str, Any]:
    """make_run_report's summary, computed from the run's folder as the harness computes it."""
    by_id = {p.instance_id: p for p in predictions}
    ids: dict[str, set[str]] = {k: set() for k in ("completed", "resolved", "unresolved", "error", "incomplete", "empty_patch", "infra", "ambiguous")}
    for instance_id in tasks:
        p = by_id.get(instance_id)
        if p is None:
            ids["incomplete"].add(instance_id)
            continue
        if p.patch in ("", None):
            ids["empty_patch"].add(instance_id)
            continue
        report_file = instance_dir(out, run_id, p.model, instance_id) / "report.json"
        if not report_file.exists():
            ids["error"].add(instance_id)
            continue
        ids["completed"].add(instance_id)
        try:
            resolved = json.loads(report_file.read_text(encoding="utf-8"))[instance_id]["resolved"]
        except (json.JSONDecodeError, KeyError, TypeError):
            ids["error"].add(instance_id)
            continue
        ids["resolved" if resolved else "unresolved"].add(instance_id)
    reasons: dict[str, str] = {}
    for instance_id in ids["unresolved"] | ids["error"]:
        folder = instance_dir(out, run_id, by_id[instance_id].model, instance_id)
        text = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in (folder / "test_output.txt", folder / "run_instance.log") if f.exists())
        found = classify(text)
        if found:
            reasons[instance_id] = found[0]
            ids["infra" if found[1] == TIER_ENVIRONMENT else "ambiguous"].add(instance_id)
    return {
        "total_instances": len(tasks), "submitted_instances": len(predictions), "completed_instances": len(ids["completed"]),
        "resolved_instances": len(ids["resolved"]), "unresolved_instances": len(ids["unresolved"]),
        "infra_failure_instances": len(ids["infra"]), "ambiguous_failure_instances": len(ids["ambiguous"]),
        "empty_patch_instances": len(ids["empty_patch"]), "error_instances": len(ids["error"]),
        "completed_ids": sorted(ids["completed"]), "incomplete_ids": sorted(ids["incomplete"]), "empty_patch_ids": sorted(ids["empty_patch"]),
        "submitted_ids": sorted(by_id), "resolved_ids": sorted(ids["resolved"]), "unresolved_ids": sorted(ids["unresolved"]),
        "infra_failure_ids": sorted(ids["infra"]), "ambiguous_failure_ids": sorted(ids["ambiguous"]),
        "failure_reasons": dict(sorted(reasons.items())), "error_ids": sorted(ids["error"]), "schema_version": 2,
    }


def sandbox_runner(timeout: float, *, backend: str | None = None, prepare: Callable[[TaskSpec], TaskSpec] | None = None,
                   run_id: str = "eval") -> RunFn:
    """Run one patch with `run_tests` in a fresh sandbox from the task's image (the verifier's steps).

    `prepare` gives the task its environment first (`TaskImages.prepare`: build or pull, once per task).
    """
    from envfarm import sandbox as sandboxes

    def run(task: TaskSpec, patch: str) -> TestRun:
        task = prepare(task) if prepare else task
        with sandboxes.open(task.image, run_id=run_id, task_id=task.instance_id, backend=backend) as sandbox:
            return run_tests(sandbox, task, patch, timeout=timeout)

    return run


class TaskImages:
    """Each task's environment, made once per process (`importers.images.ensure_env`) and reused.

    A task whose recorded environment image is in the engine runs in it as is; on the Kubernetes
    backend images come from the cluster's registry, so the task's image is used as recorded.
    """

    def __init__(self, sources: Any, backend: str | None = None) -> None:
        self.sources = sources
        self.backend = backend
        self._done: dict[str, TaskSpec] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def prepare(self, task: TaskSpec) -> TaskSpec:
        from envfarm.engine import connect
        from envfarm.images.build import image_exists
        from envfarm.tasks.importers.base import with_environment
        from envfarm.tasks.importers.images import ensure_env

        if self.backend == "kubernetes":  # the cluster pulls: the row's image by the user's registry, or what was built and pushed
            from envfarm.tasks.importers.images import registry_ref

            if task.extra.get("environment") or not task.image:
                return task
            return task.model_copy(update={"image": registry_ref(task.image, getattr(self.sources, "registry", ""))})
        with self._guard:
            lock = self._locks.setdefault(task.instance_id, threading.Lock())
        with lock:
            if task.instance_id not in self._done:
                client = connect()
                if task.extra.get("environment") and task.image and image_exists(client, task.image):
                    self._done[task.instance_id] = task
                else:
                    env = ensure_env(task, self.sources, client)
                    self._done[task.instance_id] = with_environment(task, env.image, env.source)
            return self._done[task.instance_id]


def load_tasks(tasks_file: Path | None, fmt: str, wanted: Iterable[str] | None = None) -> tuple[dict[str, TaskSpec], str]:
    """(tasks by id, where they came from): a dataset file read as `tasks import` reads it, else the store."""
    if tasks_file is not None:
        from envfarm.tasks.importers import read_tasks

        return {t.instance_id: t for t in read_tasks(tasks_file, fmt)[1]}, str(tasks_file)
    from sqlalchemy import select

    from envfarm.store import TaskRow, open_store

    query = select(TaskRow).where(TaskRow.kind == "swe")
    ids = list(wanted) if wanted is not None else None
    if ids is not None:
        query = query.where(TaskRow.instance_id.in_(ids))
    with open_store().session(readonly=True) as session:
        rows = session.execute(query).scalars().all()
        return {r.instance_id: TaskSpec.model_validate(r.spec) for r in rows}, "the store at ENVFARM_HOME / ENVFARM_DB_URL"
