"""Go and Rust fixture repositories with real git history: issue-closing PRs whose tests fail before the fix.

acme/gocalc (Go, standard library only):
- PR #2 fixes #1: `Add` subtracts; the PR fixes it and adds `TestAdd` (with subtests) to calc_test.go;
- PR #4 fixes #3: adds `Mul` with a new test file, so before the fix the package does not build.
acme/rcalc (Rust, no dependencies):
- PR #2 fixes #1: `sub` adds; the PR fixes it and adds a test to tests/basic.rs;
- PR #4 fixes #3: `parse` rejects spaces; the fix is in src/parse.rs and its test in src/lib.rs's
  `#[cfg(test)]` module only (a test-only change to a source file: it goes to test_patch);
- PR #6 fixes #5: fix and new test in the same file (src/lib.rs): refused as `tests_inside_fixed_source`.
The crate also has a `harness = false` test target (tests/custom.rs) that prints prose: the whole-suite
env build compiles it, and its output is no result.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .fixtures import git, issue_record, merge_pr, pr_record, write

GO_CALC = """package calc

// Add returns a plus b.
func Add(a, b int) int { return a - b }

// Twice doubles x.
func Twice(x int) int { return 2 * x }
"""
GO_TEST = """package calc

import "testing"

func TestTwice(t *testing.T) {
	if Twice(2) != 4 {
		t.Fatal("twice")
	}
}
"""
GO_ADD_TEST = GO_TEST + """
func TestAdd(t *testing.T) {
	for _, c := range []struct{ name string; a, b, want int }{{"small", 2, 3, 5}, {"zero", 0, 0, 0}} {
		c := c
		t.Run(c.name, func(t *testing.T) {
			if got := Add(c.a, c.b); got != c.want {
				t.Fatalf("Add(%d, %d) = %d", c.a, c.b, got)
			}
		})
	}
}
"""


def _records(name: str, issues: list[tuple[int, str, str]], pulls: list[tuple[int, str, str, str, str]]) -> list[dict]:
    out = [issue_record(n, title, body, f"2024-01-{10 + n:02d}T00:00:00Z") for n, title, body in issues]
    out += [pr_record(n, title, body, merge, base, f"2024-02-{10 + n:02d}T00:00:00Z") for n, title, body, merge, base in pulls]
    for row in out:
        row["data"]["html_url"] = row["data"]["html_url"].replace("acme/calc", name)
    return out


def _publish(work: Path, dump: Path, name: str, records: list[dict]) -> None:
    slug = name.replace("/", "__")
    subprocess.run(["git", "clone", "-q", "--mirror", str(work), str(dump / f"{slug}.git")], check=True)
    (dump / f"{slug}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def make_go_repo(root: Path, dump: Path) -> None:
    work = root / "gocalc-work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    write(work, {"go.mod": "module example.com/gocalc\n\ngo 1.19\n", "calc/calc.go": GO_CALC, "calc/calc_test.go": GO_TEST,
                 "strs/strs.go": "package strs\n\nfunc Upper(s string) string { return s }\n",
                 "strs/strs_test.go": 'package strs\n\nimport "testing"\n\nfunc TestSame(t *testing.T) {\n\tif Upper("A") != "A" {\n\t\tt.Fail()\n\t}\n}\n',
                 "README.md": "gocalc\n"})
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    base2 = git(work, "rev-parse", "HEAD")
    fixed = GO_CALC.replace("return a - b", "return a + b")
    m2 = merge_pr(work, "fix-add", 2, "Fix Add\n\nFixes #1", {"calc/calc.go": fixed, "calc/calc_test.go": GO_ADD_TEST}, "2024-02-01T00:00:00Z")
    m4 = merge_pr(work, "mul", 4, "Add Mul, fixes #3", {
        "calc/calc.go": fixed + "\n// Mul returns a times b.\nfunc Mul(a, b int) int { return a * b }\n",
        "calc/mul_test.go": 'package calc\n\nimport "testing"\n\nfunc TestMul(t *testing.T) {\n\tif Mul(3, 4) != 12 {\n\t\tt.Fatal("mul")\n\t}\n}\n',
        "calc/testdata/cases.txt": "3 4 12\n",
    }, "2024-03-01T00:00:00Z")
    _publish(work, dump, "acme/gocalc", _records("acme/gocalc", [
        (1, "Add subtracts", "calc.Add(2, 3) returns -1 instead of 5: it subtracts its arguments."),
        (3, "No way to multiply", "The calc package has Add but no Mul; please add Mul(a, b int) int."),
    ], [(2, "Fix Add", "Fixes #1.", m2, base2), (4, "Add Mul", "fixes #3", m4, m2)]))


RUST_LIB = """//! rcalc: small arithmetic.

