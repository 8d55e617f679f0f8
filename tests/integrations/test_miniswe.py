"""mini-swe-agent's own agent loop (DefaultAgent with its SWE-bench config) and model class (LitellmModel, native
bash tool calls) driven by the scripted OpenAI-compatible server on 127.0.0.1, running its commands in an envfarm
sandbox; envfarm grades the working tree's diff: the gold fix gets 1, an agent that submits without a change 0,
and a claimed submission that the repository does not hold earns nothing."""

from __future__ import annotations

import pytest

pytest.importorskip("minisweagent", reason="mini-swe-agent missing: pip install 'envfarm[mini-swe-agent]' (make setup installs it)")

from integration_support import containers_of  # noqa: E402
from scripted_openai_server import ScriptedOpenAIServer  # noqa: E402

from envfarm.integrations.miniswe import run_task, swebench_agent_config  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git diff"
SCRIPTS = {
    "gold": [[("bash", {"command": "cat calc.py"})], [("bash", {"command": "sed -i 's/a - b/a + b/' calc.py"})],
             [("bash", {"command": SUBMIT})]],
    "noop": [[("bash", {"command": SUBMIT})]],
    # claims the fix in its submission text without making it
    "liar": [[("bash", {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && printf '%s\\n' '-    return a - b' '+    return a + b'"})]],
}


def _model(server: ScriptedOpenAIServer, name: str):  # type: ignore[no-untyped-def]
    from minisweagent.models import get_model

    return get_model(f"openai/{name}", {"model_kwargs": {"api_base": server.url, "api_key": "unused", "num_retries": 0},
                                        "cost_tracking": "ignore_errors"})


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    with ScriptedOpenAIServer(SCRIPTS) as s:
        yield s


@pytest.mark.parametrize("name, reward", [("gold", 1.0), ("liar", 0.0)])
def test_mini_swe_agent_in_an_envfarm_sandbox_is_graded_by_envfarm(server, swe_task, engine_client, name, reward):
    run_id = f"pytest-miniswe-{name}"
    result = run_task(swe_task, _model(server, name), run_id=run_id, agent_config={**swebench_agent_config(), "step_limit": 6})
    assert result.info["exit_status"] == "Submitted", result.info
    assert result.reward.value == reward, result.reward.details
    assert ("a + b" in result.patch) == (name == "gold")
    # the agent loop really ran: its bash tool calls reached the server and their outputs came back as tool messages
    assert any(m.get("role") == "tool" for m in result.messages) or name != "gold"
    assert not containers_of(engine_client, run_id)  # the episode's and the grader's sandboxes are gone
