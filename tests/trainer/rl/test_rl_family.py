"""Task families as the loop sees them: the config accepts only registered families and checks capabilities
(not names); a family registered from outside the loop runs on a rollout worker with no change to the loop;
the worker's grading sandbox is replaced when it dies and the family told when it keeps dying."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from envfarm.errors import EnvfarmError, SandboxError
from envfarm.stream.events import RewardEvent
from envfarm.trainer.loop.config import load_config
from envfarm.trainer.loop.family import FAMILIES, CallStats, FamilyEntry, GroupWork, RolloutHost, open_family

DEMO = Path(__file__).resolve().parents[3] / "trainer/configs/demo.yaml"


@dataclass(frozen=True)
class EchoTask:
    id: str
    source: str = "echo"
    domain: str = "code"


class EchoFamily:
    """Rewards a completion by its length; "grading" reads the worker's sandbox id (and fails on a dead one)."""

    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]
        self.cfg = cfg

    def tasks(self) -> list[EchoTask]:
        return [EchoTask("a"), EchoTask("b")]

    def rollout(self, host: RolloutHost, work: list[GroupWork], version: int) -> CallStats:
        stats = CallStats()
        batch = host.policy.generate(["x = "] * len(work), host.sampling, draft=host.draft)
        where, failure = host.in_sandbox(self._grade)
        for w, c in zip(work, batch.completions):
            stats.duplicates += host.publish(RewardEvent(rollout_id=f"{w.group_id}-0", task_id=w.task_id, policy_version=version,
                                                         reward=float(len(c.tokens)), failure=failure, details={"sandbox": where})) == "duplicate"
            stats.rollouts += 1
        return stats

    @staticmethod
    def _grade(sandbox) -> str:  # type: ignore[no-untyped-def]
        if sandbox.dies:
            raise SandboxError(f"{sandbox.id} died", "it is a test")
        return sandbox.id

    def evaluate(self, host: RolloutHost, samples: int) -> None:
        return None


@pytest.fixture
def echo_registered(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setitem(FAMILIES, "echo", FamilyEntry(f"{__name__}:EchoFamily"))


def test_only_registered_families_and_capabilities_decide(echo_registered):
    cfg = load_config(DEMO, ["tasks.family=echo"])
    assert isinstance(open_family(cfg), EchoFamily) and [t.id for t in open_family(cfg).tasks()] == ["a", "b"]
    with pytest.raises(EnvfarmError, match=r"tasks.family='nosuch' is not a registered task family") as info:
        load_config(DEMO, ["tasks.family=nosuch"])
    assert "func" in info.value.fix and "echo" in info.value.fix
    # The checks follow what a family declares, not its name: echo declared no partial rollouts, and (by
    # default) grading in the worker's one sandbox, so listed pods serve it as they serve func.
    with pytest.raises(EnvfarmError, match=r"rollout.partial.enabled is implemented for tasks.family=func only"):
        load_config(DEMO, ["tasks.family=echo", "rollout.partial.enabled=true", "rollout.partial.token_budget=2"])
    assert load_config(DEMO, ["tasks.family=echo", "sandbox.backend=kubernetes", "sandbox.kubernetes.pods=[p]"]).tasks.family == "echo"
    with pytest.raises(EnvfarmError, match=r"grades tasks.family=func\|web\|echo only from listed pods \(swe episodes"):
        load_config(DEMO, ["tasks.family=swe", "sandbox.backend=kubernetes", "sandbox.kubernetes.pods=[p]"])


class FakeSandbox:
    made: list["FakeSandbox"] = []

    def __init__(self, dies: bool) -> None:
        self.id, self.dies, self.closed = f"fake-{len(FakeSandbox.made)}", dies, False
        FakeSandbox.made.append(self)

    def close(self) -> None:
        self.closed = True


@pytest.mark.ray
@pytest.mark.parametrize("retries, dying, expect", [(1, 1, "fake-1"), (1, 2, None), (0, 1, None)])
def test_a_registered_family_runs_on_a_worker_whose_sandbox_is_replaced(echo_registered, ray_local, monkeypatch, retries, dying, expect):
    import envfarm.trainer.loop.worker as worker_module

    FakeSandbox.made = []
    monkeypatch.setattr(worker_module, "make_sandbox", lambda cfg, index, run_id: FakeSandbox(dies=len(FakeSandbox.made) < dying))
    cfg = load_config(DEMO, ["tasks.family=echo", "policy.checkpoint=null", "policy.max_new_tokens=3", f"rollout.grade_retries={retries}"])
    worker = worker_module.RolloutWorker(cfg, 0, "pytest", stream=None)
    published: list[RewardEvent] = []
    monkeypatch.setattr(worker, "publish", lambda event: published.append(event) or "accepted")
    stats = worker.rollout([GroupWork("g1", "a"), GroupWork("g2", "b")], [ray_local.put(worker.policy.model.state_dict())], 7)
    assert stats.rollouts == 2 and [e.rollout_id for e in published] == ["g1-0", "g2-0"]
    assert all(e.policy_version == 7 and e.reward == 3.0 for e in published)
    assert [e.details["sandbox"] for e in published] == [expect, expect]
    assert all(e.failed == (expect is None) for e in published)
    if expect is None:
        assert published[0].failure.startswith(f"{FakeSandbox.made[-1].id} died")
    assert len(FakeSandbox.made) == min(dying, retries + 1) + (expect is not None)  # replaced after each death, up to the retries
    assert all(s.closed == s.dies for s in FakeSandbox.made)  # a dead one is closed; the live one is kept for the next call
    worker.close()
    assert all(s.closed for s in FakeSandbox.made)
