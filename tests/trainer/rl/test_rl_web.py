"""tasks.family=web: pages written for a prompt are staged in a real sandbox, verified in Chromium from the
recorded session (offline CDN shim), and rewarded into the stream. The tiny policy cannot write a page, so a
scripted author (web.author=replay) hands in known-good and known-broken pages; the policy scores them for
training. End to end through the real RL loop on Ray, and with the OpenAI chat driver as the author."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from envfarm.errors import EnvfarmError
from envfarm.stream.events import RewardEvent
from envfarm.trainer.loop.config import load_config
from envfarm.trainer.loop.family import CallStats, GroupWork

DEMO = Path(__file__).resolve().parents[3] / "trainer/configs/demo.yaml"
COUNTER = """<!doctype html><html><body style="font: 32px sans-serif; background: #eef">
<h1 style="background: #236; color: #fff">Counter</h1><button id="inc" style="font-size: 32px">Add one</button> <span id="count">0</span>
<script>let n = 0; document.getElementById("{target}").addEventListener("click", () => {{
  n += 1; document.getElementById("count").textContent = String(n); }});</script></body></html>"""
GOOD = f"Here is the page:\n```html\n{COUNTER.format(target='inc')}\n```"
WRONG_ELEMENT = f"```html\n{COUNTER.format(target='count')}\n```"  # the handler sits on the number, not the button
NO_PAGE = "I am a small model and cannot write web pages."
ESCAPE = f"```html ../../index.html\n{COUNTER.format(target='inc')}\n```"
BUILT = ("```python gen.py\nimport os\nos.makedirs('dist', exist_ok=True)\nopen('dist/index.html', 'w').write(open('page.tpl').read())\n```\n"
         f"```html page.tpl\n{COUNTER.format(target='inc')}\n```\n```build\npython3 gen.py\n```")
FAILING_BUILD = f"```html\n{COUNTER.format(target='inc')}\n```\n```build\nexit 3\n```"
PAGES = [GOOD, WRONG_ELEMENT, NO_PAGE, ESCAPE, BUILT, FAILING_BUILD]


def _browser_or_skip() -> None:
    for tool in ("chromium", "ffmpeg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: run make setup")
    from envfarm.verifiers.web.setup_ffmpeg import video_ready

    if not video_ready():
        pytest.skip("Playwright's ffmpeg link missing: run python -m envfarm.verifiers.web.setup_ffmpeg (make setup does)")


def _replay(tmp_path: Path, pages: list[str], task: str = "web-counter") -> Path:
    path = tmp_path / "pages.jsonl"
    path.write_text("".join(json.dumps({"task": task, "text": p}) + "\n" for p in pages))
    return path


def _roll(cfg, monkeypatch, version: int = 0) -> tuple[CallStats, list[RewardEvent]]:  # type: ignore[no-untyped-def]
    """One call of a real rollout worker of the family on one group of the counter task; the events it publishes."""
    import envfarm.trainer.loop.worker as worker_module

    worker = worker_module.RolloutWorker(cfg, 0, "pytest-web", stream=None)
    published: list[RewardEvent] = []
    monkeypatch.setattr(worker, "publish", lambda event: published.append(event) or "accepted")
    try:
        return worker.family.rollout(worker, [GroupWork("g1", "web-counter")], version), published
    finally:
        worker.close()


def test_config_and_task_errors_are_one_line_each(tmp_path, monkeypatch):
    from envfarm.trainer.families.web import WebFamily

    monkeypatch.delenv("ENVFARM_JUDGE_URL", raising=False)

    assert load_config(DEMO, ["tasks.family=web"]).web.author == "policy"
    with pytest.raises(EnvfarmError, match="web.author is replay but web.replay_file is empty"):
        load_config(DEMO, ["tasks.family=web", "web.author=replay"])
    with pytest.raises(EnvfarmError, match=r"tasks.names \['nope'\] are not web tasks"):
        WebFamily(load_config(DEMO, ["tasks.family=web", "tasks.names=[nope]"]))
    with pytest.raises(EnvfarmError, match=r"has no page for task\(s\) \['web-paint-board'"):
        WebFamily(load_config(DEMO, ["tasks.family=web", "web.author=replay", f"web.replay_file={_replay(tmp_path, [GOOD])}"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "web-counter", "text": 1}\n')
    with pytest.raises(EnvfarmError, match="line 1 is not {task, text}"):
        WebFamily(load_config(DEMO, ["tasks.family=web", "tasks.names=[web-counter]", "web.author=replay", f"web.replay_file={bad}"]))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("- {id: a, prompt: p, rubric: [r], script: {steps: [{click: '#x'}]}}\n")
    with pytest.raises(EnvfarmError, match="the first step must be a goto"):
        WebFamily(load_config(DEMO, ["tasks.family=web", f"web.tasks_file={tasks}"]))
    with pytest.raises(EnvfarmError, match="web.judge_weight is 0.5 but no judge is configured"):
        WebFamily(load_config(DEMO, ["tasks.family=web", "web.judge_weight=0.5", "web.judge_url="]))
    with pytest.raises(EnvfarmError, match="web.author is chat but web.chat_url or web.chat_model is empty"):
        load_config(DEMO, ["tasks.family=web", "web.author=chat", "web.chat_model=m"])
    too_long = _replay(tmp_path, ["x" * 5000])
    family = WebFamily(load_config(DEMO, ["tasks.family=web", "tasks.names=[web-counter]", "web.author=replay", f"web.replay_file={too_long}"]))
    from envfarm.trainer.loop.worker import build_policy

    host = type("Host", (), {"policy": build_policy(load_config(DEMO, ["policy.checkpoint=null"]))})()
    [(completion, failure)] = family._author(host, family.tasks(), [0])  # type: ignore[arg-type]
    assert "exceeds the policy's 4096 positions" in failure and completion.tokens == [host.policy.model.config.eos_token_id]
    # An author model that cannot answer (here: the server does not know it) fails that rollout as infrastructure.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))
    from scripted_openai_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer({"page-writer": [GOOD]}) as server:
        chat = WebFamily(load_config(DEMO, ["tasks.family=web", "tasks.names=[web-counter]", "web.author=chat",
                                            f"web.chat_url={server.url}", "web.chat_model=unknown-model"]))
        [(completion, failure)] = chat._author(host, chat.tasks(), [0])  # type: ignore[arg-type]
    assert failure.startswith("author model: model server at") and "does not exist" in failure
    [graded] = chat._grade_authored(host, ["k"], chat.tasks(), [""], [failure])  # type: ignore[arg-type]
    assert (graded.failure, graded.failure_class, graded.reward.value) == ("author_error", "infrastructure", 0.0)


@pytest.mark.engine
@pytest.mark.browser
@pytest.mark.slow
def test_known_good_and_broken_pages_are_rewarded_in_order(base_image, tmp_path, monkeypatch):
    """A worker of the web family grades six answers for the counter task in its real sandbox and browser:
    the good page 1; the handler on the wrong element below it but above 0; no page, an escaping path and a
    failing build 0 with their reasons, not as failures (they reach no browser); the project whose build
    writes dist/index.html 1. Each event carries the policy's tokens and log-probs of the replayed text."""
    _browser_or_skip()
    cfg = load_config(DEMO, ["tasks.family=web", "tasks.names=[web-counter]", "policy.checkpoint=null", "web.author=replay",
                             f"web.replay_file={_replay(tmp_path, PAGES)}", f"rollout.group_size={len(PAGES)}",
                             f"train.out_dir={tmp_path / 'out'}"])
    stats, published = _roll(cfg, monkeypatch, version=3)
    by = {PAGES.index(p): e for p, e in zip(PAGES, published)}
    assert stats.rollouts == len(PAGES) and stats.failed == 0 and [e.rollout_id for e in published] == [f"g1-{i}" for i in range(len(PAGES))]
    good, wrong, none, escape, built, failing = (by[i] for i in range(len(PAGES)))
    assert good.reward == 1.0 and good.passed and built.reward == 1.0 and built.passed, (good.details, built.details)
    assert 0.0 < wrong.reward < good.reward and not wrong.passed and any("text #count" in c for c in wrong.details["failed_checks"])
    assert none.reward == 0.0 and "no ```html block" in none.details["reason"]
    assert escape.reward == 0.0 and "climbs out" in escape.details["reason"]
    assert failing.reward == 0.0 and "build command exited with 3" in failing.details["reason"]
    assert all(not e.failed and e.policy_version == 3 and e.domain == "web" for e in published)
    for e in published:  # the replayed page is what the policy is trained on: its tokens end in EOS, one log-prob each
        assert len(e.payload["tokens"]) == len(e.payload["logprobs"]) > 0 and all(lp <= 0 for lp in e.payload["logprobs"])
    assert Path(good.details["report"]).is_file() and (tmp_path / "out" / "web" / "g1-0" / "session.webm").is_file()


