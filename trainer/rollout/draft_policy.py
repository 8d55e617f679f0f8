"""When to draft, and with how many MTP heads: the engine's `draft="adaptive"` mode asks `DraftPolicy.choose`
before every decoding step.

Why: drafting pays only where a verify pass of k+1 tokens costs less than the E(k) plain steps it replaces.
Measured on this engine (2 shared CPU cores): greedy batch 1 with 128 new tokens, 3 heads give 1.78x; the RL
demo (batch 32, 12-token completions, T=1) runs 0.69x with 3 heads (bench/results/train.json, 2026-11-30),
because the heads' prompt pass is paid for a handful of tokens and a wide batch makes each verify pass cost
nearly k+1 plain steps. So the choice is made from measurements, not a rule of thumb:

- `CostModel`: the median of the last few measured seconds per decoding step with k heads (k = 0 is a plain step), bucketed
  by active batch size and context length, calibrated online from the engine's own steps; plus the seconds
  per position of a catch-up pass (the heads recomputing what they skipped: the prompt, or the tokens of
  plain steps), kept apart so a catch-up step does not pollute the steady-state cost.
- `AcceptanceTracker`: per request, an exponentially weighted count of accepted and rejected drafts (a
  geometric model: each draft is accepted with probability a given the one before it was), pulled towards a
  running estimate over all requests so a new request starts from what the policy's text usually gives.
- `DraftPolicy.choose`: the k in 0..K with the least expected time for the tokens the batch still has to
  produce (catch-up included), so a completion with fewer tokens left than the catch-up pays back stays
  plain; a bucket with no measurement of k is probed once (only with enough tokens left), and a measurement
  older than `probe_every` of the bucket's decisions is probed again, so a stale estimate cannot lock a
  choice in.

The policy only ever picks k; the speculative rule keeps the output distribution whatever k is chosen, and
each choice depends only on past steps, never on the draws of the step it is made for.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def batch_bucket(rows: int) -> int:
    """Exact up to 4 rows, then powers of two: verify cost grows with width, and batches shrink as rows finish."""
    return rows if rows <= 4 else 1 << (rows - 1).bit_length()


def context_bucket(context: int) -> int:
    """Powers of two from 256 tokens on: a global layer's attention grows with context, slowly at these sizes."""
    return max(0, (max(1, context) - 1) // 256).bit_length()


@dataclass
class _Recent:
    """The last few measurements of one cost: their median is the estimate. A median, not a mean, because on
    a shared machine one preempted step can take 3-5x a normal one (seen on this engine's 2 shared cores:
    a 28 ms three-head step next to 6 ms ones), and a mean would hold that for many steps."""
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=7))
    updated_at: int = 0  # the bucket's decision count at the last measurement

    @property
    def value(self) -> float:
        return statistics.median(self.samples)


class CostModel:
    """Seconds per decoding step with k draft heads, by (batch bucket, context bucket), as measured."""

    def __init__(self) -> None:
        self.steps: dict[tuple[int, int, int], _Recent] = {}
        self.catch_up: dict[tuple[int, int], _Recent] = {}  # (batch bucket, k) -> seconds per recomputed position
        self.decisions: dict[tuple[int, int], int] = {}  # per (batch, context) bucket: how many choices were made

    @staticmethod
    def key(rows: int, context: int) -> tuple[int, int]:
        return batch_bucket(rows), context_bucket(context)

    def record_step(self, rows: int, context: int, k: int, seconds: float) -> None:
        bb, cb = self.key(rows, context)
        entry = self.steps.get((bb, cb, k))
        if entry is None:
            entry = self.steps[(bb, cb, k)] = _Recent()
        entry.samples.append(seconds)
        entry.updated_at = self.decisions.get((bb, cb), 0)

    def samples(self, rows: int, context: int, k: int) -> int:
        entry = self.steps.get((*self.key(rows, context), k))
        return 0 if entry is None else len(entry.samples)

    def record_catch_up(self, rows: int, context: int, k: int, seconds: float, positions: int) -> None:
        """A step that also recomputed `positions` head positions: its excess over a steady step, per position."""
        steady = self.step_seconds(rows, context, k)
        if steady is None or positions <= 0:
            return
        self.catch_up.setdefault((batch_bucket(rows), k), _Recent()).samples.append(max(0.0, seconds - steady) / positions)

    def step_seconds(self, rows: int, context: int, k: int) -> float | None:
        """The bucket's estimate, else that of the nearest context bucket of the same batch bucket (a longer
        context costs a little more per step; it is measured there as soon as that k is chosen)."""
        bb, cb = self.key(rows, context)
        entry = self.steps.get((bb, cb, k))
        if entry is None:
            near = [(abs(c - cb), c) for (b2, c, k2) in self.steps if b2 == bb and k2 == k]
            entry = self.steps[(bb, min(near)[1], k)] if near else None
        return None if entry is None else entry.value

    def catch_up_seconds(self, rows: int, k: int, positions: int) -> float | None:
        if positions <= 0:
            return 0.0
        per = self.catch_up.get((batch_bucket(rows), k))
        return None if per is None else per.value * positions

    def age(self, rows: int, context: int, k: int) -> int | None:
        """Decisions made in this bucket since k was last measured there (None: never)."""
        bb, cb = self.key(rows, context)
        if self.step_seconds(rows, context, k) is None:
            return None
        entry = self.steps.get((bb, cb, k))
        return self.decisions.get((bb, cb), 0) - (entry.updated_at if entry else 0)

    def count_decision(self, rows: int, context: int) -> None:
        key = self.key(rows, context)
        self.decisions[key] = self.decisions.get(key, 0) + 1


