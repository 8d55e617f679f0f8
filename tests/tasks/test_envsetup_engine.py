"""The repair loop on the real engine: a repository whose tests import a package it never declares.

Offline (the session wheelhouse, `--no-index`): the first build installs the project, collection fails
on `No module named 'tinydep'`, the loop adds the providing package and the second build collects and
runs the sample. The stored recipe (the install steps) carries the repair, so it rebuilds alone."""

from __future__ import annotations

import pytest

from .fixtures import git, write

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def local_repo(tmp_path, name: str, files: dict[str, str]):  # type: ignore[no-untyped-def]
    """A one-commit repository `acme/<name>` with a setuptools project `<name>`, mirrored: (mirror, head)."""
    from envfarm.tasks.mirror import Mirror

    src = tmp_path / name
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    write(src, {"pyproject.toml": '[build-system]\nrequires=["setuptools>=61"]\nbuild-backend="setuptools.build_meta"\n'
                                  f'[project]\nname="{name}"\nversion="0.1.0"\n[tool.setuptools]\npackages=["{name}"]\n', **files})
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "x")
    mirror = Mirror.ensure(tmp_path / "mirrors", f"acme/{name}", str(src))
    return mirror, mirror.git_bytes("rev-parse", "HEAD").decode().strip()


def offline(fixture_world, base_image: str, **more):  # type: ignore[no-untyped-def]
    from envfarm.tasks.envsetup.base import BuildOptions

    wheels = tuple((p.name, p.read_bytes()) for p in sorted(fixture_world["wheelhouse"].iterdir()))
    return BuildOptions(wheelhouse=wheels, offline=True, base_image=base_image, **more)


def test_missing_module_is_repaired_and_recorded(fixture_world, engine_client, base_image, tmp_path):
    from envfarm.images import ensure_image
    from envfarm.tasks.envsetup import recipes_for
    from envfarm.tasks.envsetup.build import build_env, env_recipe

    mirror, head = local_repo(tmp_path, "undeclared", {
        "undeclared/__init__.py": "def triple(x):\n    return 3 * x\n",
        "tests/test_u.py": "import tinydep\nfrom undeclared import triple\n\n\ndef test_triple():\n    assert triple(2) == 6 == tinydep.double(3)\n",
    })
    options = offline(fixture_world, base_image, max_builds=4)

    result = build_env(mirror, "acme/undeclared", "0.1", head, None, ["tests/test_u.py"], options, client=engine_client)

    assert result.ok, result.reason
    failed, repaired = result.attempts[0], result.attempts[-1]
    assert failed.reason_class == "test_collection" and "No module named 'tinydep'" in failed.reason
    assert repaired.ok and repaired.repairs == ["repair: module 'tinydep' missing: tinydep"]
    assert result.install is not None and "tinydep" in result.install.install[-1].split()
    # The stored recipe alone (no repair loop) rebuilds the same image: the cache answers with the same tag.
    strategy = recipes_for("python").strategies(mirror, head, None, options)[0]
    rebuilt = strategy.__class__(**{**strategy.__dict__, "install": tuple(result.install.install), "name": result.install.strategy,
                                    "notes": tuple(repaired.repairs), "plan": None})
    tooling = ensure_image(recipes_for("python").tooling(rebuilt.base_image), engine_client).tag
    again = ensure_image(env_recipe(mirror.bundle(head), "acme/undeclared", "0.1", head, rebuilt, ["tests/test_u.py"], options, tooling), engine_client)
    assert again.tag == result.image and again.cached


def test_agent_stage_repairs_what_the_rules_cannot(fixture_world, engine_client, base_image, tmp_path):
    """Off by default; with a (scripted) policy, the model's steps are built for real and kept in the recipe."""
    from envfarm.agent.protocol import ToolCall
    from envfarm.agent.scripted import ScriptedPolicy
    from envfarm.tasks.envsetup.build import build_env

    mirror, head = local_repo(tmp_path, "needsdata", {
        "needsdata/__init__.py": "",
        "tests/test_d.py": "DATA = open('/testbed/fixtures.txt').read()\n\n\ndef test_data():\n    assert DATA.strip() == 'ok'\n",
    })
    step = "echo ok > /testbed/fixtures.txt"
    options = offline(fixture_world, base_image, max_builds=1)

    off = build_env(mirror, "acme/needsdata", "0.1", head, None, ["tests/test_d.py"], options, client=engine_client)
    assert not off.ok and off.reason_class == "test_collection"  # no rule answers FileNotFoundError; the stage is off

    policy = lambda: ScriptedPolicy([ToolCall("bash", {"command": step}), ToolCall("finish")])  # noqa: E731
    on = build_env(mirror, "acme/needsdata", "0.1", head, None, ["tests/test_d.py"],
                   offline(fixture_world, base_image, max_builds=1, agent_policy=policy), client=engine_client)
    assert on.ok, on.reason
    assert on.install is not None and on.install.install[-1] == step and on.install.strategy.endswith("+agent1")
    assert on.attempts[-1].repairs == [f"agent: {step}"]
