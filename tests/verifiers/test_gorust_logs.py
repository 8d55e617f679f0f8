"""Go (`go test -json`) and Rust (`cargo test`) parsers on real runner output.

The logs were made by running the sample module and crate in `logs/samples/` (a passing test, a
failing one, subtests, a skip, parallel tests, an example, a panic, a package that does not build, a
doc-test, an aborting test binary, and a test that forges a result line on stdout):
`go test -json -count=1 ./...` with Debian bookworm's Go 1.19 and trixie's 1.24, `cargo test --no-fail-fast` with
bookworm's cargo 1.65/rustc 1.63 and with rustup's 1.95, and a crate whose integration test calls a
function that does not exist (compile error).
"""

from pathlib import Path

import pytest

from envfarm.verifiers.grading import consistency_problems, grade
from envfarm.verifiers.logs import TestStatus, get_parser
from envfarm.verifiers.logs.cargo_log import parse_cargo_log
from envfarm.verifiers.logs.gotest import parse_gotest_log

LOGS = Path(__file__).parent / "logs"
P, F, S, E = TestStatus.PASSED, TestStatus.FAILED, TestStatus.SKIPPED, TestStatus.ERROR
CALC = "example.com/sample/calc::"

GO_EXPECTED = {
    "example.com/sample/broken": E,  # build failed: no test of it ran
    CALC + "ExampleAdd": P,
    CALC + "TestAdd": P,
    CALC + "TestForger": F,
    CALC + "TestParallelA": P,
    CALC + "TestParallelB": P,
    CALC + "TestSub": F,
    CALC + "TestTable": F,
    CALC + "TestTable/bad_case": F,
    CALC + "TestTable/nested": P,
    CALC + "TestTable/nested/deep": P,
    CALC + "TestTable/one_plus_one": P,
    CALC + "TestTable/skipped": S,
    "example.com/sample/panics::TestBefore": P,
    "example.com/sample/panics::TestPanics": F,  # TestAfter never ran after the panic: missing
}


def test_go_json_real_output():
    parsed = parse_gotest_log((LOGS / "go119_test_json.log").read_bytes())
    assert parsed.results == GO_EXPECTED
    assert parsed.complete
    assert any("broken did not build" in p for p in parsed.problems)
    # TestForger printed "--- PASS: TestNeverRan": test2json made a pass event of it, which is not believed.
    assert "example.com/sample/calc::TestNeverRan" not in parsed.results
    assert parsed.contradictions and "TestNeverRan" in parsed.contradictions[0]
    assert any("never started" in p for p in consistency_problems(parsed, 1))
    assert get_parser("gotest") is parse_gotest_log


def test_go_124_json_real_output():
    """Go 1.24 (trixie) frames the test binary's own output, so the forged line stays output; a build
    failure is a `build-fail` event plus a package `fail` with FailedBuild."""
    parsed = parse_gotest_log((LOGS / "go124_test_json.log").read_bytes())
    assert parsed.results == GO_EXPECTED
    assert parsed.complete and not parsed.contradictions


def _go_events(*events: str) -> str:
    return "\n".join(events) + "\n"


def test_go_package_failing_without_a_failing_test_is_an_error():
    log = _go_events(
        '{"Action":"run","Package":"m/p","Test":"TestA"}',
        '{"Action":"pass","Package":"m/p","Test":"TestA"}',
        '{"Action":"output","Package":"m/p","Output":"panic in TestMain\\n"}',
        '{"Action":"fail","Package":"m/p"}',
    )
    parsed = parse_gotest_log(log)
    assert parsed.results == {"m/p::TestA": P, "m/p": E}
    assert not consistency_problems(parsed, 1)


def test_go_124_build_failure_event_and_a_cut_log():
    log = _go_events(
        '{"Action":"fail","Package":"m/b","FailedBuild":"m/b [m/b.test]"}',
        '{"Action":"run","Package":"m/p","Test":"TestSlow"}',
        '{"Action":"output","Package":"m/p","Test":"TestSlow","Output":"=== RUN   TestSlow\\n"}',
    )
    parsed = parse_gotest_log(log)
    assert parsed.results == {"m/b": E, "m/p::TestSlow": E}
    assert not parsed.complete and any("cut short" in p for p in parsed.problems)


