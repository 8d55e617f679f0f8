"""Read a failed env build: its reason class (for the funnel) and the specific findings a repair can act on.

Order matters: the most specific signature wins (a missing C header shows up as a build error too).
`diagnose` goes further than the class: it names the package or module a failure is about, which is
what the repair loop (`envfarm.tasks.envsetup.repair`) needs to try one specific change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COLLECT_MARKER = "ENVFARM_COLLECT_FAILED"
SAMPLE_MARKER = "ENVFARM_SAMPLE_FAILED"
PYTHON_MARKER = "ENVFARM_PYTHON_UNAVAILABLE"

SIGNATURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("python_unavailable", re.compile(rf"{PYTHON_MARKER}|No interpreter found|No download found for request", re.I)),
    ("missing_system_library", re.compile(
        r"fatal error: [\w/.+-]+\.h: No such file|pkg-config|cannot find -l\w+|command '[\w-]*gcc' failed|gcc: (command )?not found|"
        r"error: command '[^']*' failed: No such file|Cargo, the Rust package manager, is not installed|libffi|Could not find .* library", re.I)),
    ("editable_unsupported", re.compile(
        r"build_editable|does not support editable|editable mode is not supported|Editable installs? (with|are) not supported|"
        r"missing the .build_editable. hook|cannot be installed in editable mode", re.I)),
    ("no_versions_under_cap", re.compile(r"was filtered by .?exclude-newer", re.I)),
    ("yanked_requirement", re.compile(r"was yanked|versions? of \S+ (were|was) yanked|only yanked versions", re.I)),
    ("no_matching_distribution", re.compile(r"was not found in the package registry|No matching distribution|not found in the provided package locations|there is no version of|Because \S+ was not found", re.I)),
    ("resolver_conflict", re.compile(r"No solution found when resolving|ResolutionImpossible|conflicting dependencies|dependencies are unsatisfiable", re.I)),
    ("build_error", re.compile(r"Failed to build|Build backend failed|subprocess-exited-with-error|Failed to download and build|setup\.py.*(error|failed)|error: metadata-generation-failed", re.I)),
    ("network", re.compile(r"Failed to fetch|Connection refused|dns error|Temporary failure in name resolution|certificate verify failed|Network is unreachable", re.I)),
    ("test_collection", re.compile(COLLECT_MARKER)),
    ("tests_error", re.compile(SAMPLE_MARKER)),
    ("timeout", re.compile(r"timed out|Timeout", re.I)),
    ("disk_full", re.compile(r"No space left on device", re.I)),
)

# Infrastructure problems are retried and never counted against the repository.
INFRA_CLASSES = frozenset({"engine_error", "disk_full"})
# How far an attempt got, to pick the most telling failure of several: a failure after install (tests
# collected, or ran and errored) is a nearer miss than a resolver error, which is nearer than no interpreter.
STAGE = {"python_unavailable": 0, "skipped": 0, "runner_under_test": 0, "network": 1, "no_matching_distribution": 2,
         "no_versions_under_cap": 2, "yanked_requirement": 2, "resolver_conflict": 2, "missing_system_library": 3,
         "build_error": 3, "editable_unsupported": 3, "timeout": 3, "unknown": 3, "test_collection": 4, "tests_error": 5,
         "toolchain_too_old": 1, "dependency_unreachable": 2}


# A recipe's own verdict, printed by its build step (`ENVFARM_REASON=<class>`): languages whose tools
# this module does not know (Go, Rust) name their failure classes themselves.
REASON_MARKER = re.compile(r"^ENVFARM_REASON=([a-z_]+)\s*$", re.M)


def classify_build_failure(log: str) -> str:
    tail = log[-20000:]
    named = REASON_MARKER.findall(tail)
    if named:
        return named[-1]
    for reason_class, pattern in SIGNATURES:
        if pattern.search(tail):
            return reason_class
    return "unknown"


@dataclass(frozen=True)
class Finding:
    """One specific thing a failed build says: `kind` plus the package or module it is about."""

    kind: str  # missing_module | missing_pkg_resources | no_versions_under_cap | yanked | no_compiler | editable_unsupported | missing_fixture | unknown_option | setuptools_too_old
    subject: str = ""


_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([\w.]+)'")
_FILTERED = re.compile(r"`([\w.-]+)` was filtered by `?exclude-newer")
_YANKED = re.compile(r"(?:all versions of|only yanked versions of) ([\w.-]+)|([\w.-]+)==[\w.!+-]+ was yanked", re.I)
_NO_VERSIONS = re.compile(r"there are no versions of ([\w.-]+)")
_FIXTURE = re.compile(r"fixture '(\w+)' not found")
_OPTION = re.compile(r"error: unrecognized arguments: (--?[\w-]+)")
_BUILDING = re.compile(r"Failed to build `([\w.-]+)(?:[=@][^`]*)?`|Building wheel for ([\w.-]+) \(|Failed to (?:download and )?build:? `?([\w.-]+)")
_COMPILER = re.compile(r"gcc: (?:command )?not found|command '[\w/.-]*(?:gcc|cc|g\+\+)' failed|error: command '[^']*' failed: No such file|fatal error: Python\.h: No such file|unable to execute '?gcc", re.I)
_EDITABLE = SIGNATURES[2][1]


def diagnose(log: str) -> list[Finding]:
    """Every specific finding in a failed build's log, most actionable first, without repeats."""
    tail = log[-40000:]
    found: list[Finding] = []
    if "No module named 'pkg_resources'" in tail or "No module named pkg_resources" in tail:
        found.append(Finding("missing_pkg_resources"))
    found += [Finding("no_versions_under_cap", m) for m in _FILTERED.findall(tail)]
    found += [Finding("yanked", next(g for g in m if g)) for m in _YANKED.findall(tail)]
    if _EDITABLE.search(tail):
        found.append(Finding("editable_unsupported"))
    if _COMPILER.search(tail):
        building = [next((g for g in m if g), "") for m in _BUILDING.findall(tail)]
        found.append(Finding("no_compiler", next((b for b in reversed(building) if b), "")))
    found += [Finding("missing_fixture", m) for m in _FIXTURE.findall(tail)]
    found += [Finding("unknown_option", m) for m in _OPTION.findall(tail)]
    found += [Finding("missing_module", m) for m in _MODULE.findall(tail) if m != "pkg_resources"]
    if re.search(r"No module named 'distutils'|module 'setuptools' has no attribute|setuptools.*(?:too old|is required)", tail):
        found.append(Finding("setuptools_too_old"))
    if not any(f.kind == "no_versions_under_cap" for f in found):
        found += [Finding("not_found", m) for m in _NO_VERSIONS.findall(tail)]
    return list(dict.fromkeys(found))


def excerpt(log: str, lines: int = 12) -> str:
    """The lines that explain a failure: the resolver's whole explanation where there is one (uv's
    `cause:` / `hint:` block, which says *why* no solution exists), else the last lines mentioning an error."""
    all_lines = [line for line in log.splitlines() if line.strip()]
    for index, line in enumerate(all_lines):
        if re.search(r"No solution found when resolving", line):
            block = [line]
            for follow in all_lines[index + 1:]:
                if re.match(r"\s*(cause:|hint:|help:|╰─▶|\s{2,}\S|And because|Because)", follow) or follow.startswith("  "):
                    block.append(follow)
                elif len(block) > 1:
                    break
            return "\n".join(block)[-4000:]
    hits = [line for line in all_lines if re.search(r"error|failed|not found|conflict|No solution|yanked|exclude-newer", line, re.I)]
    return "\n".join((hits or all_lines)[-lines:])[-4000:]
