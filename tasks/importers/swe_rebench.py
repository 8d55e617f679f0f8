"""SWE-rebench rows (nebius/SWE-rebench and its leaderboard sets).

Each row carries its own install recipe (`install_config`: python, packages, pip_packages, pre_install,
install, test_cmd, log_parser, ...), the frozen `requirements` and conda `environment` it was validated
with, and a pre-built `docker_image`. All are kept as given: the recipe becomes the task's
InstallConfig (its keys unchanged), the rest goes to `extra`; the test files its `test_patch` touches
become the command's targets (`extra.test_directives`), as the harness appends them. Ids follow the harness's conventions
(SWE-rebench grades with a fork of the SWE-bench harness).
"""

from __future__ import annotations

from typing import Any

from envfarm.errors import EnvfarmError
from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.importers.base import ImportRowError, Importer, plain, text
from envfarm.verifiers import harness
from envfarm.tasks.importers.eval_script import test_directives
from envfarm.tasks.importers.swebench import swebench_fields

REQUIRED = frozenset({"instance_id", "repo", "base_commit", "patch", "test_patch", "problem_statement", "FAIL_TO_PASS", "PASS_TO_PASS", "install_config"})
OPTIONAL = frozenset({"hints_text", "created_at", "version", "environment_setup_commit", "meta", "requirements", "environment",
                      "license_name", "docker_image", "image_name"})


def _harness_parser(name: str, repo: str) -> str:
    """The row's parser when the harness knows it by that name, else the one it picks for the repository."""
    try:
        harness.parser_for(name)
        return f"swebench:{name}"
    except EnvfarmError:
        return f"swebench:{repo}"


def to_task(row: dict[str, Any], where: str) -> TaskSpec:
    recipe = plain(row["install_config"])
    if not isinstance(recipe, dict):
        raise ImportRowError(f"{where}: field 'install_config' must be an object, got {type(recipe).__name__}", "give the recipe as a JSON object")
    recipe = dict(recipe)
    parser = recipe.pop("log_parser", None)
    if parser:
        recipe["source_log_parser"] = parser  # as given; grading uses the harness's parser of that name
        recipe["log_parser"] = _harness_parser(str(parser), text(row["repo"]))
    if isinstance(recipe.get("install"), str):
        recipe["install"] = [recipe["install"]]  # one shell command, as given
    if isinstance(recipe.get("test_cmd"), list):
        recipe["test_cmds"] = recipe["test_cmd"]
        recipe["test_cmd"] = " && ".join(recipe["test_cmd"])
    extra = {k: plain(row[k]) for k in ("meta", "requirements", "environment", "license_name") if row.get(k) not in (None, "")}
    extra["test_directives"] = test_directives(text(row["test_patch"]), text(row["repo"]))
    return TaskSpec(
        **swebench_fields(row, where),
        image=text(row.get("docker_image") or row.get("image_name")),
        install=InstallConfig(**recipe),
        source={"dataset": "swe-rebench"},
        extra=extra,
    )


IMPORTER = Importer("swe-rebench", REQUIRED, OPTIONAL, to_task, signature=frozenset({"install_config", "meta"}))