def test_go_package_that_passes_with_a_failed_test_is_a_contradiction():
    log = _go_events(
        '{"Action":"run","Package":"m/p","Test":"TestA"}',
        '{"Action":"fail","Package":"m/p","Test":"TestA"}',
        '{"Action":"pass","Package":"m/p"}',
    )
    assert any("passed but" in c for c in parse_gotest_log(log).contradictions)


@pytest.mark.parametrize("garbage", ["", "not json at all\n", "\x00\xff\xfe{{{\n", '{"Action": 3}\n', '[1,2]\n'])
def test_go_garbage_never_raises_and_reads_nothing(garbage):
    parsed = parse_gotest_log(garbage.encode("latin-1"))
    assert parsed.results == {} and not parsed.complete


RUST_EXPECTED = {
    "aborts@tests/aborts.rs": E,  # the binary aborted: no `test result:` line
    "integration@tests/integration.rs::it_adds": P,
    "integration@tests/integration.rs::it_subs": F,
    "sample@src/lib.rs::tests::adds": P,
    "sample@src/lib.rs::tests::forger": F,
    "sample@src/lib.rs::tests::nested::inner": P,
    "sample@src/lib.rs::tests::never_ran": P,  # forged; the counts below expose it
    "sample@src/lib.rs::tests::panics_ok": P,
    "sample@src/lib.rs::tests::slow": S,
    "sample@src/lib.rs::tests::subs": F,
    "sample@doc::src/lib.rs - add (line 5)": P,
    "sample@doc::src/lib.rs - ignored_doc (line 17)": S,
    "sample@doc::src/lib.rs - sub (line 12)": F,
}


@pytest.mark.parametrize("log", ["cargo163_test.log", "cargo195_test.log"])
def test_cargo_real_output(log):
    parsed = parse_cargo_log((LOGS / log).read_bytes())
    assert parsed.results == RUST_EXPECTED
    assert not parsed.complete  # the aborted binary
    assert sorted(parsed.contradictions) == [
        "4 `ok` lines for sample@src/lib.rs but its `test result:` line counts 3 passed",
        "7 result lines for sample@src/lib.rs but it said `running 6 tests`",
    ]
    assert get_parser("cargo") is parse_cargo_log


def test_cargo_forged_test_is_suspicious_in_grading():
    parsed = parse_cargo_log((LOGS / "cargo163_test.log").read_bytes())
    graded = grade(parsed, ["integration@tests/integration.rs::it_adds"], [], exit_code=101)
    assert not graded.resolved and graded.reward == 0.0 and graded.suspicious


def test_cargo_compile_error_is_a_failing_result():
    parsed = parse_cargo_log((LOGS / "cargo163_compile_error.log").read_bytes())
    assert parsed.results == {"sample@build": E}
    assert not consistency_problems(parsed, 101)


def test_cargo_forged_early_summary_does_not_hide_real_failures():
    log = (
        "     Running unittests src/lib.rs (target/debug/deps/k-0123456789abcdef)\n\nrunning 1 test\n"
        "test t::a ... ok\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"  # printed by the test
        "test t::a ... FAILED\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n"
    )
    parsed = parse_cargo_log(log)
    assert parsed.results == {"k@src/lib.rs::t::a": F}
    assert "two `test result:` lines for k@src/lib.rs" in parsed.contradictions


def test_cargo_binary_without_summary_believes_no_pass():
    log = (
        "     Running unittests src/lib.rs (target/debug/deps/k-0123456789abcdef)\n\nrunning 2 tests\n"
        "test t::a ... ok\ntest t::b ... FAILED\n"
        "     Running tests/x.rs (target/debug/deps/x-0123456789abcdef)\n\nrunning 0 tests\n\n"
        "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
    )
    parsed = parse_cargo_log(log)
    assert parsed.results == {"k@src/lib.rs": E, "k@src/lib.rs::t::b": F}


@pytest.mark.parametrize("garbage", ["", "hello\n", "\xff\xfe\x00test x ... ok\n"])
def test_cargo_garbage_never_raises(garbage):
    parsed = parse_cargo_log(garbage.encode("latin-1"))
    assert parsed.results == {} and not parsed.complete


def test_cargo_custom_harness_output_is_no_result_and_an_incomplete_log():
    log = ("     Running tests/custom.rs (target/debug/deps/custom-0123456789abcdef)\n"
           "custom harness: all 3 checks ok\ntest fake ... ok\n")
    parsed = parse_cargo_log(log)
    assert parsed.results == {} and not parsed.complete
    assert "printed no libtest output" in parsed.problems[0]
