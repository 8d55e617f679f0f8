"""Web verification end to end: serve, drive, record, read the video, score, write the evidence.

`verify_web_async` shares one `BrowserHost` across concurrent verifications (one context each).
`WebVerifier` is the synchronous entry point: `verify_app` for an app folder and a script (what
`envfarm verify web` runs), `verify` for a `kind == "web"` task and its sandbox. The RL loop's web family
(trainer/families/web.py) calls `verify_web_async` on pages the policy wrote, one browser per worker call.
The reward is blend.py's: a deterministic gate x a blend of the checks' score and the optional judge's
(judge.py: the session video, or ordered frames, sent to an OpenAI-compatible multimodal model).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from envfarm.errors import EnvfarmError
from envfarm.sandbox.protocol import Sandbox
from envfarm.task import TaskSpec
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.web.browser import BrowserHost, BrowserLimits
from envfarm.verifiers.web.cdn import CdnShim
from envfarm.verifiers.web.checks import score, session_checks, visual_checks
from envfarm.verifiers.web.blend import RewardBlend, blend_exploration, blended_reward, render_failure
from envfarm.verifiers.web.judge import JudgeClient, JudgeInput
from envfarm.verifiers.web.explorer import ExploreOptions, explore_web_async
from envfarm.verifiers.web.report import write_evidence
from envfarm.verifiers.web.runner import run_session
from envfarm.verifiers.web.script import InteractionScript, load_script
from envfarm.verifiers.web.serve import copy_from_sandbox, serve_app
from envfarm.verifiers.web.visual import Frames, align_to_flash, decode

ANALYSIS_FPS = 10.0


async def verify_web_async(
    host: BrowserHost,
    app: dict[str, Any] | Path | str,
    script: InteractionScript,
    out_dir: Path,
    judge: JudgeClient | None = None,
    blend: RewardBlend | None = None,
    cdn: CdnShim | None = None,
) -> Reward:
    """Verify one app. The value is `blend`'s (default: ReLook's render gate x the checks' score; with a
    judge, x a blend with its mean score); `passed` stays deterministic. CDN requests are served by `cdn`
    (default: a shim on ENVFARM_HOME/cdn and ENVFARM_NPM_REGISTRY)."""
    start = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    await host.ensure_alive()
    with serve_app(app) as origin:
        record = await run_session(host, origin, script, out_dir, cdn if cdn is not None else CdnShim())
    frames: Frames | None = None
    if record.video:
        frames = await asyncio.to_thread(decode, Path(record.video), ANALYSIS_FPS, (script.viewport["width"], script.viewport["height"]))
        record.video_offset_s = align_to_flash(frames, record.sync_s)
    checks = list(record.checks)
    if frames is not None and len(frames):
        checks += visual_checks(record, script, frames)
    checks += session_checks(record, script, frames)
    record.checks = checks
    scores = score(checks)
    passed = all(c.passed for c in checks)
    details: dict[str, Any] = {
        "scores": {"executability": scores.executability, "functional": scores.functional, "visual": scores.visual},
        "failed_checks": [f"{c.check}: {c.detail}" for c in checks if not c.passed],
        "checks": len(checks),
        "blocked_requests": record.blocked_requests[:20],
        "cdn_shimmed": sum(r["outcome"] != "blocked" for r in record.cdn_requests),
        "cdn_blocked": [f"{r['url']}: {r['detail']}" for r in record.cdn_requests if r["outcome"] == "blocked"][:20],
        "timed_out": record.timed_out,
        "browser_killed": record.browser_killed,
    }
    value = 1.0 if passed else min(scores.value, 0.99)
    evidence = await asyncio.to_thread(write_evidence, out_dir, record, script, frames, scores, details)
    first_load = next((r for r in record.steps if script.steps[r.index].goto is not None), None)
    not_rendered = render_failure(checks, first_load is not None and first_load.ok)
    value, judged = await asyncio.to_thread(blended_reward, blend or RewardBlend(), scores, value, not_rendered, judge,
                                            lambda: JudgeInput.from_report(Path(evidence["report_json"]), script.rubric))
    details.update(judged)
    details["seconds"] = round(time.monotonic() - start, 3)
    evidence_paths = {k: v for k, v in evidence.items() if isinstance(v, str)}
    return Reward(value, passed, details, evidence_paths)


class WebVerifier:
    """Synchronous façade: each call starts and closes its own browser. Callers that verify many pages (the
    RL loop's web family) share one `BrowserHost` through `verify_web_async` instead."""

    def __init__(
        self, limits: BrowserLimits | None = None, judge: JudgeClient | None = None, blend: RewardBlend | None = None,
        evidence_root: Path | None = None, cdn: CdnShim | None = None,
    ) -> None:
        self.blend = blend or RewardBlend()
        if self.blend.judge_weight > 0 and judge is None:
            raise EnvfarmError(f"judge_weight is {self.blend.judge_weight} but no judge is configured",
                               "set ENVFARM_JUDGE_URL (and ENVFARM_JUDGE_MODEL) or leave the judge weight at 0")
        self.limits = limits or BrowserLimits()
        self.judge = judge
        self.evidence_root = evidence_root
        self.cdn = cdn

    def verify_app(self, app: dict[str, Any] | Path | str, script: InteractionScript | dict | str | Path, out_dir: Path | None = None) -> Reward:
        script = script if isinstance(script, InteractionScript) else load_script(script)
        out_dir = out_dir or Path(tempfile.mkdtemp(prefix="envfarm-web-", dir=self.evidence_root))

        async def main() -> Reward:
            async with BrowserHost(self.limits) as host:
                return await verify_web_async(host, app, script, out_dir, self.judge, self.blend, self.cdn)

        return asyncio.run(main())

    def explore_app(self, app: dict[str, Any] | Path | str, rubric: str | list[str] | None = "", out_dir: Path | None = None,
                    options: ExploreOptions | None = None) -> Reward:
        """Verify with no script: the explorer drives the page and scores it (explorer.py); the reward is the
        blend's gate x blend with the judge, when one is configured (blend.blend_exploration)."""
        out_dir = out_dir or Path(tempfile.mkdtemp(prefix="envfarm-web-", dir=self.evidence_root))

        async def main() -> Reward:
            async with BrowserHost(self.limits) as host:
                return await explore_web_async(host, app, out_dir, rubric, options, self.cdn)

        text = "\n".join(rubric) if isinstance(rubric, list) else (rubric or "")
        return blend_exploration(asyncio.run(main()), self.blend, self.judge, text)

    def verify(self, task: TaskSpec, sandbox: Sandbox | None = None, app_dir: Path | None = None) -> Reward:
        """Task form: `task.extra["web"] = {"script": {...}, "root": "/testbed/dist", "command": ...}`; with no
        "script" the page is explored, judged against `extra.web.rubric` (plain words) if there is one."""
        web = task.extra.get("web")
        if not isinstance(web, dict):
            raise EnvfarmError(f"task {task.instance_id} has no extra.web", "add extra.web with the app's root (and a script or a rubric)")
        app: dict[str, Any] = {k: v for k, v in web.items() if k not in ("script", "rubric")}
        with tempfile.TemporaryDirectory(prefix="envfarm-app-") as tmp:
            if app_dir is not None:
                app["root"] = str(app_dir)
            elif sandbox is not None:
                app["root"] = str(copy_from_sandbox(sandbox, web.get("root", task.workdir), Path(tmp) / "app"))
            else:
                app.setdefault("root", web.get("root", task.workdir))
            if "script" not in web:
                return self.explore_app(app, web.get("rubric", ""))
            return self.verify_app(app, web["script"])
