"""Export validated tasks to SWE-bench-format JSONL (the harness's field names and test ids), atomically.

envfarm's own tasks list tests by exact ids; the harness names them its own way (pytest ids cut at the
first space, path parameters shortened for some repositories, ...). Each exported id is the one the
harness's own parser reads from the line the runner prints for that test, so graded by the official
harness an exported task resolves exactly when envfarm's grading of the same run says it does.
The row names that parser (`log_parser`, which swebench 5.x reads from the row) and carries
`test_ids: "swebench"`; tasks already under the harness's conventions (imported ones) keep their ids.

Not recoverable from an id alone: the docstring line the harness uses instead of a Django test's name
(the test's source is needed for that), so such a test keeps its `name (module.Class)` id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from envfarm.errors import EnvfarmError
from envfarm.store import Store
from envfarm.task import TaskSpec
from envfarm.tasks.store import load_tasks
from envfarm.verifiers import harness

# The harness parser that reads the runner behind each of envfarm's own parsers, per language (for
# repositories the harness does not know by name). A language module adds its own row.
_JS_PARSERS = {"jest": "parse_log_jest", "vitest": "parse_log_vitest", "tap": "parse_log_tap", "junit": "parse_log_jest_json"}
HARNESS_PARSER_FOR_NATIVE: dict[str, dict[str, str]] = {
    "python": {"pytest": "parse_log_pytest", "junit": "parse_log_pytest", "django": "parse_log_django",
               "unittest": "parse_log_django", "sympy": "parse_log_sympy"},
    "javascript": _JS_PARSERS,
    "typescript": _JS_PARSERS,
    "go": {"gotest": "parse_log_gotest"},
    "rust": {"cargo": "parse_log_cargo"},
}
# The line each harness parser reads for a passing test, from envfarm's id (`a > b > title` for the
# JavaScript runners): Jest's verbose output prints the title alone under its describe blocks, Vitest's
# the whole path, TAP `ok N - title`, and the jq transform of Jest's JSON `[PASSED] id`.
RUNNER_LINES: dict[str, Callable[[str], str]] = {
    "parse_log_django": lambda test_id: f"{test_id} ... ok",
    "parse_log_sympy": lambda test_id: f"{test_id.rsplit('::', 1)[-1]} ok",
    "parse_log_jest": lambda test_id: f"  ✓ {test_id.rsplit(' > ', 1)[-1]} (1 ms)",
    "parse_log_vitest": lambda test_id: f" ✓ {test_id}",
    "parse_log_tap": lambda test_id: f"ok 1 - {test_id.rsplit(' > ', 1)[-1]}",
    "parse_log_jest_json": lambda test_id: f"[PASSED] {test_id}",
    # Go and Rust ids carry their package / test binary (`pkg::TestX/sub`, `crate@src/lib.rs::mod::t`);
    # the harness names a test by what `go test -v` / `cargo test` print, the name alone (a doc-test's
    # name has spaces, which the harness's cargo pattern never reads: such ids stay envfarm's).
    "parse_log_gotest": lambda test_id: f"--- PASS: {test_id.split('::', 1)[-1]} (0.00s)",
    "parse_log_cargo": lambda test_id: f"test {test_id.split('::', 1)[-1]} ... ok",
}


def _runner_line(parser_name: str, test_id: str) -> str:
    """The line the runner prints for a passing test, in the form the harness parser reads."""
    line = RUNNER_LINES.get(parser_name)
    return line(test_id) if line else f"PASSED {test_id}"  # every pytest-family parser reads -rA summary lines


def harness_parser_name(task: TaskSpec) -> str:
    try:
        return harness.parser_for(task.repo)[0]
    except EnvfarmError:
        name = HARNESS_PARSER_FOR_NATIVE.get(task.language, {}).get(task.install.log_parser)
        if name is None:
            raise EnvfarmError(
                f"task {task.instance_id}: the SWE-bench harness has no parser for {task.repo} and none reads "
                f"envfarm's {task.install.log_parser!r} logs ({task.language})",
                "export only tasks whose tests run under a runner the harness reads: pytest, Django's, unittest's or sympy's "
                "(Python); Jest, Vitest, TAP or mocha (JavaScript/TypeScript); go test (Go); cargo test (Rust)",
            ) from None
        return name


def harness_ids(task: TaskSpec, ids: list[str]) -> list[str]:
    """`ids` as the harness names them (order kept; ids the harness merges appear once)."""
    if task.test_ids == "swebench":
        return list(ids)
    name, parser = harness.parser_for(harness_parser_name(task))
    out: dict[str, None] = {}
    for test_id in ids:
        read = parser(_runner_line(name, test_id), None)
        out[next(iter(read)) if len(read) == 1 else test_id] = None
    return list(out)


def export_row(task: TaskSpec) -> dict[str, Any]:
    row = task.to_swebench()
    row["FAIL_TO_PASS"] = json.dumps(harness_ids(task, task.FAIL_TO_PASS))
    row["PASS_TO_PASS"] = json.dumps(harness_ids(task, task.PASS_TO_PASS))
    parser = task.log_parser
    row["log_parser"] = parser[len(harness.PREFIX):] if parser.startswith(harness.PREFIX) else harness_parser_name(task)
    if row["log_parser"] not in harness.module("log_parsers").PARSER_REGISTRY:
        row["log_parser"] = harness.parser_for(row["log_parser"])[0]  # a repository name: the harness's parser for it
    row["test_ids"] = "swebench"
    row["language"] = task.language
    return row


def export_jsonl(store: Store, out: str | Path, repo: str | None = None) -> int:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tasks = load_tasks(store, repo)
    rows = [export_row(task) for task in tasks]  # every row first: a task that cannot be exported leaves no file
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)  # readers never see half a file
    return len(tasks)
