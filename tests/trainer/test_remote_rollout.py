"""The remote backend against a real HTTP server on 127.0.0.1 serving a micro model (no network)."""

from __future__ import annotations

import pytest
import torch

from envfarm.errors import EnvfarmError
from envfarm.trainer.model import PolicyModel, micro
from envfarm.trainer.rollout import RolloutEngine, SamplingParams
from envfarm.trainer.rollout.openai_server import CompletionServer
from envfarm.trainer.rollout.remote import RemoteRolloutEngine

torch.set_num_threads(1)


@pytest.fixture()
def served():
    torch.manual_seed(0)
    engine = RolloutEngine(PolicyModel(micro()).eval())
    server = CompletionServer(engine).start()
    yield engine, server
    server.stop()


def test_remote_backend_returns_what_the_local_engine_returns(served):
    engine, server = served
    prompts = [[256, 10, 20, 30], [256, 99]]
    params = SamplingParams(max_new_tokens=9, temperature=0)
    local = engine.generate(prompts, params)
    remote = RemoteRolloutEngine(server.url, "envfarm-tiny").generate(prompts, params, draft="mtp")
    assert remote.tokens == local.tokens
    for a, b in zip(remote.completions, local.completions):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
        assert torch.equal(a.routing, b.routing) and a.finish_reason == b.finish_reason
        assert a.prompt == b.prompt


def test_remote_stop_sequences_and_bad_requests(served):
    engine, server = served
    remote = RemoteRolloutEngine(server.url, "envfarm-tiny")
    free = engine.generate([[256, 1]], SamplingParams(max_new_tokens=12, temperature=0)).tokens[0]
    stop = bytes(free[4:6])
    if any(t > 127 for t in stop):
        pytest.skip("the micro model's output is not ASCII here; stop strings need text")
    out = remote.generate([[256, 1]], SamplingParams(max_new_tokens=12, temperature=0, stop=[stop]))
    assert bytes(out.tokens[0]).endswith(stop) and out.completions[0].finish_reason == "stop"
    with pytest.raises(EnvfarmError, match="answered 400"):
        remote.generate([[256, 10 ** 6]], SamplingParams(max_new_tokens=2))


def test_unreachable_server_names_the_fix():
    remote = RemoteRolloutEngine("http://127.0.0.1:9/v1", "x", timeout=2)
    with pytest.raises(EnvfarmError, match="cannot reach the rollout server"):
        remote.generate([[256]], SamplingParams(max_new_tokens=2))
