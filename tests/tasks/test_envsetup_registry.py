"""The language registry: Python is always there, whatever registers first, and the types import no language.

The registry used to fill itself with Python only when it was empty, so a language registered before the
first lookup hid Python; and `base.py` imported `python.py` (lazily) while `python.py` imported `base.py`.
Both are checked in a fresh interpreter, where import order and registry state are those of a real run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import envfarm.tasks.envsetup.base as base

FRESH_REGISTRATION = """
from envfarm.tasks.envsetup import RECIPES, register, recipes_for

class FakeRecipes:
    language = "cobol"

fake = FakeRecipes()
register(fake)
assert recipes_for("cobol") is fake, RECIPES
python = recipes_for("python")
assert python.language == "python" and type(python).__name__ == "PythonRecipes", RECIPES
print("ok", sorted(RECIPES))
"""


def test_registering_another_language_first_keeps_python() -> None:
    result = subprocess.run([sys.executable, "-c", FRESH_REGISTRATION], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "['cobol',", "'python']"]


def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    """Whichever module a caller imports first, the package comes up whole (no half-initialised cycle)."""
    for module in ("base", "python", "build", "failures"):
        code = f"import envfarm.tasks.envsetup.{module}; from envfarm.tasks.envsetup import recipes_for; recipes_for('python')"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{module}: {result.stderr}"


def test_the_types_module_imports_no_language_and_not_the_registry() -> None:
    tree = ast.parse(Path(base.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.startswith("envfarm.tasks.envsetup")}, imported
