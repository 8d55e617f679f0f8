"""Classify a failed env build from its log, so the funnel says *why* environments fail.

Order matters: the most specific signature wins (a missing C header shows up as a build error too).
"""

from __future__ import annotations

import re

COLLECT_MARKER = "ENVFARM_COLLECT_FAILED"
PYTHON_MARKER = "ENVFARM_PYTHON_UNAVAILABLE"

SIGNATURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("python_unavailable", re.compile(rf"{PYTHON_MARKER}|No interpreter found|No download found for request", re.I)),
    ("missing_system_library", re.compile(
        r"fatal error: [\w/.+-]+\.h: No such file|pkg-config|cannot find -l\w+|command '[\w-]*gcc' failed|gcc: (command )?not found|"
        r"error: command '[^']*' failed: No such file|Cargo, the Rust package manager, is not installed|libffi|Could not find .* library", re.I)),
    ("no_matching_distribution", re.compile(r"was not found in the package registry|No matching distribution|not found in the provided package locations|there is no version of|Because \S+ was not found", re.I)),
    ("resolver_conflict", re.compile(r"No solution found when resolving|ResolutionImpossible|conflicting dependencies|dependencies are unsatisfiable", re.I)),
    ("build_error", re.compile(r"Failed to build|Build backend failed|subprocess-exited-with-error|Failed to download and build|setup\.py.*(error|failed)|error: metadata-generation-failed", re.I)),
    ("network", re.compile(r"Failed to fetch|Connection refused|dns error|Temporary failure in name resolution|certificate verify failed|Network is unreachable", re.I)),
    ("test_collection", re.compile(COLLECT_MARKER)),
    ("timeout", re.compile(r"timed out|Timeout", re.I)),
    ("disk_full", re.compile(r"No space left on device", re.I)),
)

# Infrastructure problems are retried and never counted against the repository.
INFRA_CLASSES = frozenset({"engine_error", "disk_full"})


def classify_build_failure(log: str) -> str:
    tail = log[-20000:]
    for reason_class, pattern in SIGNATURES:
        if pattern.search(tail):
            return reason_class
    return "unknown"


def excerpt(log: str, lines: int = 12) -> str:
    """The lines that explain a failure: the last ones mentioning an error, else the log's tail."""
    all_lines = [line for line in log.splitlines() if line.strip()]
    hits = [line for line in all_lines if re.search(r"error|failed|not found|conflict|No solution", line, re.I)]
    return "\n".join((hits or all_lines)[-lines:])[-2000:]
