"""acme/calc as a SWE-bench-family dataset would publish it: a small repository made with git (and its
bare mirror), one task, and that task as a SWE-rebench row (install recipe) and a SWE-bench 5.x row
(eval script + pre-built image name). Used by tests/tasks/test_import_environments.py and bench/swebench.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .fixtures import git, write

CALC = "def add(a, b):\n    return a - b\n\n\ndef neg(a):\n    return -a\n"
TESTS = "from calc import add, neg\n\n\ndef test_neg():\n    assert neg(2) == -2\n"
NEW_TESTS = TESTS + "\n\ndef test_add():\n    assert add(2, 3) == 5\n"
IMAGE = "swebench/sweb.eval.x86_64.acme_1776_calc-2:latest"


def _diff(repo: Path, path: str, new: str) -> str:
    old = (repo / path).read_text()
    (repo / path).write_text(new)
    out = git(repo, "diff", "--", path) + "\n"
    (repo / path).write_text(old)
    return out


def make_project(root: Path) -> dict[str, Any]:
    """The repository, its mirror under root/mirrors, and the task's patches."""
    repo = root / "calc-work"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, {
        "pyproject.toml": '[build-system]\nrequires=["setuptools>=61"]\nbuild-backend="setuptools.build_meta"\n'
                          '[project]\nname="calc"\nversion="0.1.0"\n[tool.setuptools]\npackages=["calc"]\n',
        "calc/__init__.py": CALC,
        "tests/test_calc.py": TESTS,
        ".gitignore": "*.egg-info/\n__pycache__/\n",
    })
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    base = git(repo, "rev-parse", "HEAD")
    mirrors = root / "mirrors"
    mirrors.mkdir()
    subprocess.run(["git", "clone", "-q", "--mirror", str(repo), str(mirrors / "acme__calc.git")], check=True)
    return {"root": root, "mirrors": mirrors, "base": base,
            "patch": _diff(repo, "calc/__init__.py", CALC.replace("a - b", "a + b")),
            "wrong": _diff(repo, "calc/__init__.py", CALC.replace("a - b", "a * b")),
            "test_patch": _diff(repo, "tests/test_calc.py", NEW_TESTS)}


def _common(project: dict[str, Any]) -> dict[str, Any]:
    return {"instance_id": "acme__calc-2", "repo": "acme/calc", "base_commit": project["base"], "patch": project["patch"],
            "test_patch": project["test_patch"], "problem_statement": "add() subtracts", "hints_text": "", "created_at": "2024-02-01T00:00:00Z",
            "version": "0.1", "environment_setup_commit": project["base"],
            "FAIL_TO_PASS": json.dumps(["tests/test_calc.py::test_add"]), "PASS_TO_PASS": json.dumps(["tests/test_calc.py::test_neg"])}


def rebench_row(project: dict[str, Any]) -> dict[str, Any]:
    recipe = {"python": "3.11", "packages": "", "pip_packages": ["pytest"], "pre_install": [], "install": "python -m pip install -e .",
              "test_cmd": "pytest -rA", "log_parser": "parse_log_pytest"}
    return _common(project) | {"install_config": recipe, "meta": {"has_test_patch": True}, "docker_image": ""}


def swebench5_row(project: dict[str, Any]) -> dict[str, Any]:
    script = "\n".join([
        "#!/bin/bash", "set -uxo pipefail", "cd /testbed", "git config --global --add safe.directory /testbed", "git status",
        f"git checkout {project['base']} tests/test_calc.py", "git apply -v - <<'EOF_114329324912'", project["test_patch"].rstrip("\n"),
        "EOF_114329324912", ": '>>>>> Start Test Output'", "pytest -rA tests/test_calc.py", ": '>>>>> End Test Output'",
        f"git checkout {project['base']} tests/test_calc.py", ""])
    return _common(project) | {"image": IMAGE, "eval_script": script, "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail"}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