mod parse;
pub use parse::parse;

/// Subtracts.
///
/// ```
/// assert_eq!(rcalc::add(1, 1), 2);
/// ```
pub fn sub(a: i64, b: i64) -> i64 {
    a + b
}

/// Adds.
pub fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds() {
        assert_eq!(add(2, 2), 4);
    }
}
"""
RUST_PARSE = """/// Parses a decimal number.
pub fn parse(text: &str) -> Option<i64> {
    text.parse().ok()
}
"""


def make_rust_repo(root: Path, dump: Path) -> None:
    work = root / "rcalc-work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    write(work, {"Cargo.toml": '[package]\nname = "rcalc"\nversion = "0.1.0"\nedition = "2018"\n\n[dependencies]\n\n'
                               '[[test]]\nname = "custom"\nharness = false\n',
                 "tests/custom.rs": 'fn main() {\n    println!("custom harness: fine");\n}\n',
                 "src/lib.rs": RUST_LIB, "src/parse.rs": RUST_PARSE,
                 "tests/basic.rs": "#[test]\nfn add_works() {\n    assert_eq!(rcalc::add(1, 2), 3);\n}\n",
                 ".gitignore": "/target\nCargo.lock\n"})
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    base2 = git(work, "rev-parse", "HEAD")
    lib2 = RUST_LIB.replace("    a + b\n}\n\n/// Adds.", "    a - b\n}\n\n/// Adds.")
    m2 = merge_pr(work, "fix-sub", 2, "Fix sub, fixes #1", {
        "src/lib.rs": lib2,
        "tests/basic.rs": "#[test]\nfn add_works() {\n    assert_eq!(rcalc::add(1, 2), 3);\n}\n\n#[test]\nfn sub_works() {\n    assert_eq!(rcalc::sub(5, 3), 2);\n}\n",
    }, "2024-02-01T00:00:00Z")
    lib4 = lib2.replace("        assert_eq!(add(2, 2), 4);\n    }\n", "        assert_eq!(add(2, 2), 4);\n    }\n\n    #[test]\n"
                        "    fn parses_padded() {\n        assert_eq!(parse(\" 42 \"), Some(42));\n    }\n")
    m4 = merge_pr(work, "trim", 4, "parse: trim spaces (fixes #3)", {
        "src/parse.rs": RUST_PARSE.replace("text.parse().ok()", "text.trim().parse().ok()"), "src/lib.rs": lib4,
    }, "2024-03-01T00:00:00Z")
    lib6 = lib4.replace("pub fn add(a: i64, b: i64) -> i64 {\n    a + b\n}", "pub fn add(a: i64, b: i64) -> i64 {\n    a.saturating_add(b)\n}")
    lib6 = lib6.replace("    fn parses_padded() {", "    fn add_saturates() {\n        assert_eq!(add(i64::MAX, 1), i64::MAX);\n    }\n\n    #[test]\n    fn parses_padded() {")
    m6 = merge_pr(work, "saturate", 6, "add saturates, fixes #5", {"src/lib.rs": lib6}, "2024-03-05T00:00:00Z")
    _publish(work, dump, "acme/rcalc", _records("acme/rcalc", [
        (1, "sub adds", "rcalc::sub(5, 3) returns 8, but a subtraction should give 2."),
        (3, "parse rejects padding", "rcalc::parse(\" 42 \") returns None; numbers with spaces around them should parse."),
        (5, "add overflows", "rcalc::add(i64::MAX, 1) panics in debug builds; it should saturate at i64::MAX."),
    ], [(2, "Fix sub", "fixes #1", m2, base2), (4, "Trim in parse", "fixes #3", m4, m2), (6, "Saturating add", "fixes #5", m6, m4)]))
