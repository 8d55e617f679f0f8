"""Each failure class that stopped real environments, on small git repositories built here, and the
repair loop's answer to each (issue: 14 of 20 curated real tasks failed on these)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from envfarm.tasks.envsetup import recipes_for
from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup.build import Attempt, EnvResult
from envfarm.tasks.envsetup.failures import classify_build_failure, diagnose, excerpt
from envfarm.tasks.envsetup.python import PythonPlan, project_extras, requirement_files, tox_extras
from envfarm.tasks.mirror import Mirror
from .fixtures import git, write

RECIPES = recipes_for("python")
CAP = "2021-03-01T00:00:00Z"


def repo(tmp_path: Path, files: dict[str, str], date: str = "2021-01-10T00:00:00Z", tags: tuple[str, ...] = ()) -> tuple[Mirror, str]:
    src = tmp_path / "src"
    src.mkdir(parents=True)
    git(src, "init", "-q", "-b", "main")
    write(src, files)
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "x", date=date)
    for tag in tags:
        git(src, "tag", tag)
    write(src, {"CHANGES.txt": "more\n"})
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "y", date=date)
    mirror = Mirror.ensure(tmp_path / "mirrors", "o/p", str(src))
    return mirror, mirror.git_bytes("rev-parse", "HEAD").decode().strip()


def first(mirror: Mirror, head: str, date: str | None = CAP, **options) -> Strategy:
    return RECIPES.strategies(mirror, head, date, BuildOptions(**options))[0]


def fix(strategy: Strategy, log: str) -> Strategy:
    repaired = RECIPES.repair(strategy, log, BuildOptions())
    assert repaired is not None, f"no repair for: {log[:200]}"
    assert repaired.plan.repairs and repaired.notes[-1].startswith("repair: ")  # recorded in the stored recipe
    return repaired


SETUP_PY = "from setuptools import setup\nsetup(name='p', version='1.0', packages=['p'])\n"


def test_uv_venvs_get_setuptools_and_pkg_resources_repairs_to_an_old_enough_one(tmp_path):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": ""})
    strategy = first(mirror, head)
    assert "setuptools" in strategy.plan.packages  # uv venvs have no setuptools; old projects import pkg_resources
    log = "E   ModuleNotFoundError: No module named 'pkg_resources'\nENVFARM_COLLECT_FAILED (exit 2)"
    assert classify_build_failure(log) == "test_collection"
    repaired = fix(strategy, log)
    assert "'setuptools<81'" in repaired.install[-1] and " setuptools " not in repaired.install[-1]


def test_tooling_is_capped_and_relaxed_only_when_resolution_fails(tmp_path):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": ""})
    strategy = first(mirror, head)
    assert "--exclude-newer-package" not in strategy.install[-1] and "pytest" in strategy.plan.packages
    conflict = ("error: No solution found when resolving dependencies\n  cause: Because pytest==6.2.2 depends on pluggy<1.0 and "
                "p depends on pluggy>=1.0, we can conclude that your requirements are unsatisfiable.")
    repaired = fix(strategy, conflict)
    assert repaired.plan.float_tools and "--exclude-newer-package pytest=2100-01-01T00:00:00Z" in repaired.install[-1]
    assert RECIPES.repair(repaired, conflict, BuildOptions()) is None  # once: the loop moves on


def test_cap_is_never_before_the_base_commit_and_one_package_is_relaxed(tmp_path):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": ""}, date="2021-06-15T12:00:00Z")
    strategy = first(mirror, head, date="2021-01-01T00:00:00Z")  # the PR is older than its base commit
    assert strategy.exclude_newer == "2021-06-15T12:00:00Z"
    log = ("error: No solution found when resolving dependencies\n  cause: Because there are no versions of oldpkg and you require oldpkg, "
           "we can conclude that your requirements are unsatisfiable.\n\nhint: `oldpkg` was filtered by `exclude-newer` to only include "
           "packages uploaded before 2021-06-15T12:00:00Z.")
    assert classify_build_failure(log) == "no_versions_under_cap"
    repaired = fix(strategy, log)
    assert "--exclude-newer-package oldpkg=2100-01-01T00:00:00Z" in repaired.install[-1]
    assert "--exclude-newer 2021-06-15T12:00:00Z" in repaired.install[-1]  # everything else stays capped


def test_tox_extras_and_no_lint_or_pre_commit_requirement_files(tmp_path):
    files = {
        "setup.cfg": "[metadata]\nname = p\n[options.extras_require]\ntesting = pytest\naws = boto3\nlint = flake8\n",
        "setup.py": "from setuptools import setup\nsetup()\n", "p/__init__.py": "",
        "tox.ini": "[tox]\nenvlist = py39\n[testenv]\nextras =\n    testing\n    aws\ncommands = pytest\n[testenv:lint]\nextras = lint\n",
        "requirements_test.txt": "mock\n", "requirements_test_pre_commit.txt": "black==19.3b0\n", "requirements-lint.txt": "flake8\n",
        "requirements/docs.txt": "sphinx\n",
    }
    assert tox_extras(files) == ["testing", "aws"]
    assert project_extras(files) == ["testing", "aws"]
    assert requirement_files(list(files)) == ["requirements_test.txt"]
    mirror, head = repo(tmp_path, files)
    install = first(mirror, head).install[-1]
    assert "-e '.[testing,aws]'" in install and "-r requirements_test.txt" in install
    assert "pre_commit" not in install and "lint" not in install


def test_a_fully_yanked_requirement_is_dropped_not_the_whole_resolve(tmp_path):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": "", "requirements-dev.txt": "gonepkg==1.0\nmock>=2\n"})
    strategy = first(mirror, head)
    log = ("error: No solution found when resolving dependencies\n  cause: Because gonepkg==1.0 was yanked (reason: broken) and "
           "you require gonepkg==1.0, we can conclude that your requirements are unsatisfiable.")
    assert classify_build_failure(log) == "yanked_requirement"
    repaired = fix(strategy, log)
    steps = " && ".join(repaired.install)
    assert "grep -v -i -E" in steps and "gonepkg" in steps and "-r .envfarm-requirements-dev.txt" in steps
    assert "-r requirements-dev.txt" not in repaired.install[-2]


def test_editable_unsupported_falls_back_to_a_regular_install(tmp_path):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": ""})
    strategy = first(mirror, head)
    assert "-e ." in strategy.install[-1]
    log = "  × Failed to build `p @ file:///testbed`\n  ╰─▶ The build backend does not support editable installs (missing the `build_editable` hook)"
    assert classify_build_failure(log) == "editable_unsupported"
    repaired = fix(strategy, log)
    assert "-e" not in repaired.install[-1].split() and " . " in repaired.install[-1]


def test_setuptools_scm_without_tags_gets_the_nearest_tag_as_pretend_version(tmp_path):
    files = {"pyproject.toml": '[build-system]\nrequires = ["setuptools", "setuptools_scm"]\n[project]\nname = "p"\ndynamic = ["version"]\n'
                               '[tool.setuptools_scm]\n', "p/__init__.py": ""}
    mirror, head = repo(tmp_path, files, tags=("v2.4.1", "not-a-version"))
    assert dict(first(mirror, head).env)["SETUPTOOLS_SCM_PRETEND_VERSION"] == "2.4.1"
    plain, plain_head = repo(tmp_path / "b", {"setup.py": SETUP_PY, "p/__init__.py": ""}, tags=("v1.0",))
    assert first(plain, plain_head).env == ()  # no scm: nothing pretended


def test_no_wheel_and_no_compiler_prefers_a_wheel_then_records_build_tools(tmp_path):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": ""})
    strategy = first(mirror, head)
    log = ("  Building wheel for regex (setup.py): started\n  × Failed to build `regex==2020.11.13`\n"
           "  error: command 'x86_64-linux-gnu-gcc' failed: No such file or directory")
    wheel = fix(strategy, log)
    assert "--no-build-package regex" in wheel.install[-1]  # uv then picks a version with a wheel for this interpreter
    tools = fix(wheel, log)
    assert tools.install[0].startswith("apt-get update") and "gcc" in tools.install[0] and "python3-dev" in tools.install[0]
    assert RECIPES.repair(tools, log, BuildOptions()) is None


def test_missing_module_fixture_and_option_are_answered_with_their_packages(tmp_path):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": ""})
    strategy = first(mirror, head)
    assert "PyYAML" in fix(strategy, "E   ModuleNotFoundError: No module named 'yaml'\nENVFARM_COLLECT_FAILED").plan.packages
    assert "pytest-mock" in fix(strategy, "E       fixture 'mocker' not found\nENVFARM_SAMPLE_FAILED: no test of the sample passed").plan.packages
    assert "pytest-cov" in fix(strategy, "ERROR: usage: pytest [options]\nerror: unrecognized arguments: --cov=p\nENVFARM_COLLECT_FAILED").plan.packages
    own = "E   ModuleNotFoundError: No module named 'p.missing'\nENVFARM_COLLECT_FAILED"
    assert RECIPES.repair(strategy, own, BuildOptions()) is None  # the project's own module: no package can help


def test_collection_alone_is_not_enough_a_sample_must_pass():
    log = "sample: 20 tests, 0 passed, 0 failed, 20 errors\nE  fixture 'mocker' not found\nENVFARM_SAMPLE_FAILED: no test of the sample passed"
    assert classify_build_failure(log) == "tests_error"
    assert any(f.kind == "missing_fixture" and f.subject == "mocker" for f in diagnose(log))


def test_the_best_attempts_full_resolver_explanation_is_kept():
    resolver = ("error: No solution found when resolving dependencies\n  cause: Because foo==1.0 depends on bar<2 and you require bar>=2,\n"
                "  we can conclude that your requirements are unsatisfiable.\n\nhint: foo was pinned by requirements.txt")
    assert "cause: Because foo==1.0 depends on bar<2" in excerpt(resolver) and "hint:" in excerpt(resolver)
    result = EnvResult("o/p", "1", "c", ok=False, attempts=[
        Attempt("a@py3.8", False, "python_unavailable", "no 3.8"),
        Attempt("a@py3.11", False, "resolver_conflict", excerpt(resolver)),
        Attempt("a@py3.11+repair1", False, "tests_error", "sample: 3 tests, 0 passed"),
        Attempt("b@py3.9", False, "resolver_conflict", "later, earlier stage"),
    ])
    assert result.reason_class == "tests_error"  # the near miss, not the first or the last attempt
    assert result.reason.startswith("a@py3.11+repair1: tests_error") and "b@py3.9: resolver_conflict" in result.reason
    early = EnvResult("o/p", "1", "c", ok=False, attempts=[Attempt("a", False, "python_unavailable", "x"), Attempt("b", False, "resolver_conflict", excerpt(resolver))])
    assert early.reason_class == "resolver_conflict" and "cause: Because foo==1.0" in early.reason


def test_the_repository_under_test_is_the_runner_is_refused_before_any_build(tmp_path):
    mirror, head = repo(tmp_path, {"pyproject.toml": '[project]\nname = "pytest"\n', "src/_pytest/__init__.py": ""})
    refused = RECIPES.refusal(mirror, head)
    assert refused is not None and refused[0] == "runner_under_test"
    other, other_head = repo(tmp_path / "b", {"setup.py": SETUP_PY, "p/__init__.py": ""})
    assert RECIPES.refusal(other, other_head) is None


def test_ci_workflow_lines_never_become_install_arguments(tmp_path):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": "",
                                   ".github/workflows/t.yml": "run: pip install we've --find-links /nowhere requirements.txt pytest\n"})
    for strategy in RECIPES.strategies(mirror, head, CAP, BuildOptions()):
        text = " ".join(strategy.install)
        assert "we've" not in text and "/nowhere" not in text


def test_repairs_render_the_whole_recipe(tmp_path):
    """A repaired plan rendered from scratch gives the same steps: the stored recipe rebuilds alone."""
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": "", "requirements-dev.txt": "gonepkg==1.0\n"})
    strategy = first(mirror, head)
    repaired = fix(fix(strategy, "`oldpkg` was filtered by `exclude-newer`"), "gonepkg==1.0 was yanked")
    again = RECIPES.render("x", replace(repaired.plan), BuildOptions())
    assert again.install == repaired.install and isinstance(repaired.plan, PythonPlan)
    assert len(repaired.plan.repairs) == 2


@pytest.mark.parametrize(("date", "offered", "expected"), [
    ("2019-08-01", ["3.9", "3.11", "3.13"], "3.9"),  # the offered one nearest the era's newest (3.7)
    ("2023-08-01", ["3.9", "3.11", "3.13"], "3.11"),
])
def test_interpreter_from_the_commit_date(tmp_path, date, expected, offered):
    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY, "p/__init__.py": ""}, date=f"{date}T00:00:00Z")
    assert first(mirror, head, date=None).python == expected


def test_a_missing_interpreter_base_is_built_on_demand_once(monkeypatch):
    """The tooling layer's parent (a Debian base) missing: built through the base builder, then used;
    without `build_bases`, or when the build fails, the attempt is python_unavailable with the fix."""
    import envfarm.tasks.envsetup.build as build
    from envfarm.config import base_image_for
    from envfarm.errors import EnvfarmError, ImageMissing
    from envfarm.images.build import BuildResult

    built: list[str] = []

    def fake_ensure(recipe, client=None, **_kw):
        if recipe.parent == base_image_for("bullseye") and "bullseye" not in built:
            raise ImageMissing("no base", "build it")
        return BuildResult(f"tooling-on-{recipe.parent}", cached=True, seconds=0.0)

    monkeypatch.setattr(build, "ensure_image", fake_ensure)
    strategy = Strategy("s@py3.9", "3.9", ("true",), "pytest", "pytest", base_image=base_image_for("bullseye"))
    result = EnvResult("o/p", "1", "c", ok=False)
    tag = build._tooling(RECIPES, strategy, BuildOptions(), None, built.append, result)
    assert tag == f"tooling-on-{base_image_for('bullseye')}" and built == ["bullseye"] and not result.attempts
    built.clear()
    air_gapped = EnvResult("o/p", "1", "c", ok=False)
    assert build._tooling(RECIPES, strategy, BuildOptions(offline=True), None, built.append, air_gapped) is None
    assert not built and air_gapped.attempts[0].reason_class == "python_unavailable"  # debootstrap needs Debian's mirror
    refused = EnvResult("o/p", "1", "c", ok=False)
    assert build._tooling(RECIPES, strategy, BuildOptions(build_bases=False), None, built.append, refused) is None
    assert refused.attempts[0].reason_class == "python_unavailable" and "--suite bullseye" in refused.attempts[0].reason and not built

    def broken(suite: str) -> str:
        raise EnvfarmError("debootstrap failed: no mirror", "check network access to Debian's mirror")

    failed = EnvResult("o/p", "1", "c", ok=False)
    assert build._tooling(RECIPES, strategy, BuildOptions(), None, broken, failed) is None
    assert failed.attempts[0].reason_class == "python_unavailable" and "debootstrap failed" in failed.attempts[0].reason


def test_python_unavailable_is_apart_in_the_funnel(tmp_path):
    from envfarm.store import Store
    from envfarm.tasks.store import funnel, record_candidate, record_env

    store = Store(f"sqlite:///{tmp_path / 'f.db'}")
    record_env(store, "o/p@1", "o/p", "1", "failed", reason_class="python_unavailable")
    record_env(store, "o/q@1", "o/q", "1", "ok", image="img")
    record_env(store, "o/r@1", "o/r", "1", "failed", reason_class="resolver_conflict")
    record_candidate(store, "o__p-1", "o/p", 1, "env", "env_failed", "python_unavailable", "no 3.6", "o/p@1")
    record_candidate(store, "o__q-1", "o/q", 1, "validation", "validated", env_key="o/q@1")
    summary = funnel(store)
    assert summary["python_unavailable"] == {"env_images": 1, "candidates": 1}
    assert summary["env_success_rate"] == 0.333 and summary["env_success_rate_available_interpreters"] == 0.5


def test_agent_stage_rounds_are_bounded_and_recorded():
    from envfarm.agent.protocol import ToolCall
    from envfarm.agent.scripted import ScriptedPolicy
    from envfarm.tasks.envsetup.agent_repair import agent_repair

    strategy = Strategy("s@py3.11", "3.11", ("uv pip install -e .",), "pytest", "pytest")
    built: list[tuple[str, ...]] = []

    def build(candidate: Strategy) -> tuple[bool, str]:
        built.append(candidate.install)
        return ("apt-get install -y libfoo-dev" in candidate.install, "fatal error: foo.h: No such file or directory")

    policy = ScriptedPolicy(["not a call", ToolCall("bash", {"command": "true"}), ToolCall("finish"),
                             ToolCall("bash", {"command": "apt-get install -y libfoo-dev"}), ToolCall("finish")])
    out = agent_repair(policy, strategy, "fatal error: foo.h: No such file or directory", build)
    assert out.strategy is not None and out.strategy.install[-2:] == ("true", "apt-get install -y libfoo-dev")
    assert out.strategy.notes == ("agent: true", "agent: apt-get install -y libfoo-dev") and len(out.rounds) == 2
    assert not out.rounds[0]["built"] and out.rounds[1]["built"]
    stubborn = agent_repair(ScriptedPolicy([ToolCall("bash", {"command": "true"}), ToolCall("finish")]), strategy, "x",
                            lambda c: (False, "still broken"), rounds=2)
    assert stubborn.strategy is None and len(stubborn.rounds) == 2  # bounded
    silent = agent_repair(ScriptedPolicy([ToolCall("finish")]), strategy, "x", build)
    assert silent.strategy is None and silent.rounds == [{"steps": [], "built": False, "why": "no step proposed"}]


def test_a_release_bump_or_ci_edit_keeps_the_env_a_dependency_change_does_not(tmp_path):
    files = {"setup.cfg": "[metadata]\nname = p\nversion = 4.1.5.dev\n[options]\ninstall_requires =\n    boto3\n",
             "setup.py": "from setuptools import setup\nsetup()\n", "p/__init__.py": "", ".github/workflows/t.yml": "python-version: ['3.9']\n"}
    mirror, head = repo(tmp_path, files)
    bumped, bumped_head = repo(tmp_path / "b", {**files, "setup.cfg": files["setup.cfg"].replace("4.1.5.dev", "4.1.6.dev"),
                                                ".github/workflows/t.yml": "python-version: ['3.9', '3.10']\n"})
    changed, changed_head = repo(tmp_path / "c", {**files, "setup.cfg": files["setup.cfg"] + "    botocore>=1.29\n"})
    key = RECIPES.version(mirror, head)
    assert key.startswith("4.1+") and RECIPES.version(bumped, bumped_head) == key
    assert RECIPES.version(changed, changed_head) != key


def test_a_package_no_index_has_is_not_retried_on_other_interpreters(tmp_path, monkeypatch):
    import envfarm.tasks.envsetup.build as build
    from envfarm.images.build import BuildResult, ImageBuildError

    mirror, head = repo(tmp_path, {"setup.py": SETUP_PY.replace("packages=['p']", "packages=['p'], install_requires=['nowhere-xyz']"),
                                   "p/__init__.py": "", "requirements-dev.txt": "mock\n"})
    built: list[str] = []

    def fake_ensure(recipe, client=None, **_kw):
        if recipe.name == "python-tooling":
            return BuildResult("tooling", cached=True, seconds=0.0)
        built.append(recipe.steps[1])
        if "-r requirements-dev.txt" in recipe.steps[1]:
            raise ImageBuildError("build failed", "read the log", log="error: No solution found when resolving dependencies\n"
                                  "  cause: Because nowhere-xyz was not found in the package registry and p depends on nowhere-xyz, ...")
        raise ImageBuildError("build failed", "read the log", log="E   ModuleNotFoundError: No module named 'p.x'\nENVFARM_COLLECT_FAILED")

    monkeypatch.setattr(build, "ensure_image", fake_ensure)
    monkeypatch.setattr(mirror.__class__, "bundle", lambda self, tip, exclude=None: b"")
    result = build.build_env(mirror, "o/p", "1", head, CAP, [], BuildOptions())
    names = [a.strategy for a in result.attempts]
    assert sum("-r requirements-dev.txt" in step for step in built) == 1  # the first interpreter only
    assert any(a.reason_class == "skipped" and a.strategy.startswith("project+requirements@") for a in result.attempts)
    assert result.reason_class == "test_collection" and names[0].startswith("project+requirements@")
