"""`envfarm serve openenv` with openenv-core's own clients on loopback: a scripted agent applying the gold fix gets
reward 1 and a no-op agent 0 (graded by envfarm's verifier); two concurrent sessions never share a sandbox, a third
is refused (the server's limit); a client that drops its connection leaves no container; schema and state."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

pytest.importorskip("openenv", reason="openenv-core missing: pip install 'envfarm[openenv]' (make setup installs it)")

from integration_support import GOLD_EDIT, containers_of, wait_until  # noqa: E402
from openenv.core.generic_client import GenericEnvClient  # noqa: E402

from envfarm.integrations.openenv.client import EnvfarmAction, EnvfarmEnv  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_schema_and_metadata_describe_the_tool_call_action(openenv_server):
    schema = httpx.get(f"{openenv_server.url}/schema", timeout=10).json()
    assert {"tool_name", "arguments"} <= set(schema["action"]["properties"])
    assert {"output", "prompt", "tools", "grade"} <= set(schema["observation"]["properties"])
    assert "finish_reason" in schema["state"]["properties"] or "episode_id" in schema["state"]["properties"]
    assert "envfarm" in httpx.get(f"{openenv_server.url}/metadata", timeout=10).json()["name"]


def test_a_scripted_agent_with_the_gold_fix_gets_reward_1(openenv_server, swe_task, engine_client):
    with EnvfarmEnv(base_url=openenv_server.url, message_timeout_s=300).sync() as env:
        first = env.reset(task_id=swe_task.instance_id)
        assert first.observation.prompt == swe_task.problem_statement and not first.done
        assert {t["function"]["name"] for t in first.observation.tools} == {"bash", "str_replace", "finish"}
        sandboxes = lambda: len(containers_of(engine_client, openenv_server.run_id))  # noqa: E731 - read again each time
        wait_until(lambda: sandboxes() == 1, 15, "reset opened one fresh sandbox",
                   lambda: containers_of(engine_client, openenv_server.run_id))

        looked = env.step(EnvfarmAction(tool_name="bash", arguments={"command": "cat calc.py"}))
        assert "return a - b" in looked.observation.output and not looked.done and looked.reward == 0.0
        bad = env.step(EnvfarmAction(tool_name="rm", arguments={"path": "/"}))  # costs a step, reaches no sandbox
        assert bad.observation.error and "unknown tool 'rm'" in bad.observation.output and not bad.done
        edited = env.step(EnvfarmAction(tool_name="str_replace", arguments=json.dumps(GOLD_EDIT)))  # JSON text is read
        assert edited.observation.output == "edited calc.py"
        state = env.state()
        assert state.task_id == swe_task.instance_id and state.step_count == 3 and state.finish_reason == ""

        done = env.step(EnvfarmAction(tool_name="finish"))
        assert done.done and done.reward == 1.0
        assert done.observation.grade["passed"] is True and done.observation.finish_reason == "finish"
        assert env.state().reward == 1.0
        # the episode's sandbox is closed at finish (grading ran in a fresh one, also closed)
        wait_until(lambda: not containers_of(engine_client, openenv_server.run_id), 30, "sandboxes closed after finish")
        after = env.step(EnvfarmAction(tool_name="bash", arguments={"command": "true"}))
        assert after.observation.error and after.done and "episode is over" in after.observation.output


def test_a_no_op_agent_gets_0_through_the_generic_client(openenv_server, swe_task):
    with GenericEnvClient(base_url=openenv_server.url, message_timeout_s=300).sync() as env:
        env.reset(seed=0)
        done = env.step({"tool_name": "finish", "arguments": {}})
        assert done.done and done.reward == 0.0
        assert done.observation["grade"]["passed"] is False


def test_concurrent_sessions_never_share_a_sandbox_and_the_limit_holds(openenv_server, swe_task, engine_client):
    with EnvfarmEnv(base_url=openenv_server.url, message_timeout_s=300).sync() as one, \
            EnvfarmEnv(base_url=openenv_server.url, message_timeout_s=300).sync() as two:
        one.reset(task_id=swe_task.instance_id)
        two.reset(task_id=swe_task.instance_id)
        one.step(EnvfarmAction(tool_name="str_replace", arguments=GOLD_EDIT))
        mine = one.step(EnvfarmAction(tool_name="bash", arguments={"command": "cat /etc/hostname; grep return calc.py"}))
        theirs = two.step(EnvfarmAction(tool_name="bash", arguments={"command": "cat /etc/hostname; grep return calc.py"}))
        assert "a + b" in mine.observation.output and "a - b" in theirs.observation.output  # one's edit is not two's
        assert mine.observation.output.splitlines()[0] != theirs.observation.output.splitlines()[0]
        wait_until(lambda: len(containers_of(engine_client, openenv_server.run_id)) == 2, 15, "one sandbox per session")

        from websockets.sync.client import connect

        with connect(openenv_server.url.replace("http://", "ws://") + "/ws", open_timeout=30) as third:
            refused = json.loads(third.recv(timeout=60))  # openenv-core answers a session over the limit and closes
        assert refused["type"] == "error" and refused["data"]["code"] == "CAPACITY_REACHED", refused
        assert refused["data"]["max_sessions"] == 2
        wait_until(lambda: len(containers_of(engine_client, openenv_server.run_id)) == 2, 15, "the refused session opened none")
    wait_until(lambda: not containers_of(engine_client, openenv_server.run_id), 60, "both sessions' sandboxes released on close")


def test_a_client_that_drops_its_connection_leaves_no_container(openenv_server, engine_client):
    from websockets.sync.client import connect

    ws = connect(openenv_server.url.replace("http://", "ws://") + "/ws", open_timeout=30)
    ws.send(json.dumps({"type": "reset", "data": {"seed": 0}}))
    assert json.loads(ws.recv(timeout=120))["type"] == "observation"
    wait_until(lambda: len(containers_of(engine_client, openenv_server.run_id)) == 1, 15, "the session's sandbox is up")
    ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the client vanished
    ws.socket.close()
    wait_until(lambda: not containers_of(engine_client, openenv_server.run_id), 60, "the dropped session's sandbox removed")


def test_plain_http_step_without_a_session_is_an_error_observation(openenv_server):
    r = httpx.post(f"{openenv_server.url}/step", json={"action": {"tool_name": "bash", "arguments": {"command": "ls"}}},
                   timeout=30)
    assert r.status_code == 200 and r.json()["observation"]["error"] is True
    assert "WebSocket" in r.json()["observation"]["output"]


def test_an_idle_episode_loses_its_sandbox_after_the_idle_timeout(openenv_server, engine_client):
    with EnvfarmEnv(base_url=openenv_server.url, message_timeout_s=300).sync() as env:
        env.reset(seed=0)
        wait_until(lambda: len(containers_of(engine_client, openenv_server.run_id)) == 1, 15, "the episode's sandbox is up")
        # the server runs with --idle-timeout 45, checked every 11 s
        wait_until(lambda: not containers_of(engine_client, openenv_server.run_id), 120, "the idle episode's sandbox released")
        late = env.step(EnvfarmAction(tool_name="bash", arguments={"command": "ls"}))
        assert late.done and late.observation.error and "idle for over 45s" in late.observation.output
