"""The OpenAI chat-completions policy driving the scaffold against a scripted server on 127.0.0.1, on the real
calc task in real sandboxes, graded by SweVerifier: native tool calls, malformed calls, the text fallback,
retries on a dropped connection / 429 / 500, a model that never finishes, and a server that stays down."""

from __future__ import annotations

import pytest
from scripted_openai_server import ScriptedOpenAIServer

from envfarm.sandbox.docker import DockerSandbox
from envfarm.agent.chat import TEXT_PROTOCOL_HINT, NativeCall, parse_native_call
from envfarm.agent.episode import EpisodeLimits
from envfarm.agent.openai_chat import OpenAIChatPolicy
from envfarm.agent.protocol import TOOLS, ToolCallError, tool_schemas
from envfarm.agent.swe import swe_rollout

GOLD_EDIT = ("str_replace", {"path": "calc.py", "old": "    return a - b\n", "new": "    return a + b\n"})
FINISH = ("finish", {})
SCRIPTS = {
    "gold": [[("bash", {"command": "cat calc.py"})], [GOLD_EDIT], [FINISH]],
    "noop": [[FINISH]],
    "malformed": [[("bash", '{"command": "ls"')], [("rm", {"path": "/"})], [GOLD_EDIT], [FINISH]],
    "loops": [[("bash", {"command": "true"})]],
    "text-gold": ['I will fix add.\n<tool_call>{"name": "str_replace", "arguments": {"path": "calc.py", '
                  '"old": "    return a - b\\n", "new": "    return a + b\\n"}}</tool_call>',
                  '<tool_call>{"name": "finish", "arguments": {}}</tool_call>'],
}


class Sandboxes:
    """The engine's sandboxes for the calc task, counted (one for the episode, one for grading)."""

    def __init__(self, client) -> None:  # type: ignore[no-untyped-def]
        self.client, self.opened = client, 0

    def __call__(self, task):  # type: ignore[no-untyped-def]
        self.opened += 1
        return DockerSandbox(task.image, run_id="pytest", task_id=task.instance_id, client=self.client)


def _rollout(server: ScriptedOpenAIServer, model: str, task, engine_client, limits=EpisodeLimits(max_steps=8), **kw):  # type: ignore[no-untyped-def]
    boxes = Sandboxes(engine_client)
    transcript, reward = swe_rollout(task, lambda: OpenAIChatPolicy(server.url, model, backoff_s=0, **kw), boxes, limits=limits)
    return transcript, reward, boxes


def test_the_tool_table_is_offered_as_function_definitions():
    schemas = {s["function"]["name"]: s["function"]["parameters"] for s in tool_schemas()}
    assert set(schemas) == set(TOOLS)
    for name, params in schemas.items():
        assert sorted(params["properties"]) == sorted(TOOLS[name]) == params["required"]


@pytest.mark.parametrize("arguments, message", [
    ('{"command": "ls"', "not valid JSON"),
    ('["ls"]', '"arguments" must be an object'),
    ('{"cmd": "ls"}', "missing ['command']"),
])
def test_malformed_native_arguments_are_clear_errors(arguments, message):
    with pytest.raises(ToolCallError) as caught:
        parse_native_call(NativeCall("c1", "bash", arguments))
    assert message in str(caught.value)


def test_empty_arguments_are_an_empty_object():
    assert parse_native_call(NativeCall("c1", "finish", "")).name == "finish"


def test_a_dropped_connection_a_429_and_a_500_are_retried():
    with ScriptedOpenAIServer(SCRIPTS, faults=["drop", "429", "500"]) as server:
        policy = OpenAIChatPolicy(server.url, "gold", backoff_s=0)
        turn = policy.chat([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], max_tokens=100)
    assert turn.retries == 3 and len(server.requests) == 4
    assert [c.name for c in turn.calls] == ["bash"] and turn.mode == "native"
    assert turn.prompt_tokens == 100 and turn.completion_tokens == 10


def test_extra_body_fields_and_the_turn_budget_reach_the_server():
    with ScriptedOpenAIServer(SCRIPTS) as server:
        policy = OpenAIChatPolicy(server.url, "gold", backoff_s=0, max_tokens_per_turn=50, extra_body={"top_p": 0.5})
        policy.chat([{"role": "user", "content": "u"}], max_tokens=7)
    (request,) = server.requests
    assert request["top_p"] == 0.5 and request["max_tokens"] == 7 and request["tool_choice"] == "auto"


