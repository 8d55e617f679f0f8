"""FAIL_TO_PASS / PASS_TO_PASS from repeated runs: flaky tests are dropped, not counted."""

from envfarm.tasks.validate import RunOutcome, compare
from envfarm.verifiers.logs.status import TestStatus as S
from envfarm.verifiers.run import TestRun


def run(state, **results):
    return RunOutcome(state, TestRun({k.replace("__", "::"): v for k, v in results.items()}, 0))


def test_flaky_tests_are_dropped_from_both_lists():
    before = [run("before", t__fix=S.FAILED, t__keep=S.PASSED, t__flaky=S.PASSED, t__broken=S.FAILED),
              run("before", t__fix=S.FAILED, t__keep=S.PASSED, t__flaky=S.FAILED, t__broken=S.FAILED)]
    after = [run("after", t__fix=S.PASSED, t__keep=S.PASSED, t__flaky=S.PASSED, t__broken=S.FAILED),
             run("after", t__fix=S.PASSED, t__keep=S.PASSED, t__flaky=S.PASSED, t__broken=S.FAILED)]
    f2p, p2p, flaky = compare(before, after)
    assert (f2p, p2p, flaky) == (["t::fix"], ["t::keep"], ["t::flaky"])


def test_missing_before_counts_as_failing_and_flaky_after_is_dropped():
    # Before the fix the module fails to import: the report names the module ("t"), never the test.
    before = [run("before", t=S.ERROR)] * 3
    assert all("t::new" not in r.results for r in before)
    after = [run("after", t__new=S.PASSED, t__x=S.PASSED), run("after", t__new=S.PASSED), run("after", t__new=S.PASSED, t__x=S.PASSED)]
    f2p, p2p, flaky = compare(before, after)
    assert f2p == ["t::new"] and flaky == ["t::x"] and p2p == []


def test_xfail_counts_as_success_skip_does_not():
    f2p, p2p, _ = compare([run("before", t__a=S.SKIPPED, t__b=S.XFAIL)], [run("after", t__a=S.PASSED, t__b=S.XFAIL)])
    assert f2p == ["t::a"] and p2p == ["t::b"]


def test_a_test_skipped_in_both_states_is_listed_nowhere():
    # Grading would keep a skipped PASS_TO_PASS test (SWE-bench's rule), but a skip in the miner's own
    # environment proves nothing about the fix, so it never enters a list.
    f2p, p2p, flaky = compare([run("before", t__a=S.FAILED, t__s=S.SKIPPED)], [run("after", t__a=S.PASSED, t__s=S.SKIPPED)])
    assert (f2p, p2p, flaky) == (["t::a"], [], [])
