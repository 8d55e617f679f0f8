"""Python environments: interpreter and dependencies inferred from the repository at a commit.

Evidence, strongest first: `requires-python` (pyproject, setup.cfg, setup.py python_requires), trove
classifiers, CI workflow `python-version`, tox envlist, and the base commit's date (no interpreter
released after the commit is chosen while an older one fits). Dependencies: the project itself (`-e .`
with its test extras and the extras tox names), requirement files that name tests or dev (never lint,
docs or pre-commit files, whose pins fight the package under test), setuptools (uv venvs have none, and
old projects import `pkg_resources`) and pytest. Installs run through uv with `--exclude-newer <cap>`,
cap = the later of the task's date and the base commit's date, so packages resolve as they were then;
test tooling is capped too (today's pytest broke old suites: `_pytest.monkeypatch.notset` removed,
string `testpaths` rejected) and floated only when resolution under the cap fails.

A strategy is a `PythonPlan` rendered into shell steps. The repair loop (`repair.py`) reads a failed
build, changes the plan in one specific way (a package added, relaxed, dropped or forced to a wheel;
editable off; build tools on) and renders it again, so the recipe stored with the env is complete and
rebuilds alone.

The "ci-workflow" strategy (replaying `pip install` lines from CI files) is gone: on 20 real tasks it
never produced a working environment (it parsed shell prose and requirement-file names as packages and
installed PyPI's copy of the repository under test), and tox extras plus requirement files carry what it
tried to find.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import re
import shlex
import tomllib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from envfarm.config import base_image_for
from envfarm.images.base import SUITE_PYTHON
from envfarm.images.recipe import ImageRecipe
from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup.failures import COLLECT_MARKER, PYTHON_MARKER, SAMPLE_MARKER
from envfarm.tasks.mirror import Mirror

SYSTEM_PYTHON = {base_image_for(suite): python for suite, python in SUITE_PYTHON.items()}
BASE_FOR_PYTHON = {v: k for k, v in SYSTEM_PYTHON.items()}  # `envfarm images build base --suite bullseye` etc.
KNOWN_MINORS = [f"3.{m}" for m in range(6, 15)]
# First release of each minor: an interpreter newer than the base commit is a guess the code never met.
RELEASED = {"3.6": "2016-12-23", "3.7": "2018-06-27", "3.8": "2019-10-14", "3.9": "2020-10-05", "3.10": "2021-10-04",
            "3.11": "2022-10-24", "3.12": "2023-10-02", "3.13": "2024-10-07", "3.14": "2025-10-07"}
DEP_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "tox.ini")
REQ_NAMES = re.compile(r"^(requirements[-_/]?(dev|test|tests|testing|ci)[\w.-]*\.txt|(dev|test|tests|testing)[-_]requirements\.txt|requirements\.txt|requirements/(dev|test|tests|testing|ci|base)\.txt)$")
# Lint, docs and pre-commit requirement files pin tools whose versions fight the package under test
# (seen: requirements_test_pre_commit.txt); they never matter for running the tests.
REQ_SKIP = re.compile(r"lint|pre[-_]?commit|flake8|mypy|pylint|black|ruff|isort|docs?\b|docs[-_.]|style|typing|format", re.I)
TEST_EXTRAS = ("test", "tests", "testing", "dev")
VENV = "/opt/venv"
TEST_CMD = "python -m pytest"
# Tooling floated by the `float_tools` relaxation (never by default any more).
FLOATING_TOOLS = ("setuptools", "wheel", "pip", "pytest", "pluggy", "iniconfig", "packaging", "py", "tomli",
                  "exceptiongroup", "setuptools-scm", "flit-core", "hatchling", "poetry-core", "pdm-backend")
NO_CAP = "2100-01-01T00:00:00Z"  # fixed, so recipe hashes (image tags) do not change from day to day
BUILD_TOOLS = "gcc g++ make pkg-config python3-dev"
SAMPLE_SIZE = 20
SAMPLE_TIMEOUT = 600


@dataclass(frozen=True)
class PythonPlan:
    """Everything one install attempt does; `repairs` names each change the repair loop made."""

    python: str
    project: str = ""  # "" (not installable), "." or ".[extra,...]"
    editable: bool = True
    requirement_files: tuple[str, ...] = ()
    packages: tuple[str, ...] = ("setuptools", "pytest")
    dropped: tuple[str, ...] = ()  # requirement lines removed from requirement files (fully yanked, say)
    cap: str | None = None
    float_tools: bool = False
    relaxed: tuple[str, ...] = ()  # packages exempt from the cap (no versions under it)
    wheels_only: tuple[str, ...] = ()  # packages that must come as a wheel (no compiler for their sdist)
    build_tools: bool = False  # apt-get gcc and headers before installing
    env: tuple[tuple[str, str], ...] = ()
    repairs: tuple[str, ...] = ()
    own_modules: tuple[str, ...] = ()  # the repository's top-level packages: a missing one is not a PyPI package


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
    return sorted((v for v in found if v in KNOWN_MINORS), key=_minor)


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def released_by(date: str | None) -> list[str]:
    """Minors released at least 60 days before `date` (all when no date): what the code could have met."""
    if not date:
        return list(KNOWN_MINORS)
    day = date[:10]
    cutoff = (datetime.fromisoformat(day) - timedelta(days=60)).date().isoformat()
    return [v for v in KNOWN_MINORS if RELEASED.get(v, "9999") <= cutoff] or ["3.6"]


def choose_pythons(files: dict[str, str], offered: list[str] | str, date: str | None = None) -> list[str]:
    """Interpreters to try, best first (at most three).

    The ideal is the newest minor that `requires-python` allows, the project names (classifiers, CI,
    tox), and was released before the base commit. `offered` are the minors this machine can give
    without a download (Debian bases: 3.9, 3.11, 3.13), or every minor where uv can fetch them. The
    offered minors nearest to the ideal go first (older first when tied: code from before a release
    rarely breaks on the one just older; none more than four minors away), so a 2019 project gets 3.7
    from uv or 3.9 from bullseye, never 3.13 first.
    """
    offered = [offered] if isinstance(offered, str) else list(offered)
    spec = requires_python(files)
    mentioned = mentioned_versions(files)
    allowed = [v for v in KNOWN_MINORS if spec is None or spec.contains(f"{v}.0")] or list(KNOWN_MINORS)
    era = [v for v in allowed if v in released_by(date)] or allowed[:1]
    named = [v for v in era if v in mentioned]
    ideal = (named or era)[-1]
    distance = lambda v: abs(_minor(v) - _minor(ideal))  # noqa: E731
    candidates = [v for v in offered if v in allowed and distance(v) <= 4]
    order = sorted(candidates, key=lambda v: (distance(v), _minor(v) > _minor(ideal)))
    # Nothing offered fits: the ideal alone, which ends as python_unavailable (reported apart) unless uv can fetch it.
    return order[:3] or [ideal]


def _extras_declared(files: dict[str, str]) -> set[str]:
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
    return extras


def find_test_extra(files: dict[str, str]) -> str | None:
    extras = _extras_declared(files)
    return next((e for e in TEST_EXTRAS if e in extras), None)


def tox_extras(files: dict[str, str]) -> list[str]:
    """`extras =` of tox's [testenv] (and any [testenv:...] whose name looks like a test run)."""
    text = files.get("tox.ini", "")
    if not text:
        return []
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    found: list[str] = []
    for section in parser.sections():
        if section == "testenv" or (section.startswith("testenv:") and re.search(r"py|test|unit", section.split(":", 1)[1])):
            raw = parser.get(section, "extras", fallback="")
            found += [e for e in re.split(r"[\s,]+", raw) if re.fullmatch(r"[\w.-]+", e)]
    return list(dict.fromkeys(found))