@pytest.mark.engine
@pytest.mark.parametrize("model, expected", [("gold", 1.0), ("noop", 0.0)])
def test_native_tool_calls_drive_the_scaffold_gold_scores_one_noop_zero(swe_task, engine_client, model, expected):
    with ScriptedOpenAIServer(SCRIPTS) as server:
        transcript, reward, _ = _rollout(server, model, swe_task, engine_client)
    assert transcript.finish_reason == "finish", transcript.error
    assert reward.value == expected and reward.passed == (expected == 1.0), reward.details
    first = server.requests[0]
    assert {t["function"]["name"] for t in first["tools"]} == set(TOOLS) and first["model"] == model
    assert transcript.usage["requests"] == len(server.requests) == len(SCRIPTS[model])
    assert transcript.usage["completion_tokens"] == transcript.tokens == 10 * len(SCRIPTS[model])
    assert transcript.usage["prompt_tokens"] == sum(100 + i for i in range(len(SCRIPTS[model])))
    if model == "gold":
        # each result comes back as a tool message answering its call, and the next request carries both
        assert [c["name"] for c in transcript.calls] == ["bash", "str_replace", "finish"]
        assert "return a - b" in transcript.calls[0]["observation"] and "edited calc.py" in transcript.calls[1]["observation"]
        last = server.requests[-1]["messages"]
        calls = [m for m in last if m["role"] == "assistant"]
        results = [m for m in last if m["role"] == "tool"]
        assert [r["tool_call_id"] for r in results] == [c["tool_calls"][0]["id"] for c in calls] == ["call_0_0", "call_1_0"]
        assert "return a + b" in transcript.patch


@pytest.mark.engine
def test_malformed_native_calls_cost_a_step_and_say_why(swe_task, engine_client):
    with ScriptedOpenAIServer(SCRIPTS) as server:
        transcript, reward, _ = _rollout(server, "malformed", swe_task, engine_client)
    assert transcript.finish_reason == "finish" and transcript.steps == 4 and transcript.tool_errors == 2
    bad_json, unknown = transcript.calls[:2]
    assert bad_json["error"] and "not valid JSON" in bad_json["observation"]
    assert unknown["error"] and "unknown tool 'rm'" in unknown["observation"]
    tool_messages = [m for m in transcript.messages if m["role"] == "tool"]
    assert tool_messages[0]["tool_call_id"] == "call_0_0" and tool_messages[0]["content"].startswith("error:")
    assert reward.value == 1.0, reward.details


@pytest.mark.engine
def test_a_model_that_never_calls_finish_stops_at_the_step_limit(swe_task, engine_client):
    with ScriptedOpenAIServer(SCRIPTS) as server:
        transcript, reward, _ = _rollout(server, "loops", swe_task, engine_client, limits=EpisodeLimits(max_steps=3))
    assert transcript.finish_reason == "max_steps" and transcript.steps == 3 and len(server.requests) == 3
    assert reward.value == 0.0 and "failure" not in reward.details  # graded: the policy's failure, not the server's


@pytest.mark.engine
def test_a_server_without_tool_calling_gets_the_text_protocol(swe_task, engine_client):
    with ScriptedOpenAIServer(SCRIPTS, native=False) as server:
        transcript, reward, _ = _rollout(server, "text-gold", swe_task, engine_client)
    assert transcript.finish_reason == "finish" and transcript.usage["mode"] == "text"
    assert reward.value == 1.0, reward.details
    refused, *text_requests = server.requests
    assert "tools" in refused and all("tools" not in r for r in text_requests) and len(text_requests) == 2
    assert text_requests[0]["messages"][0]["content"].endswith(TEXT_PROTOCOL_HINT)
    result = text_requests[1]["messages"][-1]
    assert result["role"] == "user" and result["content"].startswith("<tool_response>") and "edited calc.py" in result["content"]


@pytest.mark.engine
def test_a_server_that_stays_down_ends_the_episode_as_model_error_without_grading(swe_task, engine_client):
    with ScriptedOpenAIServer(SCRIPTS, faults=["500", "drop", "429"]) as server:
        transcript, reward, boxes = _rollout(server, "gold", swe_task, engine_client, retries=2)
    assert transcript.finish_reason == "model_error" and "failed 3 time(s)" in transcript.error
    assert reward.value == 0.0 and reward.details["failure"] == "model_error"
    assert reward.details["failure_class"] == "infrastructure" and boxes.opened == 1  # no grading sandbox


@pytest.mark.engine
def test_a_conversation_that_outgrows_the_context_is_graded_as_it_stands(swe_task, engine_client):
    with ScriptedOpenAIServer(SCRIPTS, faults=["", "context"]) as server:
        transcript, reward, boxes = _rollout(server, "gold", swe_task, engine_client)
    assert transcript.finish_reason == "max_context" and transcript.steps == 1 and "maximum context length" in transcript.error
    assert reward.value == 0.0 and "failure" not in reward.details and boxes.opened == 2  # graded: the policy's limit
