"""`envfarm tasks import`: dataset rows to TaskSpec, idempotent by instance id, all or nothing.

The SWE-bench row is a real one (tests/verifiers/data/datasets/README.md). No row of the other
datasets could be committed, so their rows are built here from it in each dataset's layout: these
tests check the field mapping of those formats, not a real row of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from envfarm.store import TaskRow
from envfarm.tasks.importers import IMPORTERS, ImportRowError, detect, import_path, read_tasks

DATA = Path(__file__).parents[1] / "verifiers" / "data" / "datasets"
SWEBENCH = DATA / "swebench_astropy__astropy-11693.jsonl"


def _row() -> dict[str, Any]:
    return json.loads(SWEBENCH.read_text().splitlines()[0])


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _stored(store) -> dict[str, TaskRow]:  # type: ignore[no-untyped-def]
    with store.session(readonly=True) as session:
        return {r.instance_id: r for r in session.execute(select(TaskRow)).scalars()}


def test_a_swebench_row_keeps_its_ids_lists_and_fields() -> None:
    name, (task,) = read_tasks(SWEBENCH)
    row = _row()
    assert name == "swebench"
    assert (task.instance_id, task.repo, task.base_commit, task.version) == ("astropy__astropy-11693", "astropy/astropy", row["base_commit"], "4.2")
    assert task.FAIL_TO_PASS == json.loads(row["FAIL_TO_PASS"]) and task.PASS_TO_PASS == json.loads(row["PASS_TO_PASS"])
    assert (task.patch, task.test_patch, task.environment_setup_commit) == (row["patch"], row["test_patch"], row["environment_setup_commit"])
    assert task.created_at is not None and task.created_at.isoformat() == "2021-05-04T10:05:33+00:00"
    assert task.test_ids == "swebench" and task.log_parser == "swebench:astropy/astropy"


def test_parquet_reads_the_same_task_as_jsonl(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow (pinned in pyproject.toml) is not installed")
    import pyarrow.parquet as pq

    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist([_row()]), path)
    assert read_tasks(path)[1] == read_tasks(SWEBENCH)[1]


def test_an_unknown_field_is_refused_by_name_and_row() -> None:
    with pytest.raises(ImportRowError) as err:
        read_tasks(DATA / "swebench_as_found_with_extra_field.json", "swebench")
    assert "swebench_as_found_with_extra_field.json:row 1" in err.value.problem and "'_download_metadata'" in err.value.problem


def test_a_missing_field_is_refused_by_name_and_row(tmp_path: Path) -> None:
    bad = _row()
    del bad["base_commit"]
    path = _write_jsonl(tmp_path / "rows.jsonl", [_row() | {"instance_id": "astropy__astropy-1"}, bad])
    with pytest.raises(ImportRowError, match=r"rows\.jsonl:2: required field 'base_commit' is missing"):
        read_tasks(path, "swebench")


def test_import_is_idempotent_by_instance_id(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = import_path(store, SWEBENCH)
    again = import_path(store, SWEBENCH)
    assert (first.inserted, again.inserted, again.unchanged) == (["astropy__astropy-11693"], [], ["astropy__astropy-11693"])
    changed = _write_jsonl(tmp_path / "v2.jsonl", [_row() | {"hints_text": "new hint"}])
    assert import_path(store, changed).updated == ["astropy__astropy-11693"]
    stored = _stored(store)["astropy__astropy-11693"]
    assert stored.status == "imported" and stored.spec["hints_text"] == "new hint" and stored.spec["test_ids"] == "swebench"


def test_nothing_is_written_when_any_row_fails(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A conflict found inside the transaction (an id the miner owns) rolls back the rows before it."""
    from envfarm.task import TaskSpec

    mined = TaskSpec(instance_id="astropy__astropy-2", repo="astropy/astropy", FAIL_TO_PASS=["t"])
    with store.session() as session:
        session.add(TaskRow(instance_id=mined.instance_id, repo=mined.repo, status="validated", spec=mined.model_dump(mode="json")))
    path = _write_jsonl(tmp_path / "rows.jsonl", [_row() | {"instance_id": "astropy__astropy-1"}, _row() | {"instance_id": "astropy__astropy-2"}])
    with pytest.raises(ImportRowError, match="already in the store as a validated task"):
        import_path(store, path)
    assert set(_stored(store)) == {"astropy__astropy-2"} and _stored(store)["astropy__astropy-2"].status == "validated"


