"""Python recipe inference and build-failure classification, on real files in a real git repository."""

import pytest

from envfarm.tasks.envsetup import recipes_for
from envfarm.tasks.envsetup.base import BuildOptions
from envfarm.tasks.envsetup.failures import classify_build_failure
from envfarm.tasks.envsetup.python import choose_pythons, mentioned_versions, requires_python, find_test_extra
from envfarm.tasks.mirror import Mirror
from .fixtures import git, write


def test_requires_python_from_each_file_kind():
    assert str(requires_python({"pyproject.toml": '[project]\nrequires-python = ">=3.8"\n'})) == ">=3.8"
    assert str(requires_python({"setup.cfg": "[options]\npython_requires = >=3.6, <3.10\n"})) == "<3.10,>=3.6"
    assert str(requires_python({"setup.py": "setup(python_requires='>=3.7')"})) == ">=3.7"
    assert requires_python({"setup.py": "setup(python_requires='not a spec')"}) is None


def test_versions_from_classifiers_ci_and_tox():
    files = {
        "setup.py": "'Programming Language :: Python :: 3.7',\n'Programming Language :: Python :: 3.8',",
        ".github/workflows/ci.yml": "python-version: ['3.8', '3.9']\n",
        "tox.ini": "[tox]\nenvlist = py36,py310\n",
    }
    assert mentioned_versions(files) == ["3.6", "3.7", "3.8", "3.9", "3.10"]


NATIVE = ["3.9", "3.11", "3.13"]  # what the Debian bases offer without a download


def test_choose_python_from_metadata_and_the_base_commits_date():
    modern = choose_pythons({"pyproject.toml": '[project]\nrequires-python=">=3.8"\n'}, NATIVE, "2023-06-01")
    assert modern[0] == "3.11"  # newest released before mid-2023 that the machine offers
    assert choose_pythons({"pyproject.toml": '[project]\nrequires-python=">=3.8"\n'}, NATIVE, "2025-06-01")[0] == "3.13"
    old = choose_pythons({"setup.cfg": "[options]\npython_requires = >=3.6, <3.9\n"}, NATIVE, "2020-01-01")
    assert old == ["3.8"]  # nothing offered fits <3.9: the ideal, python_unavailable here unless uv can fetch it
    classic = choose_pythons({"setup.py": "'Programming Language :: Python :: 3.6',\n'Programming Language :: Python :: 3.7',"}, NATIVE, "2019-03-01")
    assert classic[:2] == ["3.9", "3.11"]  # the offered ones nearest to theirs (3.7), never 3.13 (too far)
    assert choose_pythons({"setup.py": "'Programming Language :: Python :: 3.7',"}, [f"3.{m}" for m in range(6, 15)], "2019-03-01")[0] == "3.7"
    lagging = choose_pythons({"setup.py": "'Programming Language :: Python :: 3.10',\npython_requires='>=3.7'"}, NATIVE, "2023-01-15")
    assert lagging[:2] == ["3.9", "3.11"]  # around the named 3.10, the older first
    everything = [f"3.{m}" for m in range(6, 15)]
    assert choose_pythons({}, everything, "2020-03-01")[0] == "3.8"  # uv can fetch any: the era's newest


def test_test_extra():
    assert find_test_extra({"pyproject.toml": '[project.optional-dependencies]\ntests = ["pytest"]\n'}) == "tests"
    assert find_test_extra({"setup.cfg": "[options.extras_require]\ntesting =\n    pytest\n"}) == "testing"
    assert find_test_extra({"setup.py": "extras_require={'dev': ['pytest']}"}) == "dev"


def test_strategies_for_a_repository(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    write(tmp_path, {
        "pyproject.toml": '[project]\nname="p"\nversion="2.3.1"\nrequires-python=">=3.8"\n[project.optional-dependencies]\ntest=["pytest"]\n',
        "requirements-dev.txt": "coverage\n",
        ".github/workflows/ci.yml": "steps:\n  - run: pip install -e .[test]\n",
    })
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "x", date="2023-05-01T00:00:00Z")
    mirror = Mirror.ensure(tmp_path / "m", "o/p", str(tmp_path))
    head = mirror.git_bytes("rev-parse", "HEAD").decode().strip()
    recipes = recipes_for("python")
    assert recipes.version(mirror, head).startswith("2.3+")
    strategies = recipes.strategies(mirror, head, "2024-01-01T00:00:00Z", BuildOptions())
    first = strategies[0]
    assert first.python == "3.11" and first.exclude_newer == "2024-01-01T00:00:00Z"
    install = " && ".join(first.install)
    assert "--exclude-newer 2024-01-01T00:00:00Z" in install and "-e '.[test]' -r requirements-dev.txt setuptools pytest" in install
    assert "--exclude-newer-package" not in install  # test and build tooling are capped too
    floated = " ".join(recipes.strategies(mirror, head, "2024-01-01T00:00:00Z", BuildOptions(float_tools=True))[0].install)
    assert "--exclude-newer-package setuptools=2100-01-01T00:00:00Z" in floated
    assert not any(s.name.startswith("ci-workflow") for s in strategies)  # dropped: it never built a working env
    offline = recipes.strategies(mirror, head, "2024-01-01", BuildOptions(offline=True, wheelhouse=(("a.whl", b""),)))
    assert all("--no-index" in s.install[-1] and "--find-links /opt/wheelhouse" in s.install[-1] and s.exclude_newer is None for s in offline)


@pytest.mark.parametrize(("log", "expected"), [
    ("  × No solution found when resolving dependencies:\n  ╰─▶ Because foo==1 depends on bar<2 and baz depends on bar>=2 ...", "resolver_conflict"),
    ("Because no-such-package was not found in the package registry and p depends on it", "no_matching_distribution"),
    ("src/x.c:1:10: fatal error: libxml/xpath.h: No such file or directory", "missing_system_library"),
    ("error: subprocess-exited-with-error\n  × Failed to build `lxml==4.2`", "build_error"),
    ("ERROR tests/test_a.py\nENVFARM_COLLECT_FAILED (exit 2)", "test_collection"),
    ("ENVFARM_PYTHON_UNAVAILABLE: python 3.6 could not be installed", "python_unavailable"),
    ("something else entirely", "unknown"),
])
def test_failure_classes(log, expected):
    assert classify_build_failure(log) == expected


def test_unknown_language_is_a_clear_error():
    from envfarm.errors import EnvfarmError

    with pytest.raises(EnvfarmError, match="tasks/envsetup/<language>.py"):
        recipes_for("cobol")
