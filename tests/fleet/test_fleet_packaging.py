"""The runtime import path carries no test tooling: the controller, the sandbox backends and the CLI
import without kmock, and the emulator says how to get it when it is missing."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import envfarm.fleet
import envfarm.sandbox

# Run in a fresh interpreter where importing kmock (or pytest-asyncio, which kmock's plugin needs) fails.
BLOCK = "import sys; sys.modules['kmock'] = None; sys.modules['pytest_asyncio'] = None\n"


def run_without_kmock(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=300)


def runtime_modules() -> list[str]:
    found = ["envfarm.cli"]
    for package in (envfarm.fleet, envfarm.sandbox):
        found += [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
    return found


def test_the_runtime_modules_import_without_kmock() -> None:
    modules = runtime_modules()
    assert {"envfarm.fleet.controller", "envfarm.fleet.cli", "envfarm.sandbox.claim", "envfarm.sandbox.kubernetes"} <= set(modules)
    proc = run_without_kmock(f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
                             "assert sys.modules.get('kmock') is None\nprint('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_envfarm_fleet_holds_no_emulator_or_simulator() -> None:
    names = {m.name for m in pkgutil.iter_modules(envfarm.fleet.__path__)}
    assert not names & {"emulator", "sim", "testing"}
    sources = Path(envfarm.fleet.__file__).parent.glob("*.py")
    importing = re.compile(r"^\s*(import|from)\s+(kmock|envfarm\.testing)\b", re.MULTILINE)
    assert [path.name for path in sources if importing.search(path.read_text())] == []


def test_the_emulator_without_kmock_is_one_error_naming_the_test_extra() -> None:
    proc = run_without_kmock("from envfarm.errors import EnvfarmError\n"
                             "try:\n    import envfarm.testing.kube_emulator\n"
                             "except EnvfarmError as exc:\n    print(exc.fix)\n")
    assert proc.returncode == 0 and "pip install 'envfarm[test]'" in proc.stdout, proc.stderr[-2000:]


def test_the_simulator_needs_no_kmock() -> None:
    proc = run_without_kmock("import envfarm.testing.fleet_sim\nprint('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