# --- the other layouts, built from the real row -------------------------------------------------

def _rebench_row() -> dict[str, Any]:
    row = _row()
    return row | {
        "FAIL_TO_PASS": json.loads(row["FAIL_TO_PASS"]), "PASS_TO_PASS": json.loads(row["PASS_TO_PASS"]),
        "install_config": {"python": "3.9", "install": "pip install -e .[test]", "test_cmd": "pytest --no-header -rA --tb=no -p no:cacheprovider",
                           "log_parser": "parse_log_pytest", "packages": "requirements.txt", "pre_install": ["apt-get update"], "reqs_path": ["requirements.txt"]},
        "meta": {"has_test_patch": True, "is_lite": False, "num_modified_files": 1}, "requirements": "numpy==1.20.2\n",
        "environment": "name: testbed\n", "license_name": "BSD 3-Clause", "docker_image": "swerebench/sweb.eval.x86_64.astropy_1776_astropy-11693",
    }


def _gym_row() -> dict[str, Any]:
    row = _row()
    del row["environment_setup_commit"]
    return row | {"FAIL_TO_PASS": json.loads(row["FAIL_TO_PASS"]), "PASS_TO_PASS": json.loads(row["PASS_TO_PASS"])}


def _smith_row() -> dict[str, Any]:
    row = _row()
    return {"instance_id": "astropy__astropy.38322105.func_pm_remove_assign__k2q1", "repo": "swesmith/astropy__astropy.38322105",
            "patch": row["patch"], "FAIL_TO_PASS": json.loads(row["FAIL_TO_PASS"]), "PASS_TO_PASS": json.loads(row["PASS_TO_PASS"]),
            "created_at": row["created_at"], "image_name": "swebench/swesmith.x86_64.astropy_1776_astropy.38322105",
            "problem_statement": row["problem_statement"]}


def _multi_row() -> dict[str, Any]:
    row = _row()
    outcome = {"run": "FAIL", "test": "FAIL", "fix": "PASS"}
    return {"org": "astropy", "repo": "astropy", "number": 11693, "instance_id": "astropy__astropy-11693", "state": "closed",
            "title": "Warn instead of raising on NoConvergence", "body": "", "base": {"label": "astropy:main", "ref": "main", "sha": row["base_commit"]},
            "resolved_issues": [{"number": 11446, "title": "'WCS.all_world2pix' failed to converge", "body": row["problem_statement"]}],
            "fix_patch": row["patch"], "test_patch": row["test_patch"],
            "f2p_tests": {t: outcome for t in json.loads(row["FAIL_TO_PASS"])},
            "p2p_tests": {t: {"run": "PASS", "test": "PASS", "fix": "PASS"} for t in json.loads(row["PASS_TO_PASS"])},
            "s2p_tests": {}, "n2p_tests": {}}


def _r2e_row() -> dict[str, Any]:
    row = _row()
    expected = {t: "PASSED" for t in json.loads(row["PASS_TO_PASS"]) + json.loads(row["FAIL_TO_PASS"])}
    return {"repo_name": "astropy", "commit_hash": row["base_commit"], "docker_image": "namanjain12/astropy_final:38322105",
            "problem_statement": row["problem_statement"], "expected_output_json": json.dumps(expected), "modified_files": ["astropy/wcs/wcsapi/fitswcs.py"]}


LAYOUTS = {"swe-rebench": _rebench_row, "swe-gym": _gym_row, "swe-smith": _smith_row, "multi-swe-bench": _multi_row, "r2e-gym": _r2e_row}


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_auto_detects_each_layout(fmt: str) -> None:
    assert detect(LAYOUTS[fmt](), "row 1").name == fmt
    assert detect(_row(), "row 1").name == "swebench"


def test_swe_rebench_keeps_its_recipe_and_image() -> None:
    task = IMPORTERS["swe-rebench"].convert(_rebench_row(), "row 1")
    assert task.image == "swerebench/sweb.eval.x86_64.astropy_1776_astropy-11693"
    assert task.install.python == "3.9" and task.install.install == ["pip install -e .[test]"]
    assert task.install.test_cmd == "pytest --no-header -rA --tb=no -p no:cacheprovider"
    recipe = task.install.model_dump()
    assert recipe["packages"] == "requirements.txt" and recipe["pre_install"] == ["apt-get update"] and recipe["source_log_parser"] == "parse_log_pytest"
    assert task.log_parser == "swebench:parse_log_pytest"
    assert task.extra["requirements"] == "numpy==1.20.2\n" and task.extra["meta"]["num_modified_files"] == 1


