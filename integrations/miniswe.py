"""mini-swe-agent on envfarm tasks: its environment protocol on an envfarm sandbox, and a runner that grades.

`EnvfarmEnvironment` is a mini-swe-agent environment (`execute(action, cwd, timeout) -> {output, returncode,
exception_info}`, `get_template_vars`, `serialize`, `cleanup`) whose commands run in a sandbox from
`envfarm.sandbox.open`, so on Podman/Docker or Kubernetes pods by configuration, with envfarm's containment
(no network, dropped capabilities, limits) instead of `docker run` on the host. Like mini-swe-agent's own
environments it raises `Submitted` when a command's output starts with COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT.

`run_task(task, model)` runs mini-swe-agent's own `DefaultAgent` with its SWE-bench config (the prompts and
limits its users know) on one task, then grades the repository's diff with envfarm's verifier in a fresh
sandbox. The diff is taken from the working tree (`collect_patch`), not from the text the agent submitted: an
agent cannot claim a patch it did not make.

    from minisweagent.models import get_model
    from envfarm.integrations.miniswe import run_task
    model = get_model("openai/Qwen/Qwen3-8B", {"model_kwargs": {"api_base": "http://localhost:8000/v1"}})
    result = run_task(task, model)     # result.reward.value, result.info["exit_status"], result.patch
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Any

# mini-swe-agent prints a banner on import, and litellm fetches a price table from the internet on import unless
# told to use the copy it ships: envfarm never reaches a host it was not asked to.
os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from envfarm.integrations.extras import require  # noqa: E402 - after the environment above

require("mini-swe-agent")

from minisweagent.exceptions import Submitted  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from envfarm import sandbox as sandboxes  # noqa: E402
from envfarm.agent.episode import EpisodeLimits  # noqa: E402
from envfarm.agent.session import ToolSession  # noqa: E402
from envfarm.agent.swe import SandboxFactory  # noqa: E402
from envfarm.errors import SandboxError  # noqa: E402
from envfarm.task import TaskSpec  # noqa: E402
from envfarm.verifiers.reward import Reward  # noqa: E402
from envfarm.verifiers.swe import SweVerifier  # noqa: E402

SUBMIT = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


class EnvfarmEnvironmentConfig(BaseModel):
    image: str
    cwd: str = "/testbed"
    timeout: int = 60  # seconds per command, as mini-swe-agent's SWE-bench config
    output_limit: int = 200_000  # bytes kept of a command's output (the sandbox's own cap applies too)
    env: dict[str, str] = {}


class EnvfarmEnvironment:
    """mini-swe-agent's environment protocol on one envfarm sandbox for `task` (a `ToolSession`)."""

    def __init__(self, *, task: TaskSpec, make_sandbox: SandboxFactory, limits: EpisodeLimits | None = None,
                 verifier: SweVerifier | None = None, **kwargs: Any) -> None:
        kwargs.pop("environment_class", None)
        self.config = EnvfarmEnvironmentConfig(**{"image": task.image, "cwd": task.workdir, **kwargs})
        self.session = ToolSession(task, make_sandbox, limits or EpisodeLimits(command_timeout=self.config.timeout), verifier)

    def execute(self, action: dict, cwd: str = "", *, timeout: int | None = None) -> dict[str, Any]:
        command = str(action.get("command", ""))
        sandbox = self.session.sandbox
        if sandbox is None:
            return {"output": "", "returncode": -1, "exception_info": "the episode is over: its sandbox was released"}
        env_prefix = "".join(f"export {k}={_quote(v)}; " for k, v in self.config.env.items())
        try:
            r = sandbox.exec(env_prefix + command, timeout=float(timeout or self.config.timeout), workdir=cwd or self.config.cwd,
                             output_limit=self.config.output_limit)
        except SandboxError as exc:
            return {"output": "", "returncode": -1, "exception_info": f"the sandbox failed: {exc.line()}"}
        self.session.transcript.steps += 1
        self.session.transcript.calls.append({"step": self.session.transcript.steps, "name": "bash",
                                              "arguments": {"command": command}, "observation": r.output[-4000:],
                                              "error": r.exit_code != 0})
        output = {"output": r.output, "returncode": r.exit_code,
                  "exception_info": f"the command timed out after {timeout or self.config.timeout}s" if r.timed_out else ""}
        lines = r.output.lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == SUBMIT and r.exit_code == 0:
            submission = "".join(lines[1:])
            raise Submitted({"role": "exit", "content": submission,
                             "extra": {"exit_status": "Submitted", "submission": submission}})
        return output

    def get_template_vars(self, **kwargs: Any) -> dict[str, Any]:
        return {**self.config.model_dump(), **platform.uname()._asdict(), **kwargs}

    def serialize(self) -> dict[str, Any]:
        return {"info": {"config": {"environment": self.config.model_dump(mode="json"),
                                    "environment_type": f"{type(self).__module__}.{type(self).__name__}"}}}

    def grade(self) -> Reward:
        """Collect the working tree's diff, release the sandbox and grade the diff in a fresh one."""
        return self.session.finish()

    def cleanup(self) -> None:
        self.session.close()


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


@dataclass
class MiniSweResult:
    task_id: str
    reward: Reward
    info: dict[str, Any] = field(default_factory=dict)  # mini-swe-agent's exit status and submission
    patch: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)


def swebench_agent_config() -> dict[str, Any]:
    """The `agent:` section of mini-swe-agent's own SWE-bench config (prompts, step and cost limits)."""
    from minisweagent.config import get_config_from_spec

    return dict(get_config_from_spec("benchmarks/swebench.yaml")["agent"])


def run_task(task: TaskSpec, model: Any, *, make_sandbox: SandboxFactory | None = None, run_id: str = "miniswe",
             agent_config: dict[str, Any] | None = None, verifier: SweVerifier | None = None) -> MiniSweResult:
    """mini-swe-agent's `DefaultAgent` with `model` on `task` in an envfarm sandbox; the diff graded by envfarm."""
    from minisweagent.agents.default import DefaultAgent

    make_sandbox = make_sandbox or (lambda t: sandboxes.open(t.image, run_id=run_id, task_id=t.instance_id))
    env = EnvfarmEnvironment(task=task, make_sandbox=make_sandbox, verifier=verifier)
    try:
        agent = DefaultAgent(model, env, **(agent_config if agent_config is not None else swebench_agent_config()))
        try:
            info = agent.run(task.problem_statement)
        except Exception as exc:  # noqa: BLE001 - the agent's own failure (model error, ...) is graded as it stands
            info = {"exit_status": type(exc).__name__, "submission": "", "exception_str": str(exc)[:500]}
        reward = env.grade()
        return MiniSweResult(task.instance_id, reward, info, env.session.transcript.patch, agent.messages)
    finally:
        env.cleanup()
