"""Go and Rust end to end on the real engine: fixture repositories with real git history -> language
detected -> patch split -> env image from Debian's toolchain (offline) -> instance image -> validation
through run_tests -> export with `language` and harness-style ids.

Debian's golang-go / rustc+cargo are installed into the tooling layer by the recipes themselves (the
first run on a machine builds it, about a minute each); the env layer proves the tests compile.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from envfarm.tasks.patchsplit import runner_targets, split_blocks, split_diff
from envfarm.tasks.rust_split import split_rust_block

from .gorust_fixtures import make_go_repo, make_rust_repo

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(1800)]  # the module's mining pass is charged to the first test


@pytest.fixture(scope="module")
def gorust_mined(engine_client, base_image, tmp_path_factory):
    from envfarm.store import Store
    from envfarm.tasks.envsetup.base import BuildOptions
    from envfarm.tasks.pipeline import MineConfig, run_inline

    root = tmp_path_factory.mktemp("gorust-world")
    dump = root / "dump"
    dump.mkdir()
    make_go_repo(root, dump)
    make_rust_repo(root, dump)
    home = root / "home"
    home.mkdir()
    store = Store(f"sqlite:///{home / 'envfarm.db'}")
    config = MineConfig(home=home, offline_dir=dump, repeats=1, run_id="pytest-gorust", options=BuildOptions(offline=True))
    config = replace(config, filters=replace(config.filters, language="auto"))
    run_inline([("acme/gocalc", ""), ("acme/rcalc", "")], config, store)
    return store


def _candidates(store):
    from envfarm.store.mining import MiningCandidateRow

    with store.session() as session:
        return {r.instance_id: (r.status, r.reason_class, r.reason) for r in session.query(MiningCandidateRow).all()}


def test_go_tasks_validate_with_package_ids_and_subtests(gorust_mined):
    from envfarm.tasks.store import load_tasks

    tasks = {t.instance_id: t for t in load_tasks(gorust_mined, "acme/gocalc")}
    assert sorted(tasks) == ["acme__gocalc-2", "acme__gocalc-4"], _candidates(gorust_mined)
    add = tasks["acme__gocalc-2"]
    assert add.language == "go" and add.install.log_parser == "gotest"
    assert add.FAIL_TO_PASS == ["example.com/gocalc/calc::TestAdd", "example.com/gocalc/calc::TestAdd/small"]
    # TestAdd/zero passes before the fix too (0 - 0 == 0); TestTwice passes in both states.
    assert add.PASS_TO_PASS == ["example.com/gocalc/calc::TestAdd/zero", "example.com/gocalc/calc::TestTwice"]
    assert add.extra["test_directives"] == ["./calc"]  # strs is not run: its tests are not the task's
    assert "calc/calc_test.go" in add.test_patch and "calc/calc_test.go" not in add.patch
    mul = tasks["acme__gocalc-4"]
    # Before the fix the package does not build, so every test of it is missing there.
    assert mul.FAIL_TO_PASS == ["example.com/gocalc/calc::TestAdd", "example.com/gocalc/calc::TestAdd/small",
                                "example.com/gocalc/calc::TestAdd/zero", "example.com/gocalc/calc::TestMul",
                                "example.com/gocalc/calc::TestTwice"]
    assert "calc/testdata/cases.txt" in mul.test_patch


def test_rust_tasks_validate_and_inline_test_modules_split(gorust_mined):
    from envfarm.tasks.store import load_tasks

    tasks = {t.instance_id: t for t in load_tasks(gorust_mined, "acme/rcalc")}
    assert sorted(tasks) == ["acme__rcalc-2", "acme__rcalc-4"], _candidates(gorust_mined)
    sub = tasks["acme__rcalc-2"]
    assert sub.language == "rust" and sub.install.log_parser == "cargo"
    assert sub.FAIL_TO_PASS == ["basic@tests/basic.rs::sub_works"]
    assert sub.PASS_TO_PASS == ["basic@tests/basic.rs::add_works"]
    assert sub.extra["test_directives"] == ["--test", "basic"]
    trim = tasks["acme__rcalc-4"]
    # The test lives in src/lib.rs's #[cfg(test)] module: that block is the test patch, the fix is parse.rs.
    assert "src/lib.rs" in trim.test_patch and "src/lib.rs" not in trim.patch and "src/parse.rs" in trim.patch
    assert trim.extra["test_directives"] == ["--lib"]
    assert trim.FAIL_TO_PASS == ["rcalc@src/lib.rs::tests::parses_padded"]
    assert trim.PASS_TO_PASS == ["rcalc@src/lib.rs::tests::adds"]
    status, reason_class, _ = _candidates(gorust_mined)["acme__rcalc-6"]
    assert (status, reason_class) == ("filtered", "tests_inside_fixed_source")


def test_gorust_export_carries_language_and_harness_ids(gorust_mined, tmp_path):
    from envfarm.tasks.export import export_jsonl

    out = tmp_path / "tasks.jsonl"
    assert export_jsonl(gorust_mined, out) == 4
    rows = {r["instance_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    go, rust = rows["acme__gocalc-2"], rows["acme__rcalc-2"]
    assert go["language"] == "go" and go["log_parser"] == "parse_log_gotest"
    assert json.loads(go["FAIL_TO_PASS"]) == ["TestAdd", "TestAdd/small"]
    assert rust["language"] == "rust" and rust["log_parser"] == "parse_log_cargo"
    assert json.loads(rust["FAIL_TO_PASS"]) == ["sub_works"]
    assert json.loads(rows["acme__rcalc-4"]["FAIL_TO_PASS"]) == ["tests::parses_padded"]


def test_the_gold_patch_grades_1_and_an_agent_test_file_is_dropped(gorust_mined):
    """The RL verifier on a mined Go task: the gold patch scores 1 (validation already checked that the
    empty patch scores 0), and an agent's `_test.go` defining the missing function (test-only code would
    make the package build without the fix) never reaches the run."""
    from envfarm import sandbox as sandboxes
    from envfarm.tasks.store import load_tasks
    from envfarm.verifiers.swe import SweVerifier

    task = {t.instance_id: t for t in load_tasks(gorust_mined, "acme/gocalc")}["acme__gocalc-4"]
    cheat = ("diff --git a/calc/cheat_test.go b/calc/cheat_test.go\nnew file mode 100644\n--- /dev/null\n+++ b/calc/cheat_test.go\n"
             "@@ -0,0 +1,3 @@\n+package calc\n+\n+func Mul(a, b int) int { return a * b }\n")
    verifier = SweVerifier(timeout=600)
    results = {}
    for name, patch in (("gold", task.patch), ("cheat", cheat)):
        with sandboxes.open(task.image, run_id="pytest-gorust", task_id=task.instance_id) as box:
            results[name] = verifier.verify(task, box, patch)
    assert results["gold"].value == 1.0
    assert results["cheat"].value == 0.0


def test_rust_splitter_rules_on_diffs():
    def block(path: str, header: str, body: str) -> str:
        return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -10,3 +10,4 @@ {header}\n{body}"

    inside = block("src/a.rs", "mod tests {", "     #[test]\n     fn a() {}\n+    #[test] fn b() {}\n }\n")
    outside = block("src/a.rs", "pub fn f() -> i32 {", "     let x = 1;\n-    x\n+    x + 1\n }\n")
    new_module = block("src/b.rs", "pub fn g() {}", " pub fn g() {}\n+\n+#[cfg(test)]\n+mod tests {\n+    #[test]\n+    fn g() {}\n+}\n")
    assert split_diff(inside, "rust").test_files == ["src/a.rs"]
    assert split_diff(outside, "rust").code_files == ["src/a.rs"]
    assert split_diff(new_module, "rust").test_files == ["src/b.rs"]
    mixed = split_diff(outside + inside.split("\n", 3)[3].replace("@@ -10,3 +10,4 @@", "@@ -40,3 +41,4 @@"), "rust")
    assert mixed.mixed_files == ["src/a.rs"] and mixed.code_files == ["src/a.rs"] and mixed.test_patch == ""
    # tests/ files, `tests.rs` modules and `_test.rs` names are tests whatever their content
    assert split_diff(block("tests/cli.rs", "", "+x\n") + block("src/parse/tests.rs", "", "+x\n"), "rust").test_files == ["tests/cli.rs", "src/parse/tests.rs"]
    assert split_rust_block(split_blocks(inside)[0]) == ("", inside)


def test_rust_and_go_runner_targets():
    def added(path: str) -> str:
        return f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+x\n"

    assert runner_targets(added("tests/cli.rs") + added("tests/common/mod.rs") + added("tests/big/main.rs"), "rust") == ["--test", "cli", "--test", "big"]
    assert runner_targets(added("src/lib.rs") + added("tests/data/in.txt"), "rust") == ["--lib"]
    assert runner_targets(added("tests/data/in.txt"), "rust") == []  # whole suite
    assert runner_targets(added("pkg/a_test.go") + added("b_test.go"), "go") == ["./pkg", "."]
    assert runner_targets(added("pkg/testdata/x.json"), "go") == ["./..."]
