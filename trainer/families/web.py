"""The web family in the RL loop (tasks.family=web): the policy writes a page for a prompt with a rubric;
the page is verified in a browser from the recorded session, and the reward goes into the stream like any
other family's.

One rollout: the author's text (the learned policy's completion, or with web.author=replay a page read
from web.replay_file and scored by the policy, so a scripted or external page is a valid off-policy
sample) -> `web_output.extract` (one HTML file, or a small project with a build command; paths checked) ->
a project's build command runs in the worker's grading sandbox (no network, the sandbox's limits) and its
output is copied out; a page without one is data and is written out directly (nothing of it runs outside
the browser) -> served on loopback to Chromium with the offline CDN shim (no other host reachable) ->
verified by the task's interaction script (scripted mode) or by the unscripted explorer -> reward =
the verifier's gate x blend of the checks and the optional multimodal judge (verifiers/web/blend.py).

What goes wrong is accounted for on the event: an answer with no usable page or a failing build earns 0
(the policy's doing, trained on); a sandbox that keeps dying, a browser that cannot start or a judge that
fails makes the rollout failed (failure_class infrastructure), which the trainer leaves out.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from envfarm.errors import EnvfarmError
from envfarm.sandbox.protocol import Sandbox
from envfarm.stream.events import RewardEvent
from envfarm.trainer.families.web_output import WebOutput, extract
from envfarm.trainer.families.web_tasks import WebItem, load_web_tasks
from envfarm.trainer.loop import payload
from envfarm.trainer.loop.config import RunConfig, WebCfg
from envfarm.trainer.loop.family import CallStats, GroupWork, RolloutHost
from envfarm.trainer.rollout.policy import Policy
from envfarm.trainer.rollout.result import Completion
from envfarm.userfiles import read_text
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.web.blend import RewardBlend, blend_exploration
from envfarm.verifiers.web.browser import BrowserHost
from envfarm.verifiers.web.cdn import CdnShim
from envfarm.verifiers.web.judge import JudgeClient
from envfarm.verifiers.web.serve import copy_from_sandbox
from envfarm.verifiers.web.verifier import verify_web_async

STAGE_ROOT = "/tmp/envfarm-web"


@dataclass
class Graded:
    """One rollout's outcome: the reward, and for an infrastructure failure its reason."""

    reward: Reward
    failure: str = ""
    failure_class: str = ""


