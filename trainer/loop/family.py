"""A task family: what the RL loop trains on, and the only place that knows how a rollout of it runs.

The loop is generic over families. A family loads its tasks, runs the rollouts of some groups on a rollout
worker (generation, sandboxes, grading) and publishes one `RewardEvent` per rollout, and may evaluate the
policy on all its tasks. The trainer sees tasks only as (id, source, domain) and rollouts only as events.

Families are registered by name (`tasks.family` in the run config) with the module that implements them,
imported on first use so that validating a config imports no model or sandbox code. A new family is a new
module under trainer/families/ and one `FAMILIES` entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

if TYPE_CHECKING:  # the protocols below name these; importing them at run time would pull in torch
    from envfarm.sandbox.protocol import Sandbox
    from envfarm.stream.events import RewardEvent
    from envfarm.trainer.loop.config import RunConfig
    from envfarm.trainer.rollout.policy import Policy
    from envfarm.trainer.rollout.sampling import SamplingParams

T = TypeVar("T")


class TaskItem(Protocol):
    """What the trainer knows of a task: its id, the scheduler's quota unit, the MOPD teacher domain."""

    id: str
    source: str
    domain: str


@dataclass
class GroupWork:
    """One group to roll out: `group_size` samples of one task. Rollout ids are `{group_id}-{i}`, chosen by
    the trainer, so a call retried after a worker died re-publishes the same ids and the stream drops the
    duplicates. `members` is the JSON state of a group parked unfinished by a partial rollout (empty for a
    new group); `started_version` is the policy version that started the group, kept across continuations."""

    group_id: str
    task_id: str
    started_version: int = 0
    members: list[dict[str, Any]] = field(default_factory=list)

    @property
    def resumed(self) -> bool:
        return bool(self.members)


@dataclass
class CallStats:
    """What one worker call reports back, besides the events it published."""

    gen_s: float = 0.0
    grade_s: float = 0.0
    tokens: int = 0
    rollouts: int = 0
    duplicates: int = 0
    failed: int = 0
    acceptance: float = 1.0
    parked: list[GroupWork] = field(default_factory=list)  # unfinished groups for the trainer to continue
    resumed: int = 0  # groups of this call that continued a parked one


class RolloutHost(Protocol):
    """What a rollout worker lends the family for one call: the policy at the current version, the run's
    config and identity, a grading sandbox that is replaced when it dies, and the stream."""

    cfg: RunConfig
    index: int
    run_id: str
    policy: Policy
    sampling: SamplingParams
    draft: str | None

    def in_sandbox(self, fn: Callable[[Sandbox], T]) -> tuple[T | None, str]:
        """fn(the worker's sandbox), on a fresh sandbox again after a SandboxError, up to rollout.grade_retries
        times; (None, the last reason) when it kept failing."""
        ...

    def publish(self, event: RewardEvent) -> str:
        """Publish one graded rollout, waiting while the stream is full: "accepted" or "duplicate"."""
        ...


class TaskFamily(Protocol):
    """Constructed with the run config, in the trainer (for its tasks) and in every rollout worker."""

    def tasks(self) -> list[TaskItem]:
        ...

    def rollout(self, host: RolloutHost, work: list[GroupWork], version: int) -> CallStats:
        """Roll out and grade these groups under policy `version`, publishing one event per finished rollout."""
        ...

    def evaluate(self, host: RolloutHost, samples: int) -> dict[str, Any] | None:
        """Pass rate on every task with `samples` draws each, published nowhere; None if the family has no
        evaluation. A dict with `per_task` and `mean`, or with `error`."""
        ...


@dataclass(frozen=True)
class FamilyEntry:
    """A registered family: where it lives, and what the config's cross-checks need to know without importing it."""

    target: str  # "module:Class"
    partial_rollouts: bool = False  # can park unfinished groups and continue them (rollout.partial)
    shared_sandbox: bool = True  # grades every task in the worker's one sandbox (else a sandbox per task image)

    def load(self) -> type[TaskFamily]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


FAMILIES: dict[str, FamilyEntry] = {
    "func": FamilyEntry("envfarm.trainer.families.func:FuncFamily", partial_rollouts=True, shared_sandbox=True),
    "swe": FamilyEntry("envfarm.trainer.families.swe:SweFamily", partial_rollouts=False, shared_sandbox=False),
    "web": FamilyEntry("envfarm.trainer.families.web:WebFamily", partial_rollouts=False, shared_sandbox=True),
}


def family_names(**capabilities: bool) -> list[str]:
    """The registered families with these capabilities, e.g. family_names(partial_rollouts=True)."""
    return [n for n, e in FAMILIES.items() if all(getattr(e, k) == v for k, v in capabilities.items())]


def open_family(cfg: RunConfig) -> TaskFamily:
    """The configured family (config validation has already checked that the name is registered)."""
    return FAMILIES[cfg.tasks.family].load()(cfg)  # type: ignore[call-arg]