@pytest.mark.browser
@pytest.mark.slow
def test_an_external_model_writes_the_pages_and_a_video_judge_grades_them(tmp_path, monkeypatch):
    """web.author=chat: an OpenAI-compatible server (a scripted one on 127.0.0.1) writes each page through the
    scaffold's chat driver, and the learned policy scores the text for training. The judge (another scripted
    server) is sent each session as an MP4 video part and blended in; its garbage second answer makes that
    rollout failed (infrastructure), not rewarded. Static pages need no sandbox."""
    _browser_or_skip()
    import sys

    here = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(here / "verifiers"), str(here / "agent")]
    from judge_server import ScriptedJudge, raw, verdict
    from scripted_openai_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer({"page-writer": [GOOD]}) as author, ScriptedJudge([verdict(10, 4, 6), raw(200, "garbage")]) as judge:
        cfg = load_config(DEMO, ["tasks.family=web", "tasks.names=[web-counter]", "policy.checkpoint=null", "web.author=chat",
                                 f"web.chat_url={author.url}", "web.chat_model=page-writer", "rollout.group_size=2",
                                 f"web.judge_url={judge.url}", "web.judge_model=vl", "web.judge_weight=0.5", "web.keep_evidence=false",
                                 f"train.out_dir={tmp_path / 'out'}"])
        stats, published = _roll(cfg, monkeypatch)
        asked = author.requests
    assert len(asked) == 2 and "a click counter" in asked[0]["messages"][-1]["content"] and "tools" not in asked[0]
    judged, failed = published
    from envfarm.trainer.tokenizer import EOS, ByteTokenizer

    assert judged.details["author"] == "chat" and judged.payload["tokens"][-1] == EOS
    assert ByteTokenizer().decode(judged.payload["tokens"]) == GOOD  # the external model's page is what is trained on
    deterministic = judged.details["blend"]["deterministic"]  # the checks' score (1.0 for this page on a quiet machine)
    assert deterministic > 0.5 and judged.details["blend"]["gate"] == 1.0, judged.details
    assert judged.reward == pytest.approx(0.5 * deterministic + 0.5 * (1.0 + 0.4 + 0.6) / 3, abs=1e-4), judged.details
    assert judged.details["judge"]["media"] == "video/mp4"
    assert [p["type"] for p in judge.parts(0)] == ["text", "video_url"] and "Add one" in judge.parts(0)[0]["text"]
    assert failed.failed and failed.failure == "judge_error" and failed.failure_class == "infrastructure" and stats.failed == 1
    assert not (tmp_path / "out" / "web").exists()  # keep_evidence=false