def project_extras(files: dict[str, str]) -> list[str]:
    """The test extra plus tox's extras, keeping only extras the project declares when it declares any."""
    declared = _extras_declared(files)
    wanted = [e for e in [find_test_extra(files) or "", *tox_extras(files)] if e]
    return [e for e in dict.fromkeys(wanted) if not declared or e in declared]


def requirement_files(names: list[str]) -> list[str]:
    return sorted(n for n in names if REQ_NAMES.match(n) and not REQ_SKIP.search(n))


def project_name(files: dict[str, str]) -> str:
    try:
        name = tomllib.loads(files.get("pyproject.toml", "")).get("project", {}).get("name", "")
    except tomllib.TOMLDecodeError:
        name = ""
    if not name:
        match = re.search(r"^\s*name\s*=\s*([\w.-]+)\s*$", files.get("setup.cfg", ""), re.M) or \
            re.search(r"\bname\s*=\s*['\"]([\w.-]+)['\"]", files.get("setup.py", ""))
        name = match.group(1) if match else ""
    return name


def uses_scm_version(files: dict[str, str]) -> bool:
    return any("setuptools_scm" in files.get(n, "") or "setuptools-scm" in files.get(n, "") or "use_scm_version" in files.get(n, "")
               or "hatch-vcs" in files.get(n, "") for n in ("pyproject.toml", "setup.py", "setup.cfg"))


