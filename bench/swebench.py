"""SWE-bench compatibility benchmark: parity with the official harness on its own logs, grading
throughput under the harness's conventions, and dataset import throughput.

    python -m bench.swebench          (writes bench/results/swebench.json)

- parity: every stored harness log (tests/verifiers/data/swebench_logs) graded by envfarm under the
  harness's conventions, compared with the report the harness wrote (`resolved`, and each test).
- grading MB/s: parse + grade of those logs, repeated; envfarm's native parser on the same logs beside it.
- import rows/s: the stored SWE-bench row, repeated into a JSONL and a Parquet file, read and stored
  (SQLite in a temporary folder) with `envfarm tasks import`'s code.
- eval seconds per instance: `envfarm eval`'s code (`harness_eval.evaluate`: a fresh sandbox, run_tests,
  grading, the harness's files) on the local engine, one gold prediction for the acme/calc task of
  tests/tasks/swe_import_fixtures.py (a SWE-rebench row; its environment built from the row's recipe
  first, timed apart), repeated under new run ids; median and every run.
The machine's load is recorded as measured at the start and the end (bench.common).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine_load, machine_notes, write_results
from envfarm.store.db import Store
from envfarm.task import TaskSpec
from envfarm.tasks.importers import import_path
from envfarm.verifiers.grading import grade
from envfarm.verifiers.logs import parse_log
from envfarm.verifiers.logs.harness_log import read_harness_log

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "tests" / "verifiers" / "data" / "swebench_logs"
ROW = ROOT / "tests" / "verifiers" / "data" / "datasets" / "swebench_astropy__astropy-11693.jsonl"
NATIVE = {"django/django": "django", "pytest-dev/pytest": "pytest", "sympy/sympy": "sympy"}


def _repo(instance_id: str) -> str:
    owner, rest = instance_id.split("__", 1)
    return f"{owner}/{rest.rsplit('-', 1)[0]}"


def _samples() -> list[tuple[str, bytes, dict[str, Any]]]:
    out = []
    for folder in sorted(p for p in LOGS.iterdir() if (p / "report.json").is_file()):
        report = json.loads((folder / "report.json").read_text())[folder.name]
        out.append((folder.name, (folder / "test_output.log").read_bytes(), report))
    return out


def _read(parser: str, raw: bytes):  # type: ignore[no-untyped-def]
    """A harness log under the harness's conventions is read as the harness reads it; else envfarm's parser."""
    return read_harness_log(raw, parser.removeprefix("swebench:")) if parser.startswith("swebench:") else parse_log(parser, raw)


def _lists(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    s = report["tests_status"]
    return s["FAIL_TO_PASS"]["success"] + s["FAIL_TO_PASS"]["failure"], s["PASS_TO_PASS"]["success"] + s["PASS_TO_PASS"]["failure"]


def parity(samples: list[tuple[str, bytes, dict[str, Any]]], parser_for: Any) -> dict[str, Any]:
    logs_agree = tests_agree = tests_total = 0
    misses: list[str] = []
    for name, raw, report in samples:
        f2p, p2p = _lists(report)
        result = grade(_read(parser_for(name), raw), f2p, p2p)
        logs_agree += result.resolved == report["resolved"]
        for key, graded in (("FAIL_TO_PASS", result.fail_to_pass), ("PASS_TO_PASS", result.pass_to_pass)):
            for ok, ids in ((True, report["tests_status"][key]["success"]), (False, report["tests_status"][key]["failure"])):
                for test_id in ids:
                    tests_total += 1
                    agree = (test_id not in graded.not_passed) is ok
                    tests_agree += agree
                    if not agree and len(misses) < 20:
                        misses.append(f"{name}: {test_id}")
    return {"logs": len(samples), "resolved_agree": logs_agree, "resolved_parity": round(logs_agree / len(samples), 4),
            "tests": tests_total, "tests_agree": tests_agree, "test_parity": round(tests_agree / tests_total, 4), "first_misses": misses}


def grading_throughput(samples: list[tuple[str, bytes, dict[str, Any]]], parser_for: Any, repeats: int = 20) -> dict[str, Any]:
    total = sum(len(raw) for _, raw, _ in samples) * repeats
    start = time.perf_counter()
    for _ in range(repeats):
        for name, raw, report in samples:
            grade(_read(parser_for(name), raw), *_lists(report))
    seconds = time.perf_counter() - start
    return {"bytes": total, "seconds": round(seconds, 3), "mb_per_s": round(total / seconds / 1e6, 2)}


def import_throughput(rows: int = 2000) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = json.loads(ROW.read_text().splitlines()[0])
    copies = [row | {"instance_id": f"astropy__astropy-{100000 + i}"} for i in range(rows)]
    out: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "rows.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in copies))
        parquet = Path(tmp) / "rows.parquet"
        pq.write_table(pa.Table.from_pylist(copies), parquet)
        for label, path in (("jsonl", jsonl), ("parquet", parquet)):
            store = Store(f"sqlite:///{Path(tmp) / f'{label}.db'}")
            start = time.perf_counter()
            first = import_path(store, path, "swebench")
            fresh = time.perf_counter() - start
            start = time.perf_counter()
            again = import_path(store, path, "swebench")
            unchanged = time.perf_counter() - start
            store.dispose()
            assert len(first.inserted) == rows and len(again.unchanged) == rows
            out[label] = {"new_rows_per_s": round(rows / fresh, 1), "unchanged_rows_per_s": round(rows / unchanged, 1)}
    return out


def eval_seconds(repeats: int = 5) -> dict[str, Any]:
    import os
    import statistics
    import sys

    os.environ.setdefault("PYTHON", sys.executable)
    from envfarm.tasks.envsetup.base import BuildOptions
    from envfarm.tasks.harness_eval import Prediction, TaskImages, evaluate, sandbox_runner
    from envfarm.tasks.importers import read_tasks
    from envfarm.tasks.importers.images import EnvSources
    from tests.tasks.fixtures import build_wheelhouse
    from tests.tasks.swe_import_fixtures import make_project, rebench_row, write_jsonl

    with tempfile.TemporaryDirectory(prefix="bench-swebench-") as tmp:
        root = Path(tmp)
        project = make_project(root)
        wheels = tuple((p.name, p.read_bytes()) for p in sorted(build_wheelhouse(root / "wheels").glob("*.whl")))
        sources = EnvSources(mirrors=project["mirrors"], options=BuildOptions(wheelhouse=wheels, offline=True))
        (task,) = read_tasks(write_jsonl(root / "rows.jsonl", [rebench_row(project)]))[1]
        images = TaskImages(sources)
        start = time.perf_counter()
        prepared = images.prepare(task)
        env_seconds = time.perf_counter() - start
        run = sandbox_runner(600, prepare=images.prepare, run_id="bench-swebench")
        prediction = Prediction(task.instance_id, "bench", project["patch"], "bench")
        seconds = []
        for index in range(repeats):
            start = time.perf_counter()
            summary = evaluate({task.instance_id: task}, [prediction], root / "out", f"r{index}", run)
            seconds.append(round(time.perf_counter() - start, 2))
            assert summary["resolved_ids"] == [task.instance_id], summary
    return {"engine": "local (Podman through the Docker API)", "instances": repeats, "seconds_p50": statistics.median(seconds),
            "seconds": seconds, "environment": prepared.extra["environment"]["source"], "environment_seconds": round(env_seconds, 2)}


def main() -> None:
    load = machine_load()
    samples = _samples()
    harness_parser = lambda name: TaskSpec(instance_id=name, repo=_repo(name), test_ids="swebench").log_parser  # noqa: E731
    native_parser = lambda name: NATIVE[_repo(name)]  # noqa: E731
    results = {
        "parity_swebench_convention": parity(samples, harness_parser),
        "parity_envfarm_native_ids": parity(samples, native_parser),
        "grading_swebench_convention": grading_throughput(samples, harness_parser),
        "grading_envfarm_native": grading_throughput(samples, native_parser),
        "import": import_throughput(),
        "eval_per_instance": eval_seconds(),
        "machine": machine_notes(load),
    }
    path = write_results("swebench", results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