PAINT_BOARD = """```html
<!doctype html><html><body style="font: 24px sans-serif"><h1>Paint</h1><div id="board" style="display: grid;
grid-template-columns: repeat(8, 40px); gap: 2px"></div><script>
const board = document.getElementById("board");
for (let i = 0; i < 64; i++) { const c = document.createElement("div"); c.className = "cell";
  c.style.cssText = "width: 40px; height: 40px; background: #ddd"; c.onclick = () => { c.style.background = "#c22"; };
  board.appendChild(c); }
</script></body></html>
```"""
BALL = """```html
<!doctype html><html><body style="background: #fff"><h1>Ball</h1><canvas id="scene" width="400" height="300"></canvas><script>
const ctx = document.getElementById("scene").getContext("2d"); let x = 50, y = 50, dx = 4, dy = 3;
function frame() { ctx.fillStyle = "#234"; ctx.fillRect(0, 0, 400, 300); x += dx; y += dy;
  if (x < 20 || x > 380) dx = -dx; if (y < 20 || y > 280) dy = -dy;
  ctx.fillStyle = "#fc3"; ctx.beginPath(); ctx.arc(x, y, 20, 0, 2 * Math.PI); ctx.fill(); requestAnimationFrame(frame); }
frame();
</script></body></html>
```"""


@pytest.mark.browser
@pytest.mark.slow
def test_every_builtin_task_can_be_passed_and_failed(tmp_path):
    """The built-in tasks' scripts are satisfiable: a correct page for each passes with reward 1, and the
    counter page handed in for the paint board fails it (graded without a sandbox: no build command)."""
    _browser_or_skip()
    from envfarm.trainer.families.web import WebFamily

    family = WebFamily(load_config(DEMO, ["tasks.family=web", f"train.out_dir={tmp_path}"]))
    items = family.by_id
    no_sandbox = type("Host", (), {"in_sandbox": lambda self, fn: pytest.fail("a page without a build needs no sandbox")})()
    jobs = [("c", items["web-counter"], GOOD), ("p", items["web-paint-board"], PAINT_BOARD), ("b", items["web-bouncing-ball"], BALL),
            ("x", items["web-paint-board"], GOOD)]
    graded = family.grade(no_sandbox, jobs)  # type: ignore[arg-type]
    assert [g.reward.passed for g in graded] == [True, True, True, False], [g.reward.details.get("failed_checks") for g in graded]
    assert [g.reward.value for g in graded[:3]] == [1.0, 1.0, 1.0] and not any(g.failure for g in graded)