def nearest_tag_version(mirror: Mirror, commit: str) -> str | None:
    """The version of the newest tag reachable from `commit` (a PEP 440 one), for setuptools_scm.

    The env image keeps no tags (they would reveal the future), so setuptools_scm would say
    `0.1.dev...` and fail a repository's own minversion checks; a pretend version from the nearest past
    tag is what the code saw in development."""
    try:
        tags = mirror.git_bytes("tag", "--merged", commit, "--sort=-creatordate").decode(errors="replace").split()
    except Exception:  # noqa: BLE001 - a mirror without tags simply has no version to offer
        return None
    for tag in tags[:200]:
        raw = re.sub(r"^[^\d]*", "", tag)
        try:
            return str(Version(raw))
        except InvalidVersion:
            continue
    return None


def own_modules(names: list[str]) -> tuple[str, ...]:
    """Top-level import names the repository itself provides (root or src/ layout)."""
    found = set()
    for name in names:
        parts = name.split("/")
        if parts[0] == "src" and len(parts) > 2:
            parts = parts[1:]
        if len(parts) >= 2 and parts[-1] == "__init__.py" and len(parts) == 2:
            found.add(parts[0])
        elif len(parts) == 1 and name.endswith(".py"):
            found.add(name[:-3])
    return tuple(sorted(found))