@dataclass
class AcceptanceTracker:
    """Per-request acceptance of drafts, shrunk towards the rate over all requests seen so far.

    A draft at depth j (0-based) is accepted, given the one before it was, with a rate that falls with j
    (later heads predict further ahead: 1.93 tokens per step with one head, 3.66 with three on greedy code,
    bench/results/rollout.json). The overall rate of each depth is tracked over all requests; a request
    scales that profile by how its own drafts fare against the overall rate of its steps."""
    decay: float = 0.8  # per step of a request: the last few steps dominate
    global_decay: float = 0.995  # per observation, over all requests and generate calls
    prior_rate: float = 0.5  # before any draft was ever verified
    prior_weight: float = 4.0  # pseudo-trials of the overall rate in a request's estimate
    accepted: list[float] = field(default_factory=list)
    trials: list[float] = field(default_factory=list)
    depth_accepted: list[float] = field(default_factory=list)
    depth_trials: list[float] = field(default_factory=list)
    width_accepted: dict[int, float] = field(default_factory=dict)  # per k: decayed drafts accepted in steps of width k
    width_steps: dict[int, float] = field(default_factory=dict)
    min_width_steps: float = 8.0  # steps of a width before its own mean replaces the depth profile

    def reset(self, batch: int) -> None:
        """A new generate call: its requests start from the overall rates; those are kept."""
        self.accepted = [0.0] * batch
        self.trials = [0.0] * batch

    def reset_row(self, row: int) -> None:
        """A new request in batch row `row` (continuous batching): it starts from the overall rates."""
        while len(self.trials) <= row:
            self.accepted.append(0.0)
            self.trials.append(0.0)
        self.accepted[row] = self.trials[row] = 0.0

    def _grow(self, depth: int) -> None:
        while len(self.depth_trials) < depth:
            self.depth_accepted.append(0.0)
            self.depth_trials.append(0.0)

    def depth_rate(self, j: int) -> float:
        w = 2.0  # pseudo-trials of the prior in each depth's rate
        self._grow(j + 1)
        return (self.depth_accepted[j] + w * self.prior_rate) / (self.depth_trials[j] + w)

    def overall(self) -> float:
        a, t = sum(self.depth_accepted), sum(self.depth_trials)
        return (a + 2.0 * self.prior_rate) / (t + 2.0)

    def observe(self, row: int, k: int, accepted: int) -> None:
        """`accepted` of k drafts passed: depths 0..accepted-1 were accepted, depth `accepted` (if < k)
        rejected, deeper ones never judged."""
        if k <= 0:
            return
        self._grow(k)
        judged = accepted + (accepted < k)
        for j in range(judged):
            self.depth_accepted[j] = self.global_decay * self.depth_accepted[j] + (j < accepted)
            self.depth_trials[j] = self.global_decay * self.depth_trials[j] + 1
        self.accepted[row] = self.decay * self.accepted[row] + accepted
        self.trials[row] = self.decay * self.trials[row] + judged
        self.width_accepted[k] = self.global_decay * self.width_accepted.get(k, 0.0) + accepted
        self.width_steps[k] = self.global_decay * self.width_steps.get(k, 0.0) + 1

    def rate(self, row: int) -> float:
        """This request's per-draft rate relative to the overall one (1.0 = typical)."""
        overall = self.overall()
        own = (self.accepted[row] + self.prior_weight * overall) / (self.trials[row] + self.prior_weight)
        return own / overall

    def expected_tokens(self, row: int, k: int) -> float:
        """Tokens one step with k drafts commits for this request: the mean of steps of width k over all
        requests once there are enough, else 1 + p_0 + p_0 p_1 + ... (p_j: depth j's rate); either scaled by
        the request's own rate. Widths are measured apart because a depth's rate is not the same at every
        width: greedy on code, the first draft passed 93% with one head, 82% with two, 92% with three."""
        scale = self.rate(row)
        if k > 0 and self.width_steps.get(k, 0.0) >= self.min_width_steps:
            return 1.0 + min(float(k), self.width_accepted[k] / self.width_steps[k] * scale)
        total, chain = 1.0, 1.0
        for j in range(k):
            chain *= min(0.999, self.depth_rate(j) * scale)
            total += chain
        return total


