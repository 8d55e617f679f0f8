"""The official SWE-bench harness's own log parsers and grading rules, for tasks that carry its conventions.

Tasks imported from the SWE-bench family (and every export) name their tests as the harness does:
Django tests by their docstring line, Python 3.11 ids unshortened, pytest ids cut at the first space,
path parameters shortened to their last part, sympy's runner read its own way. Rather than copy those
rules, envfarm calls the pinned `swebench` package (pyproject.toml) for them: the per-repository
parser choice (`MAP_REPO_TO_PARSER_PY`, or the parser a dataset row names), `get_logs_eval` for a
harness log, and `test_passed` / `test_maintained` / `_resolve_case` for grading.

Why the package is not imported the ordinary way: `swebench/harness/__init__.py` imports the Docker
runner, the reporting code (datasets, pandas, pyarrow) and the Modal client, which costs seconds and
hundreds of MB in every grading process. The parsers and grading functions need only
`swebench.harness.constants` and `swebench.types`, so the `swebench.harness` package is registered
without running its `__init__`, and its submodules import as usual from the installed files.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import tempfile
import types
from typing import Any, Callable

from envfarm.errors import EnvfarmError

HARNESS_VERSION = "5.0.2"  # the version pinned in pyproject.toml; its conventions are the ones graded here
PREFIX = "swebench:"  # log_parser names "swebench:<owner/repo>" or "swebench:<harness parser name>"

HarnessParser = Callable[[str, Any], dict[str, str]]


def _install_hint() -> str:
    return f"install the pinned harness: .venv/bin/pip install swebench=={HARNESS_VERSION} (make setup does this)"


@functools.cache
def module(name: str) -> types.ModuleType:
    """`swebench.harness.<name>`, imported without the package's heavy `__init__` (see the module docstring)."""
    spec = importlib.util.find_spec("swebench")
    if spec is None or not spec.submodule_search_locations:
        raise EnvfarmError("the swebench package is not installed, so harness-convention tasks cannot be graded", _install_hint())
    version = getattr(importlib.import_module("swebench"), "__version__", "?")
    if version != HARNESS_VERSION:
        raise EnvfarmError(
            f"swebench {version} is installed but envfarm grades with the conventions of swebench {HARNESS_VERSION}",
            _install_hint(),
        )
    if "swebench.harness" not in sys.modules:
        package = types.ModuleType("swebench.harness")
        package.__path__ = [os.path.join(list(spec.submodule_search_locations)[0], "harness")]
        package.__package__ = "swebench.harness"
        sys.modules["swebench.harness"] = package
    return importlib.import_module(f"swebench.harness.{name}")


def parser_for(spec: str) -> tuple[str, HarnessParser]:
    """The harness's parser for `spec`: a repository (`django/django`) or a parser name (`parse_log_django`).

    A repository gets the parser the harness picks for it; a dataset row that names its parser (SWE-bench
    5.x rows carry `log_parser`) is honoured as given.
    """
    registry: dict[str, HarnessParser] = module("log_parsers").PARSER_REGISTRY
    if spec in registry:
        return spec, registry[spec]
    by_repo: dict[str, HarnessParser] = module("log_parsers.python").MAP_REPO_TO_PARSER_PY
    parser = by_repo.get(spec)
    if parser is None:
        raise EnvfarmError(
            f"the SWE-bench harness has no log parser for {spec!r}",
            "name one of its parsers in the task's install.log_parser (e.g. swebench:parse_log_pytest), "
            f"or one of its repositories: {', '.join(sorted(by_repo))}",
        )
    same = [key for key, value in registry.items() if value is parser]
    return (parser.__name__ if parser.__name__ in same else same[0]), parser


def _test_spec(parser_name: str) -> Any:
    """The minimal TestSpec the harness's parsers and `get_logs_eval` read (only `log_parser` matters)."""
    test_spec_cls = importlib.import_module("swebench.types").TestSpec
    return test_spec_cls(instance_id="", image="", eval_script_list=[], repo="", version="", FAIL_TO_PASS=[], PASS_TO_PASS=[],
                         log_parser=parser_name, eval_type="pass_and_fail")


def markers() -> tuple[str, str]:
    constants = module("constants")
    return constants.START_TEST_OUTPUT, constants.END_TEST_OUTPUT


def is_harness_log(text: str) -> bool:
    """A log written by the harness's eval script (its start and end markers are in it)."""
    start, end = markers()
    return start in text and end in text


def test_section(text: str) -> str:
    """The part of a log the harness reads: between its markers when they are there, else all of it."""
    if not is_harness_log(text):
        return text
    start, end = markers()
    return text.split(start, 1)[1].split(end, 1)[0]


def status_map(text: str, spec: str, *, harness_log: bool) -> tuple[dict[str, str], bool, str]:
    """What the harness reads from one log: (test id -> status, whether the log counts, parser name).

    A log the harness wrote (`harness_log`) goes through the harness's own `get_logs_eval`, so its checks
    apply as written (patch-apply failure, timeout, missing markers, exit code contradicting the results).
    envfarm's own runs print only the test command's output: the harness's parser reads the whole of it,
    as it would have read the section between its markers (which those runs do not print).
    """
    name, parser = parser_for(spec)
    test_spec = _test_spec(name)
    if not harness_log:
        return parser(text, test_spec), True, name
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".log", delete=False) as handle:
        handle.write(text)
        path = handle.name
    try:
        results, found = module("grading").get_logs_eval(test_spec, path)
    finally:
        os.unlink(path)
    return results, found, name


def resolve_case(case: str, results: dict[str, str]) -> str | None:
    """The harness's id lookup: exact, or its prefix match for parametrized ids truncated in the datasets."""
    key: str | None = module("grading")._resolve_case(case, results)  # noqa: SLF001 - the harness's own rule, used as written
    return key


def test_passed(case: str, results: dict[str, str]) -> bool:
    return bool(module("grading").test_passed(case, results))


def test_maintained(case: str, results: dict[str, str]) -> bool:
    return bool(module("grading").test_maintained(case, results))


__all__ = [
    "HARNESS_VERSION",
    "PREFIX",
    "is_harness_log",
    "markers",
    "module",
    "parser_for",
    "resolve_case",
    "status_map",
    "test_maintained",
    "test_passed",
    "test_section",
]
