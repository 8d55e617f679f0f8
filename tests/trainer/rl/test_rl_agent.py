"""The agent scaffold: tool-call parsing (malformed calls become observations), limits, and a scripted
policy on a real SWE-style task in real sandboxes, graded by SweVerifier: gold patch 1, empty patch 0."""

from __future__ import annotations

import json

import pytest

from envfarm.task import InstallConfig, TaskSpec
from envfarm.agent import EpisodeLimits, ScriptedPolicy, ToolCall, ToolCallError, parse_tool_call, run_episode
from envfarm.agent.swe import swe_rollout

BASE_FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
    "tests/__init__.py": "",
    "tests/test_calc.py": "import unittest\n\nfrom calc import mul\n\n\nclass TestCalc(unittest.TestCase):\n    def test_mul(self):\n        self.assertEqual(mul(2, 3), 6)\n",
}
TEST_PATCH = """\
diff --git a/tests/test_calc.py b/tests/test_calc.py
--- a/tests/test_calc.py
+++ b/tests/test_calc.py
@@ -1,8 +1,11 @@
 import unittest
 
-from calc import mul
+from calc import add, mul
 
 
 class TestCalc(unittest.TestCase):
     def test_mul(self):
         self.assertEqual(mul(2, 3), 6)
+
+    def test_add(self):
+        self.assertEqual(add(2, 3), 5)
"""
GOLD_PATCH = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,5 +1,5 @@
 def add(a, b):
-    return a - b
+    return a + b
 
 
 def mul(a, b):
