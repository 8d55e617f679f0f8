"""The adaptive drafting decision on injected costs and acceptance: plain where drafting is measured slower,
k heads where they pay, the best k among several, short completions stay plain, stale estimates are
probed again, and the acceptance estimate follows a request's own drafts."""

from __future__ import annotations

from envfarm.trainer.rollout.draft_policy import AcceptanceTracker, CostModel, DraftPolicy, batch_bucket, context_bucket


def calibrated(step_ms: dict[int, float], rows: int = 8, context: int = 300, catch_up_ms_per_position: float | None = None,
               samples: int = 3) -> CostModel:
    costs = CostModel()
    for k, ms in step_ms.items():
        for _ in range(samples):
            costs.record_step(rows, context, k, ms / 1000)
        if catch_up_ms_per_position is not None and k:
            costs.record_catch_up(rows, context, k, ms / 1000 + catch_up_ms_per_position / 1000 * 100, 100)
    return costs


def accepting(rate: float, heads: int = 3, observations: int = 400) -> AcceptanceTracker:
    """An overall acceptance profile with the same per-depth rate at every depth."""
    tracker = AcceptanceTracker()
    tracker.reset(1)
    tracker.depth_accepted = [rate * observations] * heads
    tracker.depth_trials = [float(observations)] * heads
    return tracker


def policy(step_ms: dict[int, float], rate: float, batch: int = 8, **kw) -> DraftPolicy:
    p = DraftPolicy(3, calibrated(step_ms, rows=batch, **kw), accepting(rate))
    p.start(batch)
    return p


STEADY = [0, 0, 0, 0]  # the heads are current: no catch-up for any k


def test_plain_when_drafting_is_measured_slower():
    # The RL demo's regime: a wide batch where a verify pass costs nearly k + 1 plain steps.
    p = policy({0: 10, 1: 19, 2: 28, 3: 37}, rate=0.6)
    assert p.choose(list(range(8)), [100] * 8, 300, STEADY) == 0


def test_heads_when_they_pay():
    # Batch 1 on this engine: a verify pass of 4 tokens costs about a plain step; acceptance 0.8.
    p = policy({0: 6, 1: 6.5, 2: 7, 3: 7.5}, rate=0.8, batch=1)
    assert p.choose([0], [100], 300, STEADY) == 3


def test_the_best_k_among_several():
    # Each extra head costs 60% of a plain step: with acceptance 0.7, one head (1.7 tokens for 1.6)
    # beats plain, and more heads fall behind (2.19 for 2.2, 2.53 for 2.8).
    p = policy({0: 10, 1: 16, 2: 22, 3: 28}, rate=0.7)
    assert p.choose(list(range(8)), [100] * 8, 300, STEADY) == 1


def test_low_acceptance_text_stays_plain():
    p = policy({0: 6, 1: 6.5, 2: 7, 3: 7.5}, rate=0.05, batch=1)
    assert p.choose([0], [100], 300, STEADY) == 0


def test_a_short_completion_does_not_pay_for_the_catch_up():
    # Drafting pays per step (3 heads, 0.8 acceptance, cheap verify), but the heads' prompt pass costs
    # 200 positions at 0.2 ms: 40 ms, which 5 remaining tokens cannot earn back; 400 can.
    p = policy({0: 6, 1: 6.5, 2: 7, 3: 7.5}, rate=0.8, batch=1, catch_up_ms_per_position=0.2)
    prompt_pass = [0, 200, 200, 200]
    assert p.choose([0], [5], 300, prompt_pass) == 0
    assert p.choose([0], [400], 300, prompt_pass) == 3


def test_unmeasured_costs_are_probed_only_with_enough_tokens_left():
    p = DraftPolicy(3, calibrated({0: 10}), accepting(0.8))
    p.start(8)
    assert p.choose(list(range(8)), [8] * 8, 300, [0, 200, 200, 200]) == 0  # demo-sized: never probed
    assert p.choose(list(range(8)), [100] * 8, 300, [0, 200, 200, 200]) == 3  # long: probe the widest


def test_the_baseline_is_measured_first():
    p = DraftPolicy(3, CostModel(), accepting(0.9))
    p.start(1)
    assert p.choose([0], [100], 10, STEADY) == 0


def test_a_stale_estimate_is_probed_again():
    p = policy({0: 10, 1: 19, 2: 28, 3: 37}, rate=0.6)
    p.probe_every = 5
    rows = list(range(8))
    choices = [p.choose(rows, [100] * 8, 300, STEADY) for _ in range(12)]
    assert choices[:5] == [0] * 5  # plain while the measurements are fresh
    assert any(c != 0 for c in choices[5:])  # then a draft width is measured again
    # ... and once re-measured (here: now cheap), the new cost decides.
    for k in (1, 2, 3):
        for _ in range(7):
            p.record(8, 300, k, 0.0105, caught_up=0)
    p.probe_every = 1000  # (plain is stale by now too; this asks what the estimates alone decide)
    assert p.choose(rows, [100] * 8, 300, STEADY) == 3


def test_one_slow_step_does_not_swing_the_estimate():
    costs = CostModel()
    for seconds in (0.006, 0.006, 0.028, 0.006, 0.0061):
        costs.record_step(1, 100, 3, seconds)
    assert costs.step_seconds(1, 100, 3) < 0.007


def test_acceptance_follows_each_request():
    tracker = accepting(0.6)
    tracker.reset(2)
    for _ in range(10):
        tracker.observe(0, 3, 3)  # request 0: every draft accepted
        tracker.observe(1, 3, 0)  # request 1: every first draft rejected
    assert tracker.expected_tokens(0, 3) > tracker.expected_tokens(1, 3) + 1
    assert tracker.expected_tokens(1, 3) < 2.0
    assert tracker.expected_tokens(0, 0) == 1.0
    # Depth by depth: a rejected first draft leaves the deeper ones unjudged.
    fresh = AcceptanceTracker()
    fresh.reset(1)
    fresh.observe(0, 3, 1)
    assert fresh.depth_trials == [1.0, 1.0, 0.0] and fresh.depth_accepted == [1.0, 0.0, 0.0]


def test_each_width_is_judged_by_what_it_yielded():
    # The depth profile says a second head adds little, but steps of width 3 measured 2.6 accepted drafts.
    tracker = accepting(0.5)
    tracker.reset(1)
    assert tracker.expected_tokens(0, 3) < 2.0
    tracker.width_accepted[3], tracker.width_steps[3] = 26.0, 10.0
    assert abs(tracker.expected_tokens(0, 3) - 3.6) < 1e-9
    assert tracker.expected_tokens(0, 2) < 2.0  # other widths keep the profile until measured


def test_a_new_call_starts_from_the_overall_rate():
    tracker = accepting(0.9)
    tracker.reset(1)
    for _ in range(20):
        tracker.observe(0, 3, 0)
    tracker.reset(1)
    assert tracker.rate(0) == 1.0  # the request's own history is gone; the overall profile stays
    assert tracker.overall() < 0.9


def test_buckets():
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 8, 9, 32)] == [1, 2, 3, 4, 8, 8, 16, 32]
    assert [context_bucket(c) for c in (1, 256, 257, 512, 513, 2048)] == [0, 0, 1, 1, 2, 3]
    costs = calibrated({0: 10}, rows=8, context=300)
    assert costs.step_seconds(8, 5000, 0) == 0.010  # an unmeasured context bucket borrows the nearest
    assert costs.step_seconds(32, 300, 0) is None  # a batch bucket is never borrowed: width is the point
