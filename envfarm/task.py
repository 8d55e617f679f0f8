"""The task record every stage shares: SWE-bench's field names plus what envfarm needs to rebuild and run it.

It lives in `envfarm` (not in the miner) so that the verifiers and the trainer can read tasks without
importing `tasks/`. The store persists it (`envfarm.store.models.TaskRow`); JSONL export uses
`to_swebench()` so other tools can read our tasks.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from envfarm.config import settings

INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+__[A-Za-z0-9_.-]+-\d+$|^[A-Za-z0-9_.:-]+$")
TaskKind = Literal["swe", "web", "func"]
# Whose test-id conventions FAIL_TO_PASS / PASS_TO_PASS use. "envfarm": exact ids from envfarm's own
# parsers (its mined tasks). "swebench": the SWE-bench harness's ids (docstring-named Django tests,
# pytest ids cut at a space, shortened path parameters, ...), read and matched by the harness's own
# code: tasks imported from the SWE-bench family, and every export.
TestIds = Literal["envfarm", "swebench"]


class InstallConfig(BaseModel):
    """The recipe that produced a working environment: enough to rebuild this one task alone."""

    model_config = ConfigDict(extra="allow")

    base_image: str = Field(default_factory=lambda: settings().base_image)
    python: str | None = None
    install: list[str] = Field(default_factory=list, description="shell commands run in the env layer")
    test_cmd: str = "python -m pytest -rA"
    log_parser: str = "pytest"
    exclude_newer: str | None = None  # ISO date: dependencies resolved as of this day


class TaskSpec(BaseModel):
    """One verifiable task. `FAIL_TO_PASS`/`PASS_TO_PASS` are test ids as the log parser names them."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    instance_id: str
    repo: str = ""
    base_commit: str = ""
    patch: str = ""
    test_patch: str = ""
    problem_statement: str = ""
    hints_text: str = ""
    created_at: datetime | None = None
    version: str = ""
    FAIL_TO_PASS: list[str] = Field(default_factory=list)
    PASS_TO_PASS: list[str] = Field(default_factory=list)
    environment_setup_commit: str = ""
    image: str = ""  # the instance image: repository at base_commit, dependencies installed
    language: str = "python"
    kind: TaskKind = "swe"
    workdir: str = "/testbed"
    install: InstallConfig = Field(default_factory=InstallConfig)
    source: dict[str, str] = Field(default_factory=dict)  # issue / pull request URLs
    extra: dict[str, Any] = Field(default_factory=dict)  # kind-specific payload (e.g. web interaction script)
    test_ids: TestIds = "envfarm"

    @field_validator("instance_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not value or not INSTANCE_ID_RE.match(value):
            raise ValueError(
                f"instance_id {value!r} is not of the form owner__repo-PR (letters, digits, '._-' only)"
            )
        return value

    @property
    def test_cmd(self) -> str:
        return self.install.test_cmd

    @property
    def log_parser(self) -> str:
        """The parser run_tests reads this task's logs with.

        Under the harness's conventions that is the harness's own parser: the one the task's recipe names
        (`swebench:parse_log_...`, from a dataset row that carries it), else the one the harness picks for
        the repository (`swebench:owner/repo`).
        """
        parser = self.install.log_parser
        if self.test_ids == "swebench" and not parser.startswith("swebench:"):
            return f"swebench:{self.repo}"
        return parser

    def to_swebench(self) -> dict[str, Any]:
        """The SWE-bench harness's field names (lists JSON-encoded as the harness stores them)."""
        import json

        return {
            "instance_id": self.instance_id,
            "repo": self.repo,
            "base_commit": self.base_commit,
            "patch": self.patch,
            "test_patch": self.test_patch,
            "problem_statement": self.problem_statement,
            "hints_text": self.hints_text,
            "created_at": self.created_at.isoformat() if self.created_at else "",
            "version": self.version,
            "FAIL_TO_PASS": json.dumps(self.FAIL_TO_PASS),
            "PASS_TO_PASS": json.dumps(self.PASS_TO_PASS),
            "environment_setup_commit": self.environment_setup_commit,
            "image_name": self.image,
            "install_config": self.install.model_dump(),
        }
