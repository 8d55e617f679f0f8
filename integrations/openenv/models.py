"""The OpenEnv wire types of envfarm's environment: one action per tool call, one observation per result.

An action is a tool call in the shape function-calling models produce (`tool_name` + `arguments`, like
openenv-core's own `CallToolAction`): `bash(command)`, `str_replace(path, old, new)`, `finish()`. The tool
name is a plain string, not an enum, so a wrong name costs the agent a step and comes back as an error
observation (as in envfarm's own episodes) instead of a 422 that a trainer would read as a crash.

The reset observation carries the task's prompt and the tools as OpenAI function definitions; the final
observation (`done`) carries the reward from envfarm's verifier and its details (`grade`).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field


class EnvfarmAction(Action):
    tool_name: str = Field(description="bash | str_replace | finish")
    arguments: Union[dict[str, Any], str] = Field(
        default_factory=dict, description="the tool's arguments: an object, or its JSON text as a model wrote it")


class EnvfarmObservation(Observation):
    output: str = Field(default="", description="the tool's output (reset: empty)")
    error: bool = Field(default=False, description="the call failed (bad call, non-zero exit, str_replace miss)")
    task_id: str = Field(default="", description="the task's instance id")
    prompt: str = Field(default="", description="reset only: the task's problem statement")
    workdir: str = Field(default="", description="reset only: the repository's path in the sandbox")
    tools: list[dict[str, Any]] = Field(default_factory=list, description="reset only: OpenAI function definitions")
    finish_reason: str = Field(default="", description="when done: finish | max_steps | max_seconds | sandbox_error")
    grade: Optional[dict[str, Any]] = Field(default=None, description="when done: the verifier's reward record")


class EnvfarmState(State):
    task_id: str = Field(default="", description="the task of the current episode")
    finish_reason: str = Field(default="", description="why the episode ended ('' while it runs)")
    reward: Optional[float] = Field(default=None, description="the episode's reward once graded")
