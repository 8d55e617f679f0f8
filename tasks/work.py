"""The mining job's records: what each unit of work carries, and the two conversions between them.

A candidate becomes a `WorkItem` (plain data, so it travels to a Ray worker without the source records),
and a validated `WorkItem` becomes a `TaskSpec`. Each conversion is one function here, tested field by
field (tests/tasks/test_work_records.py), because copying fields by hand at the call sites once lost
`hints_text` on the way to the store. The units (`ScanUnit`, `BuildUnit`, `ValidateUnit`) name what a
failure is recorded against.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Union

from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.candidates import Candidate

# Stored with every env row (the store's install_config), but a property of the env group, not of the recipe.
ENV_COMMIT_KEY = "environment_setup_commit"


@dataclass
class WorkItem:
    """One candidate ready for an environment, in plain data so it can travel to a Ray worker."""

    instance_id: str
    repo: str
    pr_number: int
    base_commit: str
    head_commit: str
    patch: str
    test_patch: str
    test_files: list[str]
    problem_statement: str
    created_at: str
    source: dict[str, str]
    link: str
    hints_text: str = ""

    @classmethod
    def from_candidate(cls, candidate: Candidate) -> WorkItem:
        """Everything of the candidate that the environment, the validation and the task need."""
        return cls(
            instance_id=candidate.instance_id,
            repo=candidate.repo,
            pr_number=candidate.pull.number,
            base_commit=candidate.base_commit,
            head_commit=candidate.head_commit,
            patch=candidate.split.patch,
            test_patch=candidate.split.test_patch,
            test_files=list(candidate.split.test_files),
            problem_statement=candidate.problem_statement,
            created_at=iso(candidate.pull.created_at),
            source={"pull_request": candidate.pull.url, **{f"issue_{i.number}": i.url for i in candidate.issues}},
            link=candidate.link,
            hints_text=candidate.hints_text,
        )


@dataclass
class EnvGroup:
    """The candidates of one repository that share one env image (same dependency `version`)."""

    repo: str
    version: str
    env_commit: str
    date: str | None
    mirror_path: str
    items: list[WorkItem]
    language: str = "python"  # the repository's, as given or detected (envfarm.tasks.language)

    @property
    def key(self) -> str:
        return f"{self.repo}@{self.version}"


@dataclass(frozen=True)
class BuiltEnv:
    """A group's env image, ready for instance images on top, and the install recipe that made it."""

    image: str
    install: InstallConfig

    @classmethod
    def from_stored(cls, image: str, install_config: dict[str, Any]) -> BuiltEnv:
        """From an env row's columns: install_config also holds the group's environment_setup_commit."""
        return cls(image, InstallConfig.model_validate({k: v for k, v in install_config.items() if k != ENV_COMMIT_KEY}))


def task_spec(item: WorkItem, group: EnvGroup, env: BuiltEnv, image: str, language: str, directives: list[str]) -> TaskSpec:
    """The task a candidate becomes on its instance `image`; validation adds FAIL_TO_PASS / PASS_TO_PASS."""
    return TaskSpec(
        instance_id=item.instance_id, repo=item.repo, base_commit=item.base_commit, patch=item.patch, test_patch=item.test_patch,
        problem_statement=item.problem_statement, hints_text=item.hints_text, created_at=item.created_at or None, version=group.version,
        environment_setup_commit=group.env_commit, image=image, language=language, install=env.install,
        source=item.source, extra={"test_directives": directives, "pr_number": item.pr_number, "link": item.link},
    )


@dataclass(frozen=True)
class ScanUnit:
    """Sources, mirror and candidate selection for one repository."""

    repo: str
    url: str


@dataclass(frozen=True)
class BuildUnit:
    """The env image of one group."""

    group: EnvGroup


@dataclass(frozen=True)
class ValidateUnit:
    """Instance image and validation of one candidate of a built group."""

    item: WorkItem
    group: EnvGroup


Unit = Union[ScanUnit, BuildUnit, ValidateUnit]


def iso(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""
