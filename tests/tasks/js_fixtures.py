"""JavaScript fixture repositories with real git history: a Node project whose fix turns a failing test
into a passing one, one whose lockfile does not install, and one whose tests no supported runner reads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .fixtures import git, issue_record, merge_pr, pr_record, write

CALC_V1 = """const { double } = require('tinyjs');

function add(a, b) {
  return a - b; // bug: issue #1
}

function twice(x) {
  return double(x);
}

module.exports = { add, twice };
"""
TEST_V1 = """const test = require('node:test');
const assert = require('node:assert');
const { twice } = require('../src/calc');

test('twice', () => {
  assert.strictEqual(twice(2), 4);
});
"""
TEST_V2 = TEST_V1 + """
test.describe('add', () => {
  test.it('adds two numbers', () => {
    assert.strictEqual(require('../src/calc').add(2, 3), 5);
  });
});
"""


def _package(name: str, test: str, deps: dict[str, str] | None = None) -> str:
    # engines ^18: only bookworm's Node fits, so the tests need only the tooling layer `make setup` builds.
    return json.dumps({"name": name, "version": "0.1.0", "private": True, "engines": {"node": "^18"},
                       "scripts": {"test": test}, "dependencies": deps or {}}, indent=2) + "\n"


def _lock(name: str, deps: dict[str, str], packages: dict[str, dict]) -> str:
    root = {"name": name, "version": "0.1.0", "dependencies": deps, "engines": {"node": ">=18"}} if deps else {"name": name, "version": "0.1.0", "engines": {"node": ">=18"}}
    return json.dumps({"name": name, "version": "0.1.0", "lockfileVersion": 3, "requires": True, "packages": {"": root, **packages}}, indent=2) + "\n"


def _repo(root: Path, slug: str, files: dict[str, str]) -> tuple[Path, str]:
    work = root / f"{slug}-work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    write(work, {**files, ".gitignore": "node_modules/\n"})
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    return work, git(work, "rev-parse", "HEAD")


def _publish(work: Path, dump: Path, repo: str, records: list[dict]) -> None:
    owner, name = repo.split("/")
    subprocess.run(["git", "clone", "-q", "--mirror", str(work), str(dump / f"{owner}__{name}.git")], check=True)
    (dump / f"{owner}__{name}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def make_js_world(root: Path) -> Path:
    """acme/jscalc (validates), acme/jsstale (lockfile out of sync: npm ci refuses), acme/jskarma (no runner)."""
    dump = root / "js-dump"
    dump.mkdir(parents=True)
    deps = {"tinyjs": "file:vendor/tinyjs"}
    lock_packages = {"node_modules/tinyjs": {"resolved": "vendor/tinyjs", "link": True}, "vendor/tinyjs": {"version": "1.0.0"}}
    vendored = {"vendor/tinyjs/package.json": '{"name": "tinyjs", "version": "1.0.0", "main": "index.js"}\n',
                "vendor/tinyjs/index.js": "exports.double = (x) => 2 * x;\n"}
    work, base = _repo(root, "jscalc", {"package.json": _package("jscalc", "node --test", deps),
                                        "package-lock.json": _lock("jscalc", deps, lock_packages), **vendored,
                                        "src/calc.js": CALC_V1, "test/calc.test.js": TEST_V1, "README.md": "jscalc\n"})
    merge = merge_pr(work, "fix-add", 2, "Fix add\n\nFixes #1", {
        "src/calc.js": CALC_V1.replace("return a - b; // bug: issue #1", "return a + b;"),
        "test/calc.test.js": TEST_V2,
    }, "2024-02-01T00:00:00Z")
    _publish(work, dump, "acme/jscalc", [
        issue_record(1, "add() subtracts", "add(2, 3) returns -1 instead of 5; every caller of add is wrong.", "2024-01-15T00:00:00Z"),
        pr_record(2, "Fix add", "This fixes #1.", merge, base, "2024-01-20T00:00:00Z"),
    ])
    stale_deps = {"tinyjs": "file:vendor/tinyjs"}
    work, base = _repo(root, "jsstale", {"package.json": _package("jsstale", "node --test", stale_deps),
                                         "package-lock.json": _lock("jsstale", {}, {}), **vendored,  # the lockfile misses tinyjs
                                         "src/calc.js": CALC_V1, "test/calc.test.js": TEST_V1})
    merge = merge_pr(work, "fix-add", 2, "Fix add, fixes #1", {
        "src/calc.js": CALC_V1.replace("return a - b; // bug: issue #1", "return a + b;"), "test/calc.test.js": TEST_V2,
    }, "2024-02-01T00:00:00Z")
    _publish(work, dump, "acme/jsstale", [
        issue_record(1, "add() subtracts", "add(2, 3) returns -1 instead of 5; every caller of add is wrong.", "2024-01-15T00:00:00Z"),
        pr_record(2, "Fix add", "fixes #1", merge, base, "2024-01-20T00:00:00Z"),
    ])
    work, base = _repo(root, "jskarma", {"package.json": _package("jskarma", "karma start --single-run"),
                                         "src/calc.js": CALC_V1, "test/calc.spec.js": "describe('x', () => {});\n"})
    merge = merge_pr(work, "fix-add", 2, "Fix add, fixes #1", {
        "src/calc.js": CALC_V1.replace("return a - b; // bug: issue #1", "return a + b;"),
        "test/calc.spec.js": "describe('add', () => { it('adds', () => {}); });\n",
    }, "2024-02-01T00:00:00Z")
    _publish(work, dump, "acme/jskarma", [
        issue_record(1, "add() subtracts", "add(2, 3) returns -1 instead of 5; every caller of add is wrong.", "2024-01-15T00:00:00Z"),
        pr_record(2, "Fix add", "fixes #1", merge, base, "2024-01-20T00:00:00Z"),
    ])
    return dump