@pytest.mark.browser
@pytest.mark.slow
def test_a_task_without_a_script_is_explored_and_judged(tmp_path):
    """Unscripted mode in the family: a task with a rubric and no script is explored (no one wrote what to
    click); the correct counter passes, the one with its handler on the number fails with a dead control,
    and the judge is sent each exploration's video with the interactions as its timeline."""
    _browser_or_skip()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "verifiers"))
    from judge_server import ScriptedJudge, verdict

    from envfarm.trainer.families.web import WebFamily

    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("- id: counter-free\n  prompt: a click counter\n  rubric: [a button labelled Add one, a number that starts at 0,"
                     " each click on the button adds one to the number]\n")
    no_sandbox = type("Host", (), {"in_sandbox": lambda self, fn: pytest.fail("a page without a build needs no sandbox")})()
    with ScriptedJudge([verdict(9, 9, 9)]) as judge:
        family = WebFamily(load_config(DEMO, ["tasks.family=web", f"web.tasks_file={tasks}", f"web.judge_url={judge.url}",
                                              "web.judge_model=vl", "web.judge_weight=0.2", f"train.out_dir={tmp_path / 'out'}"]))
        item = family.by_id["counter-free"]
        assert item.script is None
        good, wrong = family.grade(no_sandbox, [("g", item, GOOD), ("w", item, WRONG_ELEMENT)])  # type: ignore[arg-type]
        sent = [judge.parts(i) for i in range(len(judge.requests))]
    assert good.reward.passed and good.reward.details["mode"] == "explore" and not good.failure, good.reward.details["failed_checks"]
    assert not wrong.reward.passed and any("dead control" in c for c in wrong.reward.details["failed_checks"])
    assert good.reward.value > wrong.reward.value > 0
    for parts, r in zip(sent, (good, wrong)):
        assert [p["type"] for p in parts] == ["text", "video_url"] and "(video time): click" in parts[0]["text"]
        assert r.reward.value == pytest.approx(0.8 * r.reward.details["blend"]["deterministic"] + 0.2 * 0.9, abs=1e-4)
    assert "no visible effect measured" in sent[1][0]["text"] and "dead control" in sent[1][0]["text"]


@pytest.mark.ray
@pytest.mark.browser
@pytest.mark.slow
def test_rl_loop_trains_on_web_rewards(tmp_path, ray_local):
    """The real trainer on local Ray: one step of GRPO on a group of a good and a broken counter page; the
    rewards reach the ledger in order and the group is trained on; the family's evaluation (one page per
    task, the replay's first: the good one) runs before and after."""
    _browser_or_skip()
    from envfarm.store.db import Store
    from envfarm.store.models import RewardRow
    from envfarm.trainer.loop.run import train

    url = f"sqlite:///{tmp_path / 'web.db'}"
    out = tmp_path / "out"
    cfg = load_config(DEMO, ["tasks.family=web", "tasks.names=[web-counter]", "web.author=replay",
                             f"web.replay_file={_replay(tmp_path, [GOOD, WRONG_ELEMENT])}", "rollout.group_size=2",
                             "rollout.groups_per_call=1", "train.groups_per_step=1", "train.steps=1", "train.eval_samples=1",
                             "policy.checkpoint=null", f"train.out_dir={out}", f"store_url={url}"])
    summary = train(cfg)
    assert summary["steps"] == 1 and summary["eval_start"] == summary["eval_end"] == 1.0
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["mean_reward"] for e in evals] == [{"web-counter": 1.0}] * 2, evals
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["trained_groups"] == 1 and row["train_tokens"] > 0
    store = Store(url)
    with store.session() as s:
        trained = {r.rollout_id: r for r in s.query(RewardRow).all() if r.rollout_id in row["rollout_ids"]}
    store.dispose()
    assert len(trained) == 2
    rewards = sorted(trained.items())
    assert rewards[0][1].value == 1.0 and 0.0 < rewards[1][1].value < 1.0  # sample 0 replays the good page, 1 the broken one
