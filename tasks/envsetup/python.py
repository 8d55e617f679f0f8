"""Python environments: interpreter and dependencies inferred from the repository at a commit.

Evidence, strongest first: `requires-python` (pyproject, setup.cfg, setup.py python_requires), trove
classifiers, CI workflow `python-version`, tox envlist. Dependencies: the project itself (`-e .` with
a test extra when one exists), requirements files that name tests or dev, and pytest. Installs run
through uv so that `--exclude-newer <task date>` resolves packages as they were when the issue was
filed: old repositories fail mostly because today's releases are too new for them.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import tomllib
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from envfarm.config import base_image_for
from envfarm.images.base import SUITE_PYTHON
from envfarm.images.recipe import ImageRecipe
from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup.failures import COLLECT_MARKER, PYTHON_MARKER
from envfarm.tasks.mirror import Mirror

SYSTEM_PYTHON = {base_image_for(suite): python for suite, python in SUITE_PYTHON.items()}
BASE_FOR_PYTHON = {v: k for k, v in SYSTEM_PYTHON.items()}  # `envfarm images build base --suite bullseye` etc.
KNOWN_MINORS = [f"3.{m}" for m in range(6, 14)]
DEP_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "tox.ini")
REQ_NAMES = re.compile(r"^(requirements[-_/]?(dev|test|tests|testing|ci)[\w.-]*\.txt|(dev|test|tests|testing)[-_]requirements\.txt|requirements\.txt|requirements/(dev|test|tests|testing|ci|base)\.txt)$")
TEST_EXTRAS = ("test", "tests", "testing", "dev")
VENV = "/opt/venv"
TEST_CMD = "python -m pytest"
# Build backends and the test runner are exempt from the time cap: a 2014 setuptools or pytest cannot
# run on the base image's Python, and their versions do not change what the project's code does.
FLOATING_TOOLS = ("setuptools", "wheel", "pip", "pytest", "pluggy", "iniconfig", "packaging", "py", "tomli",
                  "exceptiongroup", "setuptools-scm", "flit-core", "hatchling", "poetry-core", "pdm-backend")
NO_CAP = "2100-01-01T00:00:00Z"  # fixed, so recipe hashes (image tags) do not change from day to day


def _text(mirror: Mirror, commit: str, path: str) -> str:
    data = mirror.read(commit, path)
    return data.decode("utf-8", errors="replace") if data else ""


def requires_python(files: dict[str, str]) -> SpecifierSet | None:
    spec = ""
    try:
        spec = tomllib.loads(files.get("pyproject.toml", "")).get("project", {}).get("requires-python", "")
    except tomllib.TOMLDecodeError:
        pass
    if not spec:
        match = re.search(r"python_requires\s*=\s*['\"]?([^'\"\n]+)", files.get("setup.cfg", "") + "\n" + files.get("setup.py", ""))
        spec = match.group(1).strip() if match else ""
    try:
        return SpecifierSet(spec) if spec else None
    except InvalidSpecifier:
        return None


def mentioned_versions(files: dict[str, str]) -> list[str]:
    """Python minors named by classifiers, CI matrices and tox envlists, oldest first."""
    found: set[str] = set()
    for text in files.values():
        found.update(re.findall(r"Programming Language :: Python :: (3\.\d+)", text))
        for block in re.findall(r"python-version\s*:\s*(\[[^\]]*\]|['\"]?[\d.]+['\"]?)", text):
            found.update(re.findall(r"(3\.\d+)", block))
        for env in re.findall(r"\bpy3(\d{1,2})\b", text):
            found.add(f"3.{env}")
    return sorted((v for v in found if v in KNOWN_MINORS), key=lambda v: int(v.split(".")[1]))


def choose_pythons(files: dict[str, str], system: str) -> list[str]:
    """Interpreters to try, best first (at most three).

    The system Python whenever `requires-python` allows it and the project names a version close to it
    (classifiers lag behind releases, and it needs no download); then the newest version the project
    names; then the interpreter a Debian base ships natively that is closest above it (no download
    needed); the system Python last.
    """
    spec = requires_python(files)
    mentioned = mentioned_versions(files)
    allowed = [v for v in KNOWN_MINORS if spec is None or spec.contains(f"{v}.0")]
    named = [v for v in allowed if v in mentioned] or allowed
    minor = lambda v: int(v.split(".")[1])  # noqa: E731
    newest_named = minor(named[-1]) if named else 99
    order: list[str] = []
    if system in allowed and (not mentioned or minor(system) <= newest_named + 2):
        order.append(system)
    if named and named[-1] not in order:
        order.append(named[-1])
    native = sorted((v for v in SYSTEM_PYTHON.values() if v in allowed and v not in order), key=lambda v: (minor(v) < newest_named, abs(minor(v) - newest_named)))
    order += native[:1]
    if system not in order:
        order.append(system)  # last resort: it may still work
    return order[:3] if system in order[:3] else order[:2] + [system]


def find_test_extra(files: dict[str, str]) -> str | None:
    extras: set[str] = set()
    try:
        extras.update(tomllib.loads(files.get("pyproject.toml", "")).get("project", {}).get("optional-dependencies", {}))
    except tomllib.TOMLDecodeError:
        pass
    cfg = files.get("setup.cfg", "")
    section = re.search(r"\[options\.extras_require\]\n((?:[^\[].*\n?)*)", cfg)
    if section:
        extras.update(re.findall(r"^(\w[\w-]*)\s*=", section.group(1), re.M))
    extras.update(re.findall(r"['\"](\w[\w-]*)['\"]\s*:\s*\[", files.get("setup.py", "")))
    return next((e for e in TEST_EXTRAS if e in extras), None)


def ci_pip_args(files: dict[str, str]) -> list[str]:
    """Arguments of `pip install` lines in CI workflows and tox deps, reduced to what uv understands."""
    args: list[str] = []
    for name, text in files.items():
        if not name.startswith(".github/workflows/"):
            continue
        for line in re.findall(r"pip install ([^\n#&|;]+)", text):
            words = shlex.split(line, posix=True) if line.count("'") % 2 == 0 and line.count('"') % 2 == 0 else line.split()
            skip_next = False
            for word in words:
                if skip_next:
                    skip_next = False
                    continue
                if word in ("-U", "--upgrade", "--user", "-q", "--quiet", "--pre"):
                    continue
                if word in ("-c", "--constraint", "-i", "--index-url"):
                    skip_next = True
                    continue
                if word.startswith("$") or word in ("pip", "setuptools", "wheel") or "${{" in word:
                    continue
                args.append(word)
    return list(dict.fromkeys(args))


class PythonRecipes:
    language = "python"

    def _files(self, mirror: Mirror, commit: str) -> dict[str, str]:
        names = mirror.ls(commit)
        wanted = [n for n in names if n in DEP_FILES or REQ_NAMES.match(n) or (n.startswith(".github/workflows/") and n.endswith((".yml", ".yaml")))]
        return {n: _text(mirror, commit, n) for n in wanted}

    def version(self, mirror: Mirror, commit: str) -> str:
        files = self._files(mirror, commit)
        declared = ""
        for text in (files.get("pyproject.toml", ""), files.get("setup.cfg", ""), files.get("setup.py", "")):
            match = re.search(r"^\s*version\s*[=:]\s*['\"]?(\d+)\.(\d+)", text, re.M)
            if match:
                declared = f"{match.group(1)}.{match.group(2)}"
                break
        digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(files.items())).encode()).hexdigest()[:8]
        return f"{declared or '0'}+{digest}"

    def strategies(self, mirror: Mirror, commit: str, date: str | None, options: BuildOptions) -> list[Strategy]:
        files = self._files(mirror, commit)
        system = SYSTEM_PYTHON.get(options.base_image, "3.11")
        pythons = choose_pythons(files, system)
        extra = find_test_extra(files)
        reqs = sorted(n for n in files if REQ_NAMES.match(n))
        installable = any(n in files for n in ("pyproject.toml", "setup.py", "setup.cfg"))
        project = [f".[{extra}]" if extra else "."] if installable else []
        req_args = [a for r in reqs for a in ("-r", r)]
        cap = date if (options.time_cap and date and not options.offline) else None
        plans: list[tuple[str, list[str]]] = [("project+requirements", [*(["-e"] if project else []), *project, *req_args, "pytest"])]
        ci = ci_pip_args(files)
        if ci:
            plans.append(("ci-workflow", [*ci, "pytest"]))
        if installable:
            plans.append(("project-only", ["-e", "."] + ["pytest"]))
        strategies: list[Strategy] = []
        for python in pythons[:3]:
            for name, args in plans:
                strategies.append(self._strategy(f"{name}@py{python}" + ("+capped" if cap else ""), python, args, cap, options))
        if cap:  # the same first plan with today's packages: measures what the time cap buys
            strategies.append(self._strategy(f"{plans[0][0]}@py{pythons[0]}+uncapped", pythons[0], plans[0][1], None, options))
        return list(dict.fromkeys(strategies))

    def _strategy(self, name: str, python: str, args: list[str], cap: str | None, options: BuildOptions) -> Strategy:
        flags = ["--python", f"{VENV}/bin/python"]
        if cap:
            flags += ["--exclude-newer", cap]
            if options.float_tools:
                for tool in FLOATING_TOOLS:
                    flags += ["--exclude-newer-package", f"{tool}={NO_CAP}"]
        if options.wheelhouse:
            flags += ["--find-links", "/opt/wheelhouse"]
        if options.offline:
            flags += ["--no-index"]
        install = (
            f"uv pip install {' '.join(shlex.quote(f) for f in flags)} {' '.join(shlex.quote(a) for a in args)}",
        )
        # An interpreter some Debian base ships natively is taken from that base (no download needed).
        base = options.base_image if SYSTEM_PYTHON.get(options.base_image) == python else BASE_FOR_PYTHON.get(python, options.base_image)
        return Strategy(name=name, python=python, install=install, test_cmd=TEST_CMD, log_parser="pytest", exclude_newer=cap, base_image=base)

    def tooling(self, base_image: str) -> ImageRecipe:
        uv = Path(__import__("shutil").which("uv") or Path(__import__("sys").executable).parent / "uv")
        return ImageRecipe(
            kind="env",
            name="python-tooling",
            parent=base_image,
            files=(("/usr/local/bin/uv", uv.read_bytes()),),
            steps=("chmod 0755 /usr/local/bin/uv && uv --version",),
        )

    def env_steps(self, strategy: Strategy, collect_paths: list[str], options: BuildOptions, system: str = "3.11") -> list[str]:
        if strategy.python == SYSTEM_PYTHON.get(strategy.base_image):
            make_venv = f"uv venv -q {VENV} --python /usr/bin/python3"
        else:  # another interpreter: uv fetches a standalone build if it can reach one
            make_venv = (
                f"(uv python install -q {strategy.python} && uv venv -q {VENV} --python {strategy.python})"
                f" || {{ echo '{PYTHON_MARKER}: python {strategy.python} could not be installed'; exit 1; }}"
            )
        targets = " ".join(shlex.quote(p) for p in collect_paths)
        collect = (
            f"cd /testbed && {VENV}/bin/python -m pytest --collect-only -q -p no:cacheprovider {targets} > /tmp/collect.log 2>&1;"
            f" rc=$?; if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then tail -n 40 /tmp/collect.log; echo '{COLLECT_MARKER} (exit '$rc')'; exit 1; fi;"
            " rm -f /tmp/collect.log"
        )
        return [
            f"export UV_CACHE_DIR=/tmp/uv-cache UV_LINK_MODE=copy UV_PYTHON_INSTALL_DIR=/opt/python && {make_venv}"
            f" && cd /testbed && {' && '.join(strategy.install)} && rm -rf /tmp/uv-cache",
            collect,
            f"chown -R 1000:1000 /testbed {VENV}",
        ]