def runner_under_test(files: dict[str, str]) -> bool:
    """The repository is the test runner itself (pytest's own repository).

    Decision: such repositories are not mined. Their tests run on the runner under test, so a patch
    (gold or an agent's) changes the program that writes the report the grade is read from: the
    verifier's trust rules (report vs console vs exit code, runner internals untouchable) cannot hold,
    and relaxing them for one repository would open that hole for every task. They are recorded as
    `runner_under_test`, apart from environment failures."""
    return project_name(files).lower() == "pytest"


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
        # What changes the environment: dependency files without their own version line (a release bump
        # alone must not cost a new env image: the env is shared, instances move to their base commit) and
        # without CI workflows (edited often, and they only hint at interpreters).
        relevant = {k: re.sub(r"(?m)^\s*version\s*[=:].*$", "", v) for k, v in files.items() if not k.startswith(".github/")}
        digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(relevant.items())).encode()).hexdigest()[:8]
        return f"{declared or '0'}+{digest}"

    def refusal(self, mirror: Mirror, commit: str) -> tuple[str, str] | None:
        """(reason class, reason) when the repository is not mined at all, before any build."""
        if runner_under_test(self._files(mirror, commit)):
            return ("runner_under_test", "the repository is the test runner itself: a patch would change the program that writes the "
                    "report it is graded by, so its tasks cannot be graded safely (see tasks/README.md)")
        return None

    def cap_date(self, mirror: Mirror, commit: str, date: str | None, options: BuildOptions) -> str | None:
        """The later of the task's date and the base commit's: a base newer than the issue pins newer tools."""
        if not options.time_cap or options.offline:
            return None
        commit_day = datetime.fromtimestamp(mirror.commit_time(commit), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return max(d for d in (date, commit_day) if d)

    def offered_pythons(self, options: BuildOptions) -> list[str]:
        return list(KNOWN_MINORS) if options.python_downloads else sorted(SYSTEM_PYTHON.values(), key=_minor)

    def strategies(self, mirror: Mirror, commit: str, date: str | None, options: BuildOptions) -> list[Strategy]:
        files = self._files(mirror, commit)
        cap = self.cap_date(mirror, commit, date, options)
        pythons = choose_pythons(files, self.offered_pythons(options), cap or date)
        extras = project_extras(files)
        reqs = requirement_files(list(files))
        installable = any(n in files for n in ("pyproject.toml", "setup.py", "setup.cfg"))
        project = (f".[{','.join(extras)}]" if extras else ".") if installable else ""
        env: tuple[tuple[str, str], ...] = ()
        if installable and uses_scm_version(files):
            version = nearest_tag_version(mirror, commit)
            if version:
                env = (("SETUPTOOLS_SCM_PRETEND_VERSION", version),)
        own = own_modules(mirror.ls(commit))
        plans = [("project+requirements", PythonPlan(python="", project=project, requirement_files=tuple(reqs), cap=cap, env=env, own_modules=own))]
        if installable and reqs:
            plans.append(("project-only", PythonPlan(python="", project=".", cap=cap, env=env, own_modules=own)))
        strategies: list[Strategy] = []
        for python in pythons:
            for name, plan in plans:
                strategies.append(self.render(f"{name}@py{python}" + ("+capped" if cap else ""), replace(plan, python=python, float_tools=options.float_tools), options))
        return list(dict.fromkeys(strategies))

    def repair(self, strategy: Strategy, log: str, options: BuildOptions) -> Strategy | None:
        from envfarm.tasks.envsetup.python_repair import repair

        plan = strategy.plan
        return repair(self, strategy, log, options, frozenset(plan.own_modules) if plan else frozenset())

    def render(self, name: str, plan: PythonPlan, options: BuildOptions) -> Strategy:
        """The plan as shell steps (run in /testbed during the env build): the whole recipe, repairs included."""
        flags = ["--python", f"{VENV}/bin/python"]
        if plan.cap:
            flags += ["--exclude-newer", plan.cap]
            exempt = list(plan.relaxed) + (list(FLOATING_TOOLS) if plan.float_tools else [])
            for package in dict.fromkeys(exempt):
                flags += ["--exclude-newer-package", f"{package}={NO_CAP}"]
        for package in plan.wheels_only:
            flags += ["--no-build-package", package]
        if options.wheelhouse:
            flags += ["--find-links", "/opt/wheelhouse"]
        if options.offline:
            flags += ["--no-index"]
        steps: list[str] = []
        if plan.build_tools:
            steps.append(f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {BUILD_TOOLS}"
                         " >/dev/null && rm -rf /var/lib/apt/lists/*")
        args: list[str] = []
        if plan.project:
            args += (["-e", plan.project] if plan.editable else [plan.project])
        for req in plan.requirement_files:
            if plan.dropped:
                filtered = str(Path(req).parent / f".envfarm-{Path(req).name}").removeprefix("./")
                pattern = "|".join(re.escape(p) for p in plan.dropped)
                steps.append(f"grep -v -i -E {shlex.quote(f'^[[:space:]]*({pattern})([^A-Za-z0-9_.-]|$)')} {shlex.quote(req)} > {shlex.quote(filtered)} || true")
                args += ["-r", filtered]
            else:
                args += ["-r", req]
        args += list(plan.packages)
        steps.append(f"uv pip install {' '.join(shlex.quote(f) for f in flags)} {' '.join(shlex.quote(a) for a in args)}")
        if plan.dropped:
            steps.append("find . -name '.envfarm-*' -delete")
        # An interpreter some Debian base ships natively is taken from that base (no download needed).
        base = options.base_image if SYSTEM_PYTHON.get(options.base_image) == plan.python else BASE_FOR_PYTHON.get(plan.python, options.base_image)
        notes = tuple(f"repair: {r}" for r in plan.repairs)
        return Strategy(name=name, python=plan.python, install=tuple(steps), test_cmd=TEST_CMD, log_parser="pytest",
                        exclude_newer=plan.cap, base_image=base, env=plan.env, notes=notes, plan=plan)

    def tooling(self, base_image: str) -> ImageRecipe:
        uv = Path(__import__("shutil").which("uv") or Path(__import__("sys").executable).parent / "uv")
        return ImageRecipe(
            kind="env",
            name="python-tooling",
            parent=base_image,
            files=(("/usr/local/bin/uv", uv.read_bytes()),),
            steps=("chmod 0755 /usr/local/bin/uv && uv --version",),
        )

    def env_steps(self, strategy: Strategy, collect_paths: list[str], options: BuildOptions) -> list[str]:
        if strategy.python == SYSTEM_PYTHON.get(strategy.base_image):
            make_venv = f"uv venv -q {VENV} --python /usr/bin/python3"
        else:  # another interpreter: uv fetches a managed build where it can reach one (users with internet)
            make_venv = (
                f"(timeout 300 uv python install -q {strategy.python} && uv venv -q {VENV} --python {strategy.python})"
                f" || {{ echo '{PYTHON_MARKER}: python {strategy.python} could not be installed'; exit 1; }}"
            )
        targets = " ".join(shlex.quote(p) for p in collect_paths)
        collect = (
            f"cd /testbed && {VENV}/bin/python -m pytest --collect-only -q -p no:cacheprovider {targets} > /tmp/collect.log 2>&1;"
            f" rc=$?; if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then tail -n 60 /tmp/collect.log; echo '{COLLECT_MARKER} (exit '$rc')'; exit 1; fi"
        )
        script = base64.b64encode(SAMPLE_SCRIPT.encode()).decode()
        sample = (f"cd /testbed && echo {script} | base64 -d > /tmp/envfarm_sample.py && {VENV}/bin/python /tmp/envfarm_sample.py"
                  f" {SAMPLE_SIZE} {SAMPLE_TIMEOUT}; rc=$?; rm -rf /tmp/envfarm_sample.py /tmp/collect.log /tmp/envfarm-sample.xml .pytest_cache; exit $rc")
        install = (f"export UV_CACHE_DIR=/tmp/uv-cache UV_LINK_MODE=copy UV_PYTHON_INSTALL_DIR=/opt/python && {make_venv}"
                   f" && cd /testbed && {' && '.join(strategy.install)} && rm -rf /tmp/uv-cache")
        # One RUN step, so one layer: a separate `chown` step copied the whole venv and checkout into a second
        # layer (343 MB of an 800 MB moto env); owned by the agent user (uid 1000) before the layer is written.
        return [" && ".join(f"( {step} )" for step in (install, collect, sample, f"chown -R 1000:1000 /testbed {VENV}"))]


# Runs inside the env build after collection: a spread sample of the collected tests must run and at
# least one pass (a repository once collected fine and then every test errored on a missing fixture).
SAMPLE_SCRIPT = f'''
import re, subprocess, sys, xml.etree.ElementTree as ET
size, timeout = int(sys.argv[1]), int(sys.argv[2])
ids = [l.strip() for l in open("/tmp/collect.log", errors="replace") if "::" in l and not l.startswith(("=", " "))]
if not ids:
    sys.exit(0)
step = max(1, len(ids) // size)
sample = ids[::step][:size]
cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=/tmp/envfarm-sample.xml", "-o", "junit_family=xunit1", *sample]
try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
except subprocess.TimeoutExpired:
    print("sample of tests timed out; not held against the environment")
    sys.exit(0)
try:
    root = ET.parse("/tmp/envfarm-sample.xml").getroot()
except (OSError, ET.ParseError):
    print(out[-4000:]); print("{SAMPLE_MARKER}: the sample run wrote no report"); sys.exit(1)
cases = root.iter("testcase")
passed = errors = failed = total = 0
messages = []
for case in cases:
    total += 1
    kids = {{c.tag: c for c in case}}
    if "error" in kids or "failure" in kids:
        node = kids.get("error", kids.get("failure"))
        errors += "error" in kids
        failed += "failure" in kids
        messages.append((node.get("message") or "") + "\\n" + (node.text or "")[-1500:])
    elif "skipped" not in kids:
        passed += 1
print(f"sample: {{total}} tests, {{passed}} passed, {{failed}} failed, {{errors}} errors")
if total and not passed and (errors or failed):
    print("\\n".join(messages[:5])[-6000:])
    print("{SAMPLE_MARKER}: no test of the sample passed")
    sys.exit(1)
'''