def test_swe_smith_keeps_the_bug_patch_apart_from_the_fix() -> None:
    task = IMPORTERS["swe-smith"].convert(_smith_row(), "row 1")
    assert (task.repo, task.base_commit, task.patch) == ("astropy/astropy", "38322105", "")
    assert task.extra["bug_patch"] == _row()["patch"] and task.source["mirror"] == "swesmith/astropy__astropy.38322105"
    assert task.image.startswith("swebench/swesmith.") and task.log_parser == "swebench:parse_log_pytest"


def test_multi_swe_bench_lists_come_from_its_outcome_maps() -> None:
    task = IMPORTERS["multi-swe-bench"].convert(_multi_row(), "row 1")
    assert task.FAIL_TO_PASS == json.loads(_row()["FAIL_TO_PASS"]) and task.PASS_TO_PASS == sorted(json.loads(_row()["PASS_TO_PASS"]))
    assert task.base_commit == _row()["base_commit"] and task.patch == _row()["patch"]
    assert task.extra["f2p_tests"] and task.source["pull_request"].endswith("/astropy/astropy/pull/11693")


def test_r2e_gym_gets_an_id_from_repository_and_commit() -> None:
    task = IMPORTERS["r2e-gym"].convert(_r2e_row(), "row 1")
    assert task.instance_id == "astropy-3832210580d5" and task.image == "namanjain12/astropy_final:38322105"
    assert len(task.PASS_TO_PASS) == 28 and task.extra["expected_output"]


def test_the_cli_imports_and_names_a_bad_row(tmp_path: Path) -> None:
    env = {**os.environ, "ENVFARM_DB_URL": f"sqlite:///{tmp_path / 'cli.db'}", "ENVFARM_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "envfarm.cli", "tasks", "import"]
    ok = subprocess.run([*cmd, str(SWEBENCH)], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "1 swebench row(s): 1 new, 0 updated, 0 unchanged" in ok.stderr
    bad = subprocess.run([*cmd, str(DATA / "swebench_as_found_with_extra_field.json"), "--format", "swebench"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "'_download_metadata' is not part of the swebench format" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


EVAL_SH = Path(__file__).parents[1] / "verifiers" / "data" / "swebench_logs" / "django__django-11049" / "eval.sh"


def test_a_swebench5_eval_script_becomes_its_environment_and_test_lines(tmp_path: Path) -> None:
    """A real eval.sh the harness wrote (django__django-11049): run_tests does the reset and the test patch
    itself, so the command keeps the environment lines and the test line, and nothing of git's."""
    import shlex

    row = _row() | {"eval_script": EVAL_SH.read_text(), "image": "swebench/sweb.eval.x86_64.astropy_1776_astropy-11693:latest",
                    "log_parser": "parse_log_astropy", "eval_type": "pass_and_fail"}
    (task,) = read_tasks(_write_jsonl(tmp_path / "sb5.jsonl", [row]))[1]
    argv = shlex.split(task.install.test_cmd)
    assert argv[:2] == ["bash", "-c"] and task.image == row["image"] and task.log_parser == "swebench:parse_log_astropy"
    script = argv[2].splitlines()
    assert script[:4] == ["set -uo pipefail", "source /opt/miniconda3/bin/activate", "conda activate testbed", "cd /testbed"]
    assert "python -m pip install -e ." in script and "export LC_ALL=en_US.UTF-8" in script
    assert script[-1] == "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 model_fields.test_durationfield"
    assert not [line for line in script if line.startswith(("git ", "diff ", "EOF_", "SWEBENCH_TEST_EXIT_CODE"))]


def test_an_eval_script_without_test_markers_is_refused_by_row_and_field(tmp_path: Path) -> None:
    row = _row() | {"eval_script": "#!/bin/bash\npytest\n"}
    with pytest.raises(ImportRowError, match=r"rows\.jsonl:1: field 'eval_script' has no test section"):
        read_tasks(_write_jsonl(tmp_path / "rows.jsonl", [row]), "swebench")
