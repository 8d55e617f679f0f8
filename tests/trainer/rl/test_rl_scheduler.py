"""The data scheduler: exact quotas, priorities on ties, skipping tasks solved 0% or 100% with periodic
revisits, partial rollouts bounded by staleness, and state that survives a restart."""

from __future__ import annotations

from collections import Counter

import pytest

from envfarm.errors import EnvfarmError
from envfarm.trainer.scheduler import DataScheduler, PartialRollouts, SchedulerConfig, SourceQuota


def items():
    return [("a1", "swe", "A1"), ("a2", "swe", "A2"), ("b1", "web", "B1"), ("c1", "func", "C1")]


def test_quotas_are_exact_over_time_and_priority_breaks_ties():
    cfg = SchedulerConfig(sources={"swe": SourceQuota(quota=2), "web": SourceQuota(quota=1, priority=5), "func": SourceQuota(quota=1)})
    s = DataScheduler(items(), cfg)
    first = s.next()
    assert first == "B1" or first.startswith("A")  # swe has the largest deficit at the start
    picks = [first] + s.batch(39)
    by_source = Counter("swe" if p.startswith("A") else "web" if p == "B1" else "func" for p in picks)
    assert by_source == {"swe": 20, "web": 10, "func": 10}
    s2 = DataScheduler(items(), SchedulerConfig(sources={"web": SourceQuota(priority=9), "func": SourceQuota(priority=1)}))
    assert s2.next() == "B1"  # equal quota and deficit: higher priority first; swe gets no quota at all
    assert "A1" not in s2.batch(10)


def test_solved_and_hopeless_tasks_are_skipped_but_revisited():
    s = DataScheduler([("easy", "x", "easy"), ("hard", "x", "hard"), ("mid", "x", "mid")],
                      SchedulerConfig(window=4, min_history=4, revisit_every=5))
    s.record("easy", [True] * 4)
    s.record("hard", [False] * 4)
    s.record("mid", [True, False, False, True])
    assert not s.informative("easy") and not s.informative("hard") and s.informative("mid")
    picks = s.batch(10)
    assert Counter(picks)["mid"] == 8  # picks 5 and 10 are revisits of skipped tasks
    assert {picks[4], picks[9]} <= {"easy", "hard"}
    s.record("hard", [True])  # the policy improved: a success in the window makes it informative again
    assert s.informative("hard") and s.pass_rate("hard") == 0.25


def test_scheduler_state_round_trips_and_bad_sources_are_named():
    s = DataScheduler(items())
    s.record("a1", [True, False])
    s.batch(3)
    t = DataScheduler(items())
    t.load_state(s.state())
    assert t.next() == s.next() and t.pass_rate("a1") == 0.5
    with pytest.raises(EnvfarmError, match=r"scheduler.sources names \['math'\]"):
        DataScheduler(items(), SchedulerConfig(sources={"math": SourceQuota()}))
    with pytest.raises(EnvfarmError, match="no tasks"):
        DataScheduler([])


def test_partial_rollouts_resume_only_within_the_staleness_limit():
    p: PartialRollouts[dict] = PartialRollouts(max_staleness=2)
    p.park("t1", {"turns": 3}, started_version=5)
    p.park("t2", {"turns": 1}, started_version=8)
    resumed = p.resumable(current_version=8)
    assert [r.key for r in resumed] == ["t2"] and p.discarded == 1 and p.parked == []
    with pytest.raises(EnvfarmError):
        PartialRollouts(-1)
