"""Unit tests of the pure pieces: token bucket, backoff, expectations, failure classes, accounting."""

from __future__ import annotations

import random

import pytest

from envfarm.fleet.accounting import FleetAccounting
from envfarm.fleet.expectations import Expectations
from envfarm.fleet.failures import FailureClass, classify
from envfarm.fleet.ratelimit import TokenBucket, backoff_delay


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_never_exceeds_burst_plus_rate_in_any_window() -> None:
    clock = FakeClock()
    bucket = TokenBucket(qps=20, burst=5, clock=clock)
    grants = []
    rng = random.Random(1)
    for _ in range(400):
        clock.sleep(rng.choice([0.0, 0.0, 0.01, 0.2]))
        bucket.acquire(sleep=clock.sleep)
        grants.append(clock.now)
    for i, start in enumerate(grants):
        for window in (0.1, 1.0, 5.0):
            inside = sum(1 for t in grants[i:] if t - start <= window)
            assert inside <= 5 + 20 * window + 1e-9, (start, window, inside)
    assert grants[-1] >= (400 - 5) / 20 - 1e-9  # and it did not grant faster than qps on average


def test_bucket_pause_holds_every_caller() -> None:
    clock = FakeClock()
    bucket = TokenBucket(qps=100, burst=100, clock=clock)
    bucket.pause(2.0)
    assert bucket.reserve() == pytest.approx(2.0)
    clock.sleep(2.5)
    assert bucket.reserve() == 0.0


def test_bucket_rejects_nonsense_rates() -> None:
    with pytest.raises(ValueError, match="qps"):
        TokenBucket(qps=0, burst=1)


def test_backoff_honours_retry_after_and_grows() -> None:
    rng = random.Random(0)
    assert backoff_delay(1, retry_after=3.0, rng=rng) >= 3.0
    early = max(backoff_delay(1, rng=rng) for _ in range(200))
    late = max(backoff_delay(6, rng=rng) for _ in range(200))
    assert early <= 0.1 < late <= 10.0


def test_expectations_fold_in_flight_and_expire() -> None:
    clock = FakeClock()
    exp = Expectations(ttl=10, clock=clock)
    exp.expect_create("f", {"metadata": {"name": "f-a-00000"}})
    exp.expect_delete("f", "f-a-00007")
    exp.expect_binding("f", "f-a-00001", ("claim-1", False, 1, 0.0))
    adds, dels = exp.pending("f")
    assert set(adds) == {"f-a-00000"} and dels == {"f-a-00007"}
    exp.observed("f", "f-a-00000", deleted=False)
    exp.observed("f", "f-a-00001", deleted=False, claim=None)  # not yet the binding we sent
    assert exp.pending("f")[0] == {} and "f-a-00001" in exp.bindings("f")
    exp.observed("f", "f-a-00001", deleted=False, claim="claim-1")
    assert exp.bindings("f") == {}
    clock.sleep(11)
    assert exp.pending("f") == ({}, set())  # a delete never confirmed is dropped after the ttl


def _waiting(reason: str, message: str = "") -> dict:
    return {"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": reason, "message": message}}}]}}


@pytest.mark.parametrize(
    ("pod", "cls", "permanent"),
    [
        (_waiting("ErrImagePull", "manifest unknown: manifest unknown"), FailureClass.IMAGE_PULL, True),
        (_waiting("ImagePullBackOff", "i/o timeout"), FailureClass.IMAGE_PULL, False),
        (_waiting("InvalidImageName"), FailureClass.IMAGE_PULL, True),
        (_waiting("CreateContainerConfigError", "secret missing"), FailureClass.CONTAINER_CONFIG, True),
        ({"status": {"phase": "Failed", "reason": "Evicted", "message": "ephemeral storage"}}, FailureClass.EVICTED, False),
        ({"status": {"phase": "Unknown"}}, FailureClass.NODE_LOST, False),
        ({"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}},
         FailureClass.OOM_KILLED, False),
        ({"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"reason": "Error", "exitCode": 1}}}]}},
         FailureClass.CRASH, False),
        ({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}},
         FailureClass.UNSCHEDULABLE, False),
        ({"status": {"phase": "Pending"}}, FailureClass.STARTUP_TIMEOUT, False),
    ],
)
def test_failure_classes(pod: dict, cls: FailureClass, permanent: bool) -> None:
    failure = classify(pod, now=1000.0, created_at=0.0, startup_timeout=600.0)
    assert failure is not None and (failure.cls, failure.permanent) == (cls, permanent)


def test_a_young_pending_pod_and_a_running_pod_are_not_failures() -> None:
    assert classify({"status": {"phase": "Pending"}}, now=10.0, created_at=0.0, startup_timeout=600.0) is None
    running = {"status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}}
    assert classify(running, now=10_000.0, created_at=0.0, startup_timeout=600.0) is None


def test_accounting_quarantines_only_consecutive_permanent_failures_and_round_trips() -> None:
    acc = FleetAccounting()
    pull = classify(_waiting("ErrImagePull", "not found"), 0, 0, 1)
    evicted = classify({"status": {"reason": "Evicted"}}, 0, 0, 1)
    assert pull is not None and evicted is not None
    assert not acc.record_failure("bad", pull, 3) and not acc.record_failure("bad", evicted, 3)
    acc.record_ready("uid-1", "bad")  # a success resets the streak
    assert [acc.record_failure("bad", pull, 3) for _ in range(3)] == [False, False, True]
    assert acc.record_ready("uid-2", "good") and not acc.record_ready("uid-2", "good")
    status = acc.status_fields()
    assert status["failuresByClass"] == {"ImagePull": 4, "Evicted": 1} and status["successRate"] == "0.286"
    restored = FleetAccounting.from_status(status)
    assert restored.ready_total == 2 and restored.failed_total == 5 and "bad" in restored.quarantined
