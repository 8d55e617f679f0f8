"""Multi-language plumbing: language detection, per-language patch split and test targets, the lazy recipe
registry, and an undetectable repository recorded as one line against it (the batch goes on)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from envfarm.errors import EnvfarmError
from envfarm.tasks.language import LanguageUndetected, detect, detect_language
from envfarm.tasks.mirror import Mirror
from envfarm.tasks.patchsplit import classify_path, split_diff, runner_targets

from .fixtures import git, write


def _detect(files: dict[str, str]) -> str:
    return detect(sorted(files), lambda p: files.get(p, "").encode() if p in files else None).language


@pytest.mark.parametrize(
    ("files", "language"),
    [
        ({"go.mod": "module x", "main.go": "", "web/app.js": ""}, "go"),
        ({"Cargo.toml": "[package]", "src/lib.rs": ""}, "rust"),
        ({"package.json": "{}", "index.js": "", "lib/a.js": ""}, "javascript"),
        ({"package.json": "{}", "tsconfig.json": "{}", "src/a.ts": ""}, "typescript"),
        ({"package.json": "{}", "tsconfig.json": "{}", "lib/a.js": "", "lib/b.js": "", "test/types.ts": ""}, "javascript"),  # axios's shape
        ({"package.json": '{"devDependencies": {"typescript": "5"}}', "src/a.ts": "", "src/b.ts": "", "c.js": ""}, "typescript"),
        ({"pyproject.toml": "", "pkg/a.py": ""}, "python"),
        # Two manifests: the language with the most source files among the named ones wins.
        ({"pyproject.toml": "", "package.json": "{}", "pkg/a.py": "", "pkg/b.py": "", "pkg/c.py": "", "ui.js": ""}, "python"),
        ({"pyproject.toml": "", "package.json": "{}", "a.py": "", "src/a.js": "", "src/b.js": "", "src/c.ts": ""}, "javascript"),
        # No manifest: file counts, vendored and docs folders left out.
        ({"a.go": "", "b.go": "", "c.go": "", "node_modules/x/1.js": "", "node_modules/x/2.js": "", "node_modules/x/3.js": "", "node_modules/x/4.js": ""}, "go"),
    ],
)
def test_detects_the_language_from_manifests_then_file_counts(files: dict[str, str], language: str) -> None:
    assert _detect(files) == language


def test_undetectable_repositories_say_why_and_how_to_fix() -> None:
    with pytest.raises(LanguageUndetected) as info:
        _detect({"README.md": "", "docs/a.md": "", "one.py": ""})
    assert info.value.reason_class == "language_undetected"
    assert "--language" in info.value.fix and "1 python" in info.value.problem
    with pytest.raises(LanguageUndetected) as empty:
        detect([], lambda p: None)
    assert empty.value.reason_class == "empty_repository"


def test_detect_language_reads_a_real_mirror(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    write(work, {"package.json": '{"name": "x"}', "tsconfig.json": "{}", "src/a.ts": "export const a = 1\n"})
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "init")
    subprocess.run(["git", "clone", "-q", "--mirror", str(work), str(tmp_path / "m.git")], check=True)
    found = detect_language(Mirror(tmp_path / "m.git"), "HEAD")
    assert found.language == "typescript" and found.evidence == "root manifest package.json"


@pytest.mark.parametrize(
    ("path", "language", "expected"),
    [
        ("src/__tests__/sum.js", "javascript", "test"),
        ("src/sum.test.ts", "typescript", "test"),
        ("lib/parse.spec.js", "javascript", "test"),
        ("lib/parse-test.mjs", "javascript", "test"),
        ("src/__snapshots__/sum.test.ts.snap", "typescript", "test"),
        ("src/__mocks__/fs.js", "javascript", "test"),
        ("src/latest.js", "javascript", "code"),
        ("src/contest.ts", "typescript", "code"),
        ("pkg/server_test.go", "go", "test"),
        ("pkg/testdata/golden.txt", "go", "test"),
        ("benches/speed.rs", "rust", "test"),
        ("src/lib.rs", "rust", "code"),
    ],
)
def test_language_split_rules(path: str, language: str, expected: str) -> None:
    assert classify_path(path, language) == expected


def _block(path: str, deleted: bool = False) -> str:
    mode = "deleted file mode 100644\n" if deleted else ""
    return f"diff --git a/{path} b/{path}\n{mode}--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n"


def test_test_targets_point_the_runner_at_test_files_only() -> None:
    patch = "".join(_block(p) for p in ["src/sum.test.ts", "test/fixtures/input.js", "src/__snapshots__/sum.test.ts.snap",
                                         "test/parse.js", "test/helpers/setup.js", "types/index.d.ts"]) + _block("test/old.test.js", deleted=True)
    assert runner_targets(patch, "typescript") == ["src/sum.test.ts", "test/parse.js"]
    go = _block("pkg/a_test.go") + _block("pkg/testdata/x.txt") + _block("b_test.go")
    assert runner_targets(go, "go") == ["./pkg", "."]
    assert runner_targets(_block("tests/test_x.py") + _block("tests/conftest.py"), "python") == ["tests/test_x.py"]
    assert runner_targets(_block("x.cob"), "cobol") == []  # no rule: the whole suite runs


def test_split_keeps_javascript_fixtures_and_snapshots_with_the_tests() -> None:
    diff = _block("src/sum.js") + _block("src/__tests__/sum.js") + _block("src/__snapshots__/a.snap") + _block("README.md")
    split = split_diff(diff, "javascript")
    assert split.code_files == ["src/sum.js"] and split.doc_files == ["README.md"]
    assert split.test_files == ["src/__tests__/sum.js", "src/__snapshots__/a.snap"]


def test_a_registered_block_splitter_can_move_part_of_a_source_file_to_the_tests() -> None:
    from envfarm.tasks import patchsplit

    def halves(block):  # a stand-in rule: everything in a code block is a test
        return "", block.text

    patchsplit.register_block_splitter("toylang", halves)
    try:
        split = split_diff(_block("src/lib.toy"), "toylang")
    finally:
        patchsplit.BLOCK_SPLITTERS.pop("toylang")
    assert split.test_files == ["src/lib.toy"] and not split.code_files and split.patch == ""


def test_registry_loads_language_modules_on_first_use_and_names_the_missing(tmp_path: Path) -> None:
    (tmp_path / "toy_recipes.py").write_text(
        "from envfarm.tasks.envsetup import register\n"
        "class ToyRecipes:\n    language = 'toylang'\n"
        "register(ToyRecipes())\n"
    )
    code = (
        f"import sys; sys.path.append({str(tmp_path)!r})\n"
        "from envfarm.tasks.envsetup import LANGUAGE_MODULES, RECIPES, recipes_for, known_languages\n"
        "LANGUAGE_MODULES['toylang'] = 'toy_recipes'; LANGUAGE_MODULES['ghostlang'] = 'no_such_recipes_module'\n"
        "assert 'toylang' not in RECIPES\n"
        "print(recipes_for('toylang').language, recipes_for('python').language, 'ghostlang' in known_languages())\n"
        "try:\n    recipes_for('ghostlang')\nexcept Exception as exc:\n    print(type(exc).__name__, 'ghostlang' in str(exc))\n"
    )
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["toylang", "python", "True", "EnvfarmError", "True"]
    from envfarm.tasks.envsetup import recipes_for

    with pytest.raises(EnvfarmError, match="no environment recipes for language 'cobol'"):
        recipes_for("cobol")


def test_an_undetectable_repository_is_one_recorded_line_and_the_batch_goes_on(store, tmp_path: Path) -> None:
    import json
    from dataclasses import replace

    from envfarm.store.mining import MiningRepoRow
    from envfarm.tasks.pipeline import MineConfig, run_inline
    from envfarm.tasks.store import funnel

    from .fixtures import issue_record, merge_pr, pr_record

    work, dumps = tmp_path / "prose-work", tmp_path / "dumps"
    work.mkdir()
    dumps.mkdir()
    git(work, "init", "-q", "-b", "main")
    write(work, {"README.md": "a book\n", "chapters/one.md": "It was a dark night.\n"})
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "init")
    base = git(work, "rev-parse", "HEAD")
    merge = merge_pr(work, "fix", 2, "Fix typo, fixes #1", {"chapters/one.md": "It was a dark and stormy night.\n"}, "2024-02-01T00:00:00Z")
    subprocess.run(["git", "clone", "-q", "--mirror", str(work), str(dumps / "acme__prose.git")], check=True)
    records = [issue_record(1, "typo in chapter one", "The first sentence of chapter one is missing words.", "2024-01-10T00:00:00Z"),
               pr_record(2, "Fix typo", "fixes #1", merge, base, "2024-01-20T00:00:00Z")]
    (dumps / "acme__prose.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    config = MineConfig(home=tmp_path / "home", offline_dir=dumps)
    config = replace(config, filters=replace(config.filters, language="auto"))
    run_inline([("acme/prose", ""), ("acme/missing", "")], config, store)
    assert funnel(store)["repos"] == {"failed:language_undetected": 1, "failed:repo_not_found": 1}
    with store.session() as session:
        row = session.get(MiningRepoRow, "acme/prose")
        assert "cannot tell the repository's language" in row.reason and "--language" in row.reason


@pytest.mark.parametrize(
    ("parser", "harness_parser", "f2p", "exported"),
    [
        ("jest", "parse_log_jest", ["src/a.test.js > sum > adds"], ["adds"]),  # Jest's verbose output prints the title
        ("vitest", "parse_log_vitest", ["src/a.test.ts > sum > adds"], ["src/a.test.ts > sum > adds"]),
        ("tap", "parse_log_tap", ["test/a.test.js > outer > inner"], ["- inner"]),  # the harness keeps TAP's dash
        ("junit", "parse_log_jest_json", ["math::adds"], ["math::adds"]),  # mocha, through the jq-transform form
    ],
)
def test_export_carries_language_and_harness_style_ids(parser: str, harness_parser: str, f2p: list[str], exported: list[str]) -> None:
    import json

    pytest.importorskip("swebench", reason="the swebench package (pinned in pyproject.toml) is not installed")
    from envfarm.task import InstallConfig, TaskSpec
    from envfarm.tasks.export import export_row

    task = TaskSpec(instance_id="acme__widget-7", repo="acme/widget", language="typescript", FAIL_TO_PASS=f2p,
                    install=InstallConfig(log_parser=parser, test_cmd="x {report}"))
    row = export_row(task)
    assert row["language"] == "typescript" and row["instance_id"] == "acme__widget-7"
    assert row["log_parser"] == harness_parser and json.loads(row["FAIL_TO_PASS"]) == exported


def test_export_refuses_a_runner_the_harness_cannot_read() -> None:
    from envfarm.task import InstallConfig, TaskSpec
    from envfarm.tasks.export import export_row

    task = TaskSpec(instance_id="acme__widget-8", repo="acme/widget", language="javascript", FAIL_TO_PASS=["a"],
                    install=InstallConfig(log_parser="pytest"))
    with pytest.raises(EnvfarmError, match="none reads envfarm's 'pytest' logs \\(javascript\\)"):
        export_row(task)