class DraftPolicy:
    """Chooses the number of draft heads per decoding step; one instance lives as long as its engine, so
    the costs measured in one generate call inform the next."""

    def __init__(self, max_heads: int, costs: CostModel | None = None, acceptance: AcceptanceTracker | None = None,
                 probe_every: int = 64, min_probe_tokens: int = 16, min_samples: int = 3) -> None:
        self.max_heads = max_heads
        self.costs = costs or CostModel()
        self.acceptance = acceptance or AcceptanceTracker()
        self.probe_every = probe_every  # decisions in a bucket before a measurement counts as stale
        self.min_probe_tokens = min_probe_tokens  # tokens per request left, at least, to probe an unknown cost
        self.min_samples = min_samples  # measurements of a cost in its bucket before it is trusted
        self.chosen: list[int] = [0] * (max_heads + 1)  # how often each k was chosen (reported in stats)

    def start(self, batch: int) -> None:
        self.acceptance.reset(batch)

    def choose(self, rows: list[int], remaining: list[int], context: int,
               catch_up: Sequence[int] | Callable[[int], int], limit: int | None = None) -> int:
        """rows: the active requests; remaining: new tokens each may still produce (same order); context: the
        longest active context; catch_up[k] (or catch_up(k), computed only when asked): head positions a step
        with k heads must recompute first (0 when the heads are current); limit: the most heads to use
        (default max_heads). Returns k, 0 for a plain step."""
        top = min(self.max_heads, self.max_heads if limit is None else limit)
        k = self._choose(rows, remaining, context, catch_up if callable(catch_up) else catch_up.__getitem__, top)
        self.costs.count_decision(len(rows), context)
        self.chosen[k] += 1
        return k

    def _choose(self, rows: list[int], remaining: list[int], context: int, catch_up: Callable[[int], int], top: int) -> int:
        b = len(rows)
        costs = self.costs
        plain = costs.step_seconds(b, context, 0)
        if top == 0 or plain is None or costs.samples(b, context, 0) < self.min_samples:
            return 0  # measure the baseline first: a plain step is never a loss against itself
        left = sum(remaining)
        enough = min(remaining) >= self.min_probe_tokens
        best_k, best_time, unknown = 0, left / b * plain, None  # plain: each step commits one token per row
        for k in range(1, top + 1):
            step = costs.step_seconds(b, context, k)
            if step is None:
                unknown = k  # the widest unmeasured k is probed first: it has the most to gain
                continue
            positions = catch_up(k)
            resume = costs.catch_up_seconds(b, k, positions)
            if resume is None:
                unknown = k
                continue
            if costs.samples(b, context, k) < self.min_samples and positions == 0 and unknown is None:
                unknown = k  # measured too few times here to trust (the first steps of a process run slow)
            per_step = sum(min(self.acceptance.expected_tokens(r, k), rem) for r, rem in zip(rows, remaining))
            time = resume + left / per_step * step
            if time < best_time:
                best_k, best_time = k, time
        if unknown is not None and enough:
            return unknown
        if enough:  # re-measure the stalest estimate; one that needs a catch-up first only a quarter as often
            stale = [(age / (self.probe_every * (1 if k == 0 or catch_up(k) == 0 else 4)), k) for k in range(top + 1)
                     if k != best_k and (age := costs.age(b, context, k)) is not None]
            if stale and max(stale)[0] >= 1:
                return max(stale)[1]
        return best_k

    def record(self, rows: int, context: int, k: int, seconds: float, caught_up: int) -> None:
        """A finished step: its wall time, and how many head positions it recomputed beyond a steady step."""
        if caught_up:
            self.costs.record_catch_up(rows, context, k, seconds, caught_up)
        else:
            self.costs.record_step(rows, context, k, seconds)

    def stats(self) -> dict[str, object]:
        return {"draft_heads_chosen": list(self.chosen), "overall_acceptance_rate": round(self.acceptance.overall(), 3)}
