"""A typed client for `envfarm serve openenv`, on openenv-core's own `EnvClient` (one WebSocket session each).

    from envfarm.integrations.openenv.client import EnvfarmAction, EnvfarmEnv

    with EnvfarmEnv(base_url="http://127.0.0.1:8000").sync() as env:
        first = env.reset(task_id="owner__repo-123")          # prompt, tools, a fresh sandbox
        result = env.step(EnvfarmAction(tool_name="bash", arguments={"command": "ls"}))
        result = env.step(EnvfarmAction(tool_name="finish"))  # done, reward from envfarm's verifier

Any OpenEnv client works against the server (`GenericEnvClient` with plain dicts too); this one only adds types.
"""

from __future__ import annotations

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient

from envfarm.integrations.openenv.models import EnvfarmAction, EnvfarmObservation, EnvfarmState

__all__ = ["EnvfarmAction", "EnvfarmEnv", "EnvfarmObservation", "EnvfarmState"]


class EnvfarmEnv(EnvClient[EnvfarmAction, EnvfarmObservation, EnvfarmState]):
    def _step_payload(self, action: EnvfarmAction) -> dict[str, Any]:
        return action.model_dump(exclude={"metadata"})

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[EnvfarmObservation]:
        observation = EnvfarmObservation(**payload.get("observation", {}), done=payload.get("done", False),
                                         reward=payload.get("reward"))
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> EnvfarmState:
        return EnvfarmState(**payload)
