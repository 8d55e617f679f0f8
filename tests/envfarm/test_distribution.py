"""The installable distribution: it claims only the `envfarm` import name, so Prime Intellect's `verifiers`
(and any other `tasks` / `trainer`) installs beside it, and `pip install .` pulls no test tooling.

The wheel is built from this checkout and installed with Prime Intellect's real `verifiers` wheel into a fresh
venv, all offline (`make setup` downloads that wheel into .venv/wheelhouse). envfarm's runtime dependencies
come from the project venv through a path entry placed after the fresh venv's own site-packages, so whatever
the fresh venv installs wins.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / ".venv" / "wheelhouse"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the files git tracks or would track: setuptools reuses a `build/` folder in the
    source tree, so a build in the checkout could ship modules that no longer exist."""
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True, text=True, cwd=out)
    (built,) = out.glob("envfarm-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_only_the_envfarm_namespace_and_its_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"envfarm", next(t for t in top if t.endswith(".dist-info"))}, top
    for expected in ("envfarm/tasks/pipeline.py", "envfarm/verifiers/run.py", "envfarm/trainer/loop/run.py",
                     "envfarm/trainer/checkpoints/tiny/model.safetensors", "envfarm/trainer/configs/demo.yaml",
                     "envfarm/store/migrations/script.py.mako", "envfarm/sandbox/factory.py"):
        assert expected in names, expected
    assert not [n for n in names if n.startswith(("envfarm/fleet/emulator", "envfarm/fleet/sim"))], "no test harness in the fleet package"
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for tooling in ("kmock", "pytest-asyncio", "pytest"):
        rows = [r for r in requires if r.split()[1].split("[")[0].split("=")[0].lower() == tooling]
        assert rows and all('extra == "test"' in r for r in rows), (tooling, rows)


@pytest.mark.slow
def test_prime_intellects_verifiers_and_envfarm_install_side_by_side(wheel: Path, tmp_path: Path) -> None:
    prime = sorted(WHEELHOUSE.glob("verifiers-*.whl"))
    if not prime:
        pytest.skip(f"Prime Intellect's verifiers wheel missing from {WHEELHOUSE}: run 'make setup'")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel), str(prime[-1])],
                   check=True, capture_output=True, text=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_envfarm_runtime_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = """
import importlib.metadata as md, importlib.util, json, sys
import envfarm.cli, envfarm.verifiers, envfarm.tasks.patchsplit, envfarm.trainer.model.config
from envfarm.verifiers.logs import parse_log
from envfarm.trainer.loop.config import load_config
spec = importlib.util.find_spec("verifiers")
prime_files = {str(f) for f in md.distribution("verifiers").files}
print(json.dumps({
    "prime_origin": spec.origin, "prime_version": md.version("verifiers"),
    "origin_is_primes": any(spec.origin.endswith(f) for f in prime_files if f.endswith("__init__.py")),
    "envfarm_verifiers": envfarm.verifiers.__file__,
    "top_level_loaded": sorted(n for n in ("verifiers", "tasks", "trainer") if n in sys.modules),
    "demo_checkpoint": load_config(None).policy.checkpoint,
}))
"""
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["origin_is_primes"] and seen["prime_origin"].startswith(str(site)), seen
    assert seen["envfarm_verifiers"].startswith(str(site / "envfarm" / "verifiers")), seen
    assert seen["top_level_loaded"] == [], "importing envfarm loads no top-level verifiers/tasks/trainer"
    assert Path(seen["demo_checkpoint"], "model.safetensors").is_file(), "the tiny checkpoint ships as package data"
    cli = subprocess.run([str(env_dir / "bin" / "envfarm"), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0 and "train" in cli.stdout and "mine" in cli.stdout, cli.stderr[-1000:]
