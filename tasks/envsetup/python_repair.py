"""The error-driven repair loop's Python half: one failed build's findings -> one specific plan change.

Each change is small, named (it lands in `PythonPlan.repairs` and the stored recipe's notes) and never
repeated, so the loop in `build.py` is bounded by the number of distinct problems, and the final plan,
rendered, is the whole recipe: the environment rebuilds from it alone.

Findings, in the order they are acted on (`failures.diagnose`):
- `pkg_resources` missing -> setuptools below 81 (the releases that still ship it), under the cap;
- a package with no versions under the date cap -> that package alone exempt from the cap;
- a fully yanked package in a requirement file -> that line dropped from the file;
- a source build with no compiler -> that package forced to a wheel (uv then picks a version that has
  one for the interpreter); if it has none, build tools (gcc, python3-dev) as a recorded apt step;
- editable install unsupported (an old setuptools pinned, no `build_editable`) -> a regular install;
- a missing module or pytest fixture/option -> the package that provides it;
- resolution failing under the cap with tooling capped -> build and test tooling floated.
"""

from __future__ import annotations

import re
from dataclasses import replace

from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup.failures import Finding, classify_build_failure, diagnose

# Import names that differ from the distribution that provides them (the common cases in test suites).
MODULE_PACKAGES = {
    "yaml": "PyYAML", "cv2": "opencv-python-headless", "PIL": "Pillow", "sklearn": "scikit-learn", "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil", "dotenv": "python-dotenv", "jose": "python-jose", "jwt": "PyJWT", "magic": "python-magic",
    "Crypto": "pycryptodome", "OpenSSL": "pyOpenSSL", "attr": "attrs", "google.protobuf": "protobuf", "serial": "pyserial",
    "git": "GitPython", "docx": "python-docx", "pkg_resources": "setuptools", "setuptools_scm": "setuptools-scm",
    "mock": "mock", "nose": "nose", "hypothesis": "hypothesis", "freezegun": "freezegun", "responses": "responses",
    "toml": "toml", "six": "six", "typing_extensions": "typing-extensions", "importlib_metadata": "importlib-metadata",
    "multipart": "python-multipart", "slugify": "python-slugify", "zmq": "pyzmq", "lxml": "lxml", "xdist": "pytest-xdist",
    "pytest_asyncio": "pytest-asyncio", "pytest_mock": "pytest-mock", "sure": "sure", "tomli": "tomli",
}
FIXTURE_PACKAGES = {
    "mocker": "pytest-mock", "benchmark": "pytest-benchmark", "freezer": "pytest-freezer", "httpx_mock": "pytest-httpx",
    "requests_mock": "requests-mock", "event_loop": "pytest-asyncio", "aiohttp_client": "pytest-aiohttp", "datadir": "pytest-datadir",
    "snapshot": "syrupy", "capsys_binary": "pytest", "loop": "pytest-aiohttp", "httpserver": "pytest-httpserver",
    "fs": "pyfakefs", "caplog": "pytest", "subtests": "pytest-subtests", "celery_app": "celery", "mock": "pytest-mock",
    "respx_mock": "respx", "time_machine": "time-machine", "lazy_fixture": "pytest-lazy-fixture", "doctest_namespace": "pytest",
}
OPTION_PACKAGES = {"--cov": "pytest-cov", "--cov-report": "pytest-cov", "--timeout": "pytest-timeout", "-n": "pytest-xdist",
                   "--numprocesses": "pytest-xdist", "--reruns": "pytest-rerunfailures", "--benchmark-skip": "pytest-benchmark",
                   "--doctest-rst": "pytest-doctestplus", "--mypy": "pytest-mypy", "--flake8": "pytest-flake8", "--asyncio-mode": "pytest-asyncio",
                   "--hypothesis-profile": "hypothesis", "--random-order": "pytest-random-order", "--forked": "pytest-forked"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _has(packages: tuple[str, ...], name: str) -> bool:
    return any(_normal(re.split(r"[<>=!~\[; ]", p, maxsplit=1)[0]) == _normal(name) for p in packages)


def _add(plan, package: str, why: str):  # type: ignore[no-untyped-def]
    if _has(plan.packages, package):
        return None
    return replace(plan, packages=(*plan.packages, package), repairs=(*plan.repairs, why))


def apply(plan, finding: Finding, log: str, own_modules: frozenset[str] = frozenset()):  # type: ignore[no-untyped-def]
    """`plan` changed for `finding`, or None where the finding asks for nothing new."""
    kind, subject = finding.kind, finding.subject
    if kind == "missing_pkg_resources":
        if any(p.startswith("setuptools<") for p in plan.packages):
            return None
        packages = tuple(p for p in plan.packages if _normal(p) != "setuptools") + ("setuptools<81",)
        return replace(plan, packages=packages, repairs=(*plan.repairs, "pkg_resources missing: setuptools<81"))
    if kind == "no_versions_under_cap" and plan.cap and _normal(subject) not in {_normal(r) for r in plan.relaxed}:
        return replace(plan, relaxed=(*plan.relaxed, subject), repairs=(*plan.repairs, f"no {subject} under the date cap: {subject} uncapped"))
    if kind == "yanked" and plan.requirement_files and subject not in plan.dropped:
        return replace(plan, dropped=(*plan.dropped, subject), repairs=(*plan.repairs, f"{subject} fully yanked: dropped from requirement files"))
    if kind == "no_compiler":
        if subject and _normal(subject) not in {_normal(w) for w in plan.wheels_only} and _normal(subject) != _normal(".") and "/" not in subject:
            return replace(plan, wheels_only=(*plan.wheels_only, subject), repairs=(*plan.repairs, f"{subject} has no wheel build here: wheels only for {subject}"))
        if not plan.build_tools:
            return replace(plan, build_tools=True, repairs=(*plan.repairs, "source build needs a compiler: gcc and python3-dev installed"))
        return None
    if kind == "editable_unsupported" and plan.editable and plan.project:
        return replace(plan, editable=False, repairs=(*plan.repairs, "editable install unsupported: regular install"))
    if kind == "setuptools_too_old" and not plan.float_tools:
        return replace(plan, float_tools=True, repairs=(*plan.repairs, "build tooling too old for the interpreter: tooling uncapped"))
    if kind == "missing_fixture" and subject in FIXTURE_PACKAGES and FIXTURE_PACKAGES[subject] != "pytest":
        return _add(plan, FIXTURE_PACKAGES[subject], f"fixture {subject!r} missing: {FIXTURE_PACKAGES[subject]}")
    if kind == "unknown_option" and subject in OPTION_PACKAGES:
        return _add(plan, OPTION_PACKAGES[subject], f"pytest option {subject} unknown: {OPTION_PACKAGES[subject]}")
    if kind == "missing_module":
        top = subject if subject in MODULE_PACKAGES else subject.split(".")[0]
        if top in own_modules or top.startswith("_"):
            return None  # the project's own module: installing something else cannot help
        package = MODULE_PACKAGES.get(top, top.replace("_", "-"))
        return _add(plan, package, f"module {subject!r} missing: {package}")
    if kind == "not_found" and plan.cap and _normal(subject) not in {_normal(r) for r in plan.relaxed} and "exclude-newer" in log:
        return replace(plan, relaxed=(*plan.relaxed, subject), repairs=(*plan.repairs, f"no {subject} under the date cap: {subject} uncapped"))
    return None


def repair(recipes, strategy: Strategy, log: str, options: BuildOptions, own_modules: frozenset[str] = frozenset()) -> Strategy | None:  # type: ignore[no-untyped-def]
    """The first finding in `log` that changes the plan, rendered as a new strategy; else the
    resolver-level relaxation (tooling floated) once; else None (the loop moves to the next strategy)."""
    plan = strategy.plan
    if plan is None:
        return None
    for finding in diagnose(log):
        changed = apply(plan, finding, log, own_modules)
        if changed is not None:
            return recipes.render(_name(strategy.name, changed), changed, options)
    if classify_build_failure(log) in ("resolver_conflict", "build_error") and plan.cap and not plan.float_tools:
        changed = replace(plan, float_tools=True, repairs=(*plan.repairs, "resolution failed with tooling capped: tooling uncapped"))
        return recipes.render(_name(strategy.name, changed), changed, options)
    return None


def _name(name: str, plan) -> str:  # type: ignore[no-untyped-def]
    return f"{name.split('+repair')[0]}+repair{len(plan.repairs)}"
