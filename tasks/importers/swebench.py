"""SWE-bench rows (SWE-bench, Lite, Verified, Multimodal, Multilingual; and envfarm's own export).

Test lists are JSON-encoded strings in the published data. The harness picks the log parser by
repository unless the row names one (`log_parser`, in rows made for swebench 5.x together with
`eval_type`, `eval_script` and `image`); either way the task carries the harness's id conventions.
A 5.x row's `eval_script` gives the task its test command (`importers.eval_script`), its `image` the
pre-built environment (`importers.images` pulls it from the registry the user names).
"""

from __future__ import annotations

from typing import Any

from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.importers.base import Importer, plain, test_list, text, timestamp
from envfarm.tasks.importers.eval_script import test_command, test_directives

REQUIRED = frozenset({"instance_id", "repo", "base_commit", "patch", "test_patch", "problem_statement", "FAIL_TO_PASS", "PASS_TO_PASS"})
OPTIONAL = frozenset({
    "hints_text", "created_at", "version", "environment_setup_commit",
    "difficulty",  # SWE-bench Verified
    "image_assets",  # SWE-bench Multimodal
    "image", "log_parser", "eval_type", "eval_script",  # rows made for swebench 5.x
    "image_name", "install_config", "test_ids",  # envfarm's own export
})


def swebench_fields(row: dict[str, Any], where: str) -> dict[str, Any]:
    """The SWE-bench columns every family shares, as TaskSpec fields."""
    return {
        "instance_id": text(row["instance_id"]),
        "repo": text(row["repo"]),
        "base_commit": text(row["base_commit"]),
        "patch": text(row.get("patch")),
        "test_patch": text(row.get("test_patch")),
        "problem_statement": text(row.get("problem_statement")),
        "hints_text": text(row.get("hints_text")),
        "created_at": timestamp(row.get("created_at"), where),
        "version": text(row.get("version")),
        "FAIL_TO_PASS": test_list(row["FAIL_TO_PASS"], "FAIL_TO_PASS", where),
        "PASS_TO_PASS": test_list(row["PASS_TO_PASS"], "PASS_TO_PASS", where),
        "environment_setup_commit": text(row.get("environment_setup_commit")),
        "test_ids": "swebench",
    }


def to_task(row: dict[str, Any], where: str) -> TaskSpec:
    install = plain(row.get("install_config")) or {}
    recipe: dict[str, Any] = dict(install) if isinstance(install, dict) else {}
    extra = {k: plain(row[k]) for k in ("difficulty", "image_assets") if row.get(k) not in (None, "")}
    if row.get("log_parser"):
        recipe["log_parser"] = f"swebench:{row['log_parser']}"
    for key in ("eval_type", "eval_script"):
        if row.get(key):
            recipe[key] = row[key]
    if row.get("eval_script"):  # the dataset's own test command (swebench 5.x rows), run by run_tests
        recipe["test_cmd"] = test_command(text(row["eval_script"]), where)
    elif not recipe.get("test_cmd"):  # no command given: envfarm's pytest default, on the files test_patch touches
        extra["test_directives"] = test_directives(text(row["test_patch"]), text(row["repo"]))
    return TaskSpec(
        **swebench_fields(row, where),
        image=text(row.get("image") or row.get("image_name")),
        install=InstallConfig(**recipe),
        source={"dataset": "swebench"},
        extra=extra,
    )


IMPORTER = Importer("swebench", REQUIRED, OPTIONAL, to_task, signature=frozenset({"environment_setup_commit", "FAIL_TO_PASS"}))