def load_replay(path: str, items: list[WebItem]) -> dict[str, list[str]]:
    """{task id: [page texts]} from a JSONL file of {task, text}; every task needs at least one page."""
    texts: dict[str, list[str]] = {}
    fix = "write one JSON object per line: {\"task\": ID, \"text\": PAGE}"
    for n, line in enumerate(read_text(path, "web replay file", "set web.replay_file to a JSONL file of {task, text}").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EnvfarmError(f"web replay file {path} line {n} is not JSON: {exc.msg}", fix) from None
        if not isinstance(row, dict) or not isinstance(row.get("task"), str) or not isinstance(row.get("text"), str):
            raise EnvfarmError(f"web replay file {path} line {n} is not {{task, text}} with string values", fix)
        texts.setdefault(row["task"], []).append(row["text"])
    missing = [i.id for i in items if not texts.get(i.id)]
    if missing:
        raise EnvfarmError(f"web replay file {path} has no page for task(s) {missing[:5]}", "add a line {\"task\": ID, \"text\": PAGE} for each")
    return texts


def forced_completion(policy: Policy, prompt: str, text: str) -> Completion:
    """`text` as if the policy had written it: its tokens (ended by EOS) and the policy's log-probs of them,
    so the trainer's importance ratios and KL see what the current policy thinks of the page."""
    prompt_ids = policy.tokenizer.encode(prompt)
    tokens = policy.tokenizer.encode(text, bos=False) + [policy.model.config.eos_token_id]
    limit = policy.model.config.max_position_embeddings
    if len(prompt_ids) + len(tokens) > limit:
        raise EnvfarmError(f"a replayed page of {len(tokens)} tokens after a {len(prompt_ids)}-token prompt exceeds the policy's "
                           f"{limit} positions", "shorten the page in web.replay_file, or use a policy with a longer context")
    return Completion(prompt_ids, tokens, score_tokens(policy, prompt_ids, tokens), None, "stop")


def score_tokens(policy: Policy, prompt_ids: list[int], tokens: list[int]) -> list[float]:
    """log p(tokens[j] | prompt, tokens[:j]) under the policy (untempered, as the engine reports its own samples)."""
    with torch.no_grad():
        logprobs = policy.token_logprobs(torch.tensor([prompt_ids + tokens]))[0, len(prompt_ids) - 1:]
    return [float(x) for x in logprobs]


def make_judge(web: WebCfg) -> JudgeClient | None:
    if web.judge_url:
        return JudgeClient(web.judge_url, web.judge_model or "default", os.environ.get("ENVFARM_JUDGE_API_KEY"), mode=web.judge_mode)
    return JudgeClient.from_env()


class WebFamily:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg, self.web = cfg, cfg.web
        items = load_web_tasks(self.web.tasks_file, cfg.tasks.names)
        self.by_id = {i.id: i for i in items}
        unscripted = [i.id for i in items if i.script is None]
        if unscripted:
            try:
                from envfarm.verifiers.web import explorer  # noqa: F401 - checked here so a run fails before it starts
            except ImportError:
                raise EnvfarmError(f"web task(s) {unscripted[:5]} have no interaction script and this install has no unscripted "
                                   "verifier", "give each task a script, or update envfarm") from None
        self.replay = load_replay(self.web.replay_file, items) if self.web.author == "replay" else {}
        self.judge = make_judge(self.web)
        self.blend = RewardBlend(self.web.judge_weight, self.web.gate)
        if self.blend.judge_weight > 0 and self.judge is None:
            raise EnvfarmError(f"web.judge_weight is {self.web.judge_weight} but no judge is configured",
                               "set web.judge_url and web.judge_model (or ENVFARM_JUDGE_URL), or web.judge_weight=0")
        self.cdn = CdnShim()

    def tasks(self) -> list[WebItem]:
        return list(self.by_id.values())

    # -- authoring --------------------------------------------------------------------------------
    def _author(self, host: RolloutHost, items: list[WebItem], index_in_group: list[int]) -> list[tuple[Completion, str]]:
        """(completion, failure) per sample: "" when the page was written, else why not (an unreachable
        author model, a page too long for the policy to score); a failed sample's completion is empty."""
        if self.web.author == "policy":
            return [(c, "") for c in host.policy.generate([item.text for item in items], host.sampling, draft=host.draft).completions]
        out: list[tuple[Completion, str]] = []
        for item, i in zip(items, index_in_group):
            failure = ""
            if self.web.author == "replay":
                text = self.replay[item.id][i % len(self.replay[item.id])]
            else:
                text, failure = self._chat(item)
            try:
                out.append((forced_completion(host.policy, item.text, text), failure))
            except EnvfarmError as exc:
                out.append((forced_completion(host.policy, item.text, ""), exc.line()))
        return out

    def _chat(self, item: WebItem) -> tuple[str, str]:
        """The page from the external model (the scaffold's OpenAI chat driver, no tools), or "" and why not."""
        from envfarm.agent.chat import ModelServerError
        from envfarm.agent.openai_chat import OpenAIChatPolicy

        driver = OpenAIChatPolicy(self.web.chat_url, self.web.chat_model, api_key=os.environ.get("ENVFARM_AUTHOR_API_KEY"),
                                  tool_mode="text", temperature=self.cfg.policy.temperature, max_tokens_per_turn=self.web.chat_max_tokens)
        try:
            turn = driver.chat([{"role": "user", "content": item.text}], self.web.chat_max_tokens)
        except ModelServerError as exc:
            return "", f"author model: {exc.line()}"
        finally:
            driver.client.close()
        content = turn.message.get("content")
        return (content if isinstance(content, str) else ""), ""

    # -- grading ----------------------------------------------------------------------------------
    @staticmethod
    def _write(output: WebOutput, dest: Path) -> str:
        """A page without a build is data: its checked files are written straight to `dest` for serving."""
        for path, body in output.files.items():
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        return ""

    def _build(self, sandbox: Sandbox, key: str, output: WebOutput, dest: Path) -> str:
        """Write a project into the sandbox, run its build command there (no network, the sandbox's limits), and
        copy what is served (dist/ if the build made it, else the root) out to `dest`. '' or the policy's problem.
        The folder is removed before the next build, so one sample's build cannot touch another's files; links and
        special files the build made are deleted before the copy (a link could point outside the page)."""
        root = shlex.quote(f"{STAGE_ROOT}/{key}")
        sandbox.exec(f"rm -rf {STAGE_ROOT} && mkdir -p {root}", timeout=30)
        try:
            for path, body in output.files.items():
                sandbox.write_file(f"{STAGE_ROOT}/{key}/{path}", body)
            built = sandbox.exec(output.build, timeout=self.web.build_timeout, workdir=f"{STAGE_ROOT}/{key}")
            if not built.ok:
                what = "timed out" if built.timed_out else f"exited with {built.exit_code}"
                return f"the page's build command {what}: {' '.join(built.output.split())[-300:]}"
            sandbox.exec(f"find {root} ! -type f ! -type d -delete", timeout=30)
            served = f"{STAGE_ROOT}/{key}/dist" if sandbox.exec(f"test -f {root}/dist/index.html", timeout=30).ok else f"{STAGE_ROOT}/{key}"
            try:
                copy_from_sandbox(sandbox, served, dest)
            except (tarfile.TarError, OSError) as exc:
                return f"the built project cannot be copied out: {exc}"
        finally:
            sandbox.exec(f"rm -rf {STAGE_ROOT}", timeout=30)
        return "" if (dest / "index.html").is_file() else "the built project has no index.html (in dist/ or its root)"

    async def _verify(self, jobs: list[tuple[WebItem, Path, Path]]) -> list[Reward | str]:
        """Verify the staged pages one after another in one browser; an exception becomes its one-line reason."""
        results: list[Reward | str] = []
        async with BrowserHost() as browser:
            for item, app, out_dir in jobs:
                try:
                    if item.script is not None:
                        results.append(await verify_web_async(browser, app, item.script, out_dir, self.judge, self.blend, self.cdn))
                    else:
                        from envfarm.verifiers.web.explorer import explore_web_async

                        explored = await explore_web_async(browser, app, out_dir, item.rubric_text, cdn=self.cdn)
                        results.append(await asyncio.to_thread(blend_exploration, explored, self.blend, self.judge, item.rubric_text))
                except EnvfarmError as exc:
                    results.append(exc.line())
                except Exception as exc:  # noqa: BLE001 - a browser crash is one rollout's infrastructure failure, not the run's
                    results.append(f"{type(exc).__name__}: {exc}")
        return results

    def grade(self, host: RolloutHost, jobs: list[tuple[str, WebItem, str]]) -> list[Graded]:
        """Grade (key, task, policy text) jobs: extract the files; a project with a build command is built in the
        worker's sandbox; then every page is verified in one browser."""
        evidence_root = Path(self.cfg.train.out_dir) / "web" if self.web.keep_evidence else None
        tmp = Path(tempfile.mkdtemp(prefix="envfarm-web-"))
        try:
            outputs = [extract(text) for _, _, text in jobs]
            apps = [tmp / key / "app" for key, _, _ in jobs]
            staged = [out.problem or (self._write(out, app) if not out.build else "") for out, app in zip(outputs, apps)]
            builds = [n for n, out in enumerate(outputs) if out.ok and out.build]
            graded: dict[int, Graded] = {}
            if builds:
                built, failure = host.in_sandbox(lambda sandbox: [self._build(sandbox, jobs[n][0], outputs[n], apps[n]) for n in builds])
                for i, n in enumerate(builds):
                    if built is None:
                        graded[n] = Graded(Reward.zero(f"sandbox: {failure}"), "sandbox_error", "infrastructure")
                    else:
                        staged[n] = built[i]
            todo = []
            for n, ((key, item, _), out, problem) in enumerate(zip(jobs, outputs, staged)):
                if n in graded:
                    continue
                if problem:
                    graded[n] = Graded(Reward.zero(f"no page: {problem}", files=sorted(out.files)))
                else:
                    todo.append((n, item, apps[n], (evidence_root or tmp / "evidence") / key))
            for (n, _, _, _), result in zip(todo, asyncio.run(self._verify([(item, app, out) for _, item, app, out in todo]))):
                if isinstance(result, str):
                    graded[n] = Graded(Reward.zero(f"verifier: {result}"), "verifier_error", "infrastructure")
                else:
                    failure = str(result.details.get("failure") or "")
                    graded[n] = Graded(result, failure, str(result.details.get("failure_class") or ""))
            return [graded[n] for n in range(len(jobs))]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _grade_authored(self, host: RolloutHost, keys: list[str], items: list[WebItem], texts: list[str], failures: list[str]) -> list[Graded]:
        """Grade the samples that were written; one whose author failed is a failed rollout (infrastructure for
        an unreachable model, task for a page the policy cannot score)."""
        todo = [n for n, f in enumerate(failures) if not f]
        graded = dict(zip(todo, self.grade(host, [(keys[n], items[n], texts[n]) for n in todo]))) if todo else {}
        for n, f in enumerate(failures):
            if f:
                graded[n] = Graded(Reward.zero(f), "author_error" if f.startswith("author model") else "unscorable_page",
                                   "infrastructure" if f.startswith("author model") else "task")
        return [graded[n] for n in range(len(items))]

    # -- the family protocol ------------------------------------------------------------------------
    def rollout(self, host: RolloutHost, work: list[GroupWork], version: int) -> CallStats:
        g = self.cfg.rollout.group_size
        items = [self.by_id[w.task_id] for w in work for _ in range(g)]
        t0 = time.perf_counter()
        authored = self._author(host, items, [i % g for i in range(len(items))])
        completions = [c for c, _ in authored]
        texts = [host.policy.tokenizer.decode(c.tokens) for c in completions]
        stats = CallStats(gen_s=time.perf_counter() - t0, tokens=sum(len(c.tokens) for c in completions), rollouts=len(completions))
        t0 = time.perf_counter()
        rids = [f"{w.group_id}-{i}" for w in work for i in range(g)]
        graded = self._grade_authored(host, rids, items, texts, [f for _, f in authored])
        stats.grade_s = time.perf_counter() - t0
        for n, (c, text, result) in enumerate(zip(completions, texts, graded)):
            w, item, r = work[n // g], items[n], result.reward
            details: dict[str, Any] = {"text": text[:200], "worker": host.index, "author": self.web.author,
                                       "reason": str(r.details.get("reason", ""))[:300], "scores": r.details.get("scores"),
                                       "failed_checks": list(r.details.get("failed_checks", []))[:5], "blend": r.details.get("blend"),
                                       "mode": "scripted" if item.script is not None else "explore", "report": r.evidence.get("report_html", "")}
            if "judge" in r.details:
                details["judge"] = r.details["judge"]
            event = RewardEvent(rollout_id=rids[n], task_id=item.id, policy_version=version, reward=r.value, passed=r.passed,
                                group_id=w.group_id, group_size=g, run_id=host.run_id, domain=item.domain, payload=payload.encode(c),
                                details=details, failure=result.failure, failure_class=result.failure_class)
            stats.duplicates += host.publish(event) == "duplicate"
            stats.failed += bool(result.failure)
        return stats

    def evaluate(self, host: RolloutHost, samples: int) -> dict[str, Any]:
        """Mean reward and pass rate per task over `samples` pages each, graded like training rollouts and
        published nowhere. Each page costs a browser session (seconds): keep train.eval_samples small."""
        items = [t for t in self.tasks() for _ in range(samples)]
        authored = self._author(host, items, [i % samples for i in range(len(items))])
        texts = [host.policy.tokenizer.decode(c.tokens) for c, _ in authored]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        graded = self._grade_authored(host, [f"eval-{stamp}-{i}" for i in range(len(items))], items, texts, [f for _, f in authored])
        if any(r.failure for r in graded):
            return {"error": next(r.reward.details.get("reason", r.failure) for r in graded if r.failure)}
        per_task = {t.id: sum(r.reward.passed for r in graded[j * samples:(j + 1) * samples]) / samples for j, t in enumerate(self.tasks())}
        reward = {t.id: sum(r.reward.value for r in graded[j * samples:(j + 1) * samples]) / samples for j, t in enumerate(self.tasks())}
        return {"per_task": per_task, "mean": sum(per_task.values()) / len(per_task), "mean_reward": reward, "samples": samples}
