"""The tiny checkpoint served over /v1/chat/completions (trainer/rollout/openai_server.py): it answers in the
protocol's shape, with tools, and the OpenAI policy reads its answers. The tiny policy cannot really call
tools; text tool calls in its output become native ones, which is checked on the conversion itself."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from envfarm.agent.openai_chat import OpenAIChatPolicy
from envfarm.agent.protocol import tool_schemas
from envfarm.trainer.model import load_checkpoint
from envfarm.trainer.paths import TINY_CHECKPOINT
from envfarm.trainer.rollout.engine import RolloutEngine
from envfarm.trainer.rollout.openai_server import CompletionServer, _assistant_message, _chat_prompt

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    server = CompletionServer(RolloutEngine(load_checkpoint(TINY_CHECKPOINT))).start()
    yield server
    server.stop()


def test_chat_completions_with_tools_answer_in_the_protocols_shape(tiny):
    body = {"model": "envfarm-tiny", "max_tokens": 12, "temperature": 0, "n": 2, "tools": tool_schemas(),
            "messages": [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "add is wrong"}]}
    data = httpx.post(f"{tiny.url}/chat/completions", json=body, timeout=120).json()
    assert data["object"] == "chat.completion" and data["model"] == "envfarm-tiny" and len(data["choices"]) == 2
    for i, choice in enumerate(data["choices"]):
        message = choice["message"]
        assert choice["index"] == i and message["role"] == "assistant"
        assert choice["finish_reason"] in ("stop", "length", "tool_calls")
        assert isinstance(message["content"], str) or message.get("tool_calls")
    usage = data["usage"]
    assert 0 < usage["completion_tokens"] <= 24 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_the_policy_reads_the_tiny_servers_turns(tiny):
    policy = OpenAIChatPolicy(tiny.url, "envfarm-tiny", max_tokens_per_turn=8, backoff_s=0)
    messages = [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "add is wrong"}]
    turn = policy.chat(messages, max_tokens=100)
    assert turn.mode == "native" and turn.retries == 0 and turn.message["role"] == "assistant"
    assert 0 < turn.completion_tokens <= 8 and turn.prompt_tokens > 0


def test_bad_chat_requests_are_400s(tiny):
    response = httpx.post(f"{tiny.url}/chat/completions", json={"model": "envfarm-tiny", "messages": []}, timeout=30)
    assert response.status_code == 400 and "messages" in response.json()["error"]["message"]


def test_a_text_tool_call_becomes_a_native_one_and_anything_else_stays_content():
    message, finish = _assistant_message('look <tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>', tools=True)
    assert finish == "tool_calls" and message["content"] == "look"
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "bash" and json.loads(call["function"]["arguments"]) == {"command": "ls"}
    for text, tools in [('<tool_call>{"name": "bash"</tool_call>', True), ('<tool_call>{"name": "bash"}</tool_call>', False)]:
        assert _assistant_message(text, tools) == ({"role": "assistant", "content": text}, "")


def test_the_prompt_carries_the_tool_table_and_earlier_calls():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]},
                {"role": "tool", "tool_call_id": "c", "content": "calc.py"}]
    prompt = _chat_prompt(messages, [s["function"] for s in tool_schemas()])
    assert '"name": "str_replace"' in prompt and '<tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>' in prompt
    assert prompt.endswith("<|tool|>\ncalc.py\n<|assistant|>\n")