"""


@pytest.mark.parametrize("text, message", [
    ("I think I should run ls", "no tool call found"),
    ('<tool_call>{"name": "bash", "arguments": {"command": "ls"}</tool_call>', "not valid JSON"),
    ('<tool_call>{"name": "rm", "arguments": {}}</tool_call>', "unknown tool 'rm'"),
    ('<tool_call>{"name": "bash", "arguments": {"cmd": "ls"}}</tool_call>', "missing ['command']"),
    ('<tool_call>{"name": "str_replace", "arguments": {"path": "a", "old": 1, "new": "b"}}</tool_call>', "must be strings"),
    ('<tool_call>["bash"]</tool_call>', 'string "name"'),
])
def test_malformed_calls_are_clear_errors(text, message):
    with pytest.raises(ToolCallError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_tool_call(text)


def test_a_valid_call_round_trips_and_only_the_first_counts():
    call = ToolCall("str_replace", {"path": "x.py", "old": 'a = "1"\n', "new": "a = 2\n"})
    assert parse_tool_call("thinking... " + call.render() + ToolCall("finish").render()) == call


def test_limits_reject_nonsense():
    with pytest.raises(Exception, match="agent.max_steps"):
        EpisodeLimits(max_steps=0)


@pytest.fixture(scope="module")
def swe_task(engine_client, base_image):  # type: ignore[no-untyped-def]
    from envfarm.images.build import ensure_image
    from envfarm.images.recipe import ImageRecipe

    files = tuple((f"/testbed/{p}", c.encode()) for p, c in BASE_FILES.items())
    recipe = ImageRecipe(kind="instance", name="envfarm-rl-calc", parent=base_image, files=files,
                         steps=("cd /testbed && git init -q && git add -A && git -c user.email=t@e -c user.name=t "
                                "commit -qm base && chown -R 1000:1000 /testbed",), workdir="/testbed", user="1000")
    image = ensure_image(recipe, engine_client).tag
    return TaskSpec(instance_id="envfarm__calc-1", repo="envfarm/calc", patch=GOLD_PATCH, test_patch=TEST_PATCH,
                    problem_statement="add(2, 3) returns -1 instead of 5.", image=image,
                    FAIL_TO_PASS=["test_add (tests.test_calc.TestCalc)"], PASS_TO_PASS=["test_mul (tests.test_calc.TestCalc)"],
                    install=InstallConfig(test_cmd="python3 -m unittest -v tests.test_calc", log_parser="unittest"))


def _sandbox_factory(engine_client):  # type: ignore[no-untyped-def]
    from envfarm.sandbox.docker import DockerSandbox

    return lambda task: DockerSandbox(task.image, run_id="pytest", task_id=task.instance_id, client=engine_client)


@pytest.mark.engine
@pytest.mark.parametrize("patch, expected", [(GOLD_PATCH, 1.0), ("", 0.0)])
def test_scripted_policy_gold_patch_scores_one_and_empty_patch_zero(swe_task, engine_client, tmp_path, patch, expected):
    transcript, reward = swe_rollout(swe_task, lambda: ScriptedPolicy.applying(patch), _sandbox_factory(engine_client),
                                     limits=EpisodeLimits(max_steps=5), transcript_dir=tmp_path, rollout_id="r1")
    assert transcript.finish_reason == "finish"
    assert reward.value == expected and reward.passed == (expected == 1.0), reward.details
    assert (transcript.patch.strip() != "") == bool(patch)
    saved = json.loads((tmp_path / "r1.json").read_text())
    assert saved["finish_reason"] == "finish" and saved["messages"][0]["role"] == "system"


@pytest.mark.engine
def test_str_replace_edits_exactly_once_or_explains(swe_task, engine_client):
    calls = [
        '<tool_call>{"name": "str_replace", "arguments": {"path": "calc.py", "old": "return", "new": "return"}}</tool_call>',
        ToolCall("str_replace", {"path": "nope.py", "old": "x", "new": "y"}),
        "no call here",
        ToolCall("str_replace", {"path": "calc.py", "old": "return a - b", "new": "return a + b"}),
        ToolCall("bash", {"command": "sleep 5"}),
        ToolCall("finish"),
    ]
    with _sandbox_factory(engine_client)(swe_task) as sandbox:
        t = run_episode(ScriptedPolicy(calls), swe_task, sandbox, EpisodeLimits(max_steps=10, command_timeout=1))
    tools = [m["content"] for m in t.messages if m["role"] == "tool"]
    assert "occurs 2 times" in tools[0] and "does not exist" in tools[1] and "no tool call found" in tools[2]
    assert tools[3] == "edited calc.py" and "timed out" in tools[4]
    assert t.finish_reason == "finish" and t.tool_errors == 3
    assert "-    return a - b\n+    return a + b" in t.patch


@pytest.mark.engine
def test_step_limit_and_a_sandbox_that_dies_mid_episode(swe_task, engine_client):
    with _sandbox_factory(engine_client)(swe_task) as sandbox:
        t = run_episode(ScriptedPolicy([ToolCall("bash", {"command": "true"})]), swe_task, sandbox, EpisodeLimits(max_steps=3))
    assert t.finish_reason == "max_steps" and t.steps == 3

    made: list = []
    factory = _sandbox_factory(engine_client)

    def tracking(task):  # type: ignore[no-untyped-def]
        made.append(factory(task))
        return made[-1]

    class KillsItsSandbox(ScriptedPolicy):
        """The node dies under the episode: the container is killed from outside before step 2."""

        def act(self, prompt: str) -> tuple[str, int]:
            if self.step == 1:
                engine_client.containers.get(made[-1].container.id).kill()
            return super().act(prompt)

    killer = lambda: KillsItsSandbox([ToolCall("bash", {"command": "ls"}), ToolCall("bash", {"command": "ls"}), ToolCall("finish")])  # noqa: E731
    transcript, reward = swe_rollout(swe_task, killer, tracking, retries=1)
    assert transcript.finish_reason == "sandbox_error" and reward.value == 0
    assert reward.details["failure"] == "sandbox_error" and "sandbox died 2 time(s)" in reward.details["reason"]
    assert len(made) == 2  # retried once on a fresh sandbox, then recorded as failed; both closed (no leak check fails)


@pytest.mark.engine
def test_a_learned_policy_that_emits_garbage_costs_steps_not_crashes(swe_task, engine_client):
    import torch

    from envfarm.trainer.agent.lm import LMAgentPolicy
    from envfarm.trainer.model import PolicyModel, micro
    from envfarm.trainer.rollout import SamplingParams
    from envfarm.trainer.rollout.policy import Policy

    torch.manual_seed(0)
    lm = LMAgentPolicy(Policy(PolicyModel(micro()).eval()), SamplingParams(max_new_tokens=16, temperature=1.0, seed=0), draft=None,
                       max_prompt_tokens=512)
    with _sandbox_factory(engine_client)(swe_task) as sandbox:
        t = run_episode(lm, swe_task, sandbox, EpisodeLimits(max_steps=3, max_tokens=40))
    assert t.finish_reason in ("max_steps", "max_tokens") and t.tool_errors == t.steps
    assert all(m["content"].startswith("error: no tool call found") for m in t.messages if m["role"] == "tool")
    assert len(lm.turns) == t.steps and all(c.routing is not None for c in lm.turns)  # kept for training (R3)
    assert t.patch == ""


@pytest.mark.ray
@pytest.mark.slow
def test_rl_loop_runs_agent_episodes_on_a_swe_task_from_the_store(swe_task, tmp_path, ray_local):
    """tasks.family=swe: workers run the scaffold with the learned policy in the task's image, SweVerifier
    grades, every assistant turn is trained (MOPD here, so all-zero rewards still give a gradient)."""
    from pathlib import Path

    from envfarm.store.db import Store
    from envfarm.store.models import RewardRow, TaskRow
    from envfarm.trainer.loop.config import TINY, load_config
    from envfarm.trainer.loop.run import train

    if not (TINY / "model.safetensors").exists():
        pytest.skip(f"pretrained tiny checkpoint missing in {TINY}: run make pretrain-tiny")
    url = f"sqlite:///{tmp_path / 'swe.db'}"
    store = Store(url)
    with store.session() as s:
        s.add(TaskRow(instance_id=swe_task.instance_id, repo=swe_task.repo, kind="swe", image=swe_task.image, status="validated",
                      spec=json.loads(swe_task.model_dump_json())))
    out = tmp_path / "out"
    demo = Path(__file__).resolve().parents[3] / "trainer/configs/demo.yaml"
    cfg = load_config(demo, ["tasks.family=swe", "rollout.group_size=2", "rollout.groups_per_call=1", "train.groups_per_step=1",
                             "train.steps=1", "agent.max_steps=2", "policy.max_new_tokens=16", "algo.name=mopd",
                             f"algo.teachers={{swe: {TINY}}}", f"train.out_dir={out}", f"store_url={url}"])
    summary = train(cfg)
    assert summary["steps"] == 1
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["trained_groups"] == 1 and row["train_tokens"] > 0 and "reverse_kl" in row
    transcripts = {p.stem for p in (out / "transcripts").glob("*.json")}
    with store.session() as s:
        rewards = s.query(RewardRow).all()  # the worker may have finished a second group while the trainer trained
        assert {r.rollout_id for r in rewards} == transcripts and all(r.value == 0.0 for r in rewards)
        assert {r.rollout_id for r in rewards if r.consumed_at is not None} == set(row["rollout_ids"]) and len(row["rollout_ids"]) == 2
        assert all(r.details["event"]["details"]["finish_reason"] in ("max_steps", "max_tokens") for r in rewards)
    store.dispose()


@pytest.mark.engine
def test_a_missing_image_fails_that_rollout_as_infrastructure(swe_task, engine_client):
    from envfarm import sandbox as sandboxes

    gone = swe_task.model_copy(update={"image": "envfarm/instance.no-such-task:0"})
    make = lambda task: sandboxes.open(task.image, run_id="pytest", task_id=task.instance_id, client=engine_client)  # noqa: E731
    transcript, reward = swe_rollout(gone, lambda: ScriptedPolicy.applying(GOLD_PATCH), make, retries=1)
    assert reward.value == 0 and reward.details["failure"] == "image_missing", reward.details
    assert reward.details["failure_class"] == "infrastructure" and transcript.finish_reason == "error"


@pytest.mark.engine
@pytest.mark.parametrize("update, failure", [
    ({"install": InstallConfig(test_cmd="python3 -m unittest -v tests.test_calc", log_parser="no-such-parser")}, "verifier_task_error"),
    ({"test_patch": "diff --git a/tests/test_calc.py b/tests/test_calc.py\n--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n"
                    "@@ -1,1 +1,1 @@\n-this line is not there\n+x\n"}, "verifier_task_error"),
])
def test_a_task_the_verifier_cannot_grade_fails_that_rollout_as_the_tasks_fault(swe_task, engine_client, update, failure):
    """An unknown log parser, a test_patch that does not apply: the real verifier raises; the rollout is
    recorded as a failed one of class task and nothing propagates to end the run."""
    broken = swe_task.model_copy(update=update)
    transcript, reward = swe_rollout(broken, lambda: ScriptedPolicy.applying(GOLD_PATCH), _sandbox_factory(engine_client))
    assert transcript.finish_reason == "finish"
    assert reward.value == 0 and reward.details["failure"] == failure and reward.details["failure_class"] == "task", reward.details
