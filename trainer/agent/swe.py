"""A SWE rollout: the episode in one sandbox from the task's image, grading in a fresh one (so nothing
the agent did outside the repository can touch the test run), both always closed.

A sandbox that dies mid-episode is retried on a new sandbox up to `retries` times; if it keeps dying the
rollout is recorded as failed with its reason (reward 0, `details.failure`), never silently dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from envfarm.errors import SandboxError
from envfarm.sandbox.protocol import Sandbox
from envfarm.task import TaskSpec
from envfarm.trainer.agent.episode import AgentPolicy, EpisodeLimits, Transcript, run_episode
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.swe import SweVerifier

SandboxFactory = Callable[[TaskSpec], Sandbox]


def swe_rollout(task: TaskSpec, make_policy: Callable[[], AgentPolicy], make_sandbox: SandboxFactory,
                limits: EpisodeLimits = EpisodeLimits(), verifier: SweVerifier | None = None, retries: int = 1,
                transcript_dir: str | Path | None = None, rollout_id: str = "") -> tuple[Transcript, Reward]:
    verifier = verifier or SweVerifier()
    transcript = Transcript(task.instance_id)
    for attempt in range(retries + 1):
        sandbox = None
        try:
            sandbox = make_sandbox(task)
            transcript = run_episode(make_policy(), task, sandbox, limits)
        except SandboxError as exc:
            transcript = Transcript(task.instance_id, finish_reason="sandbox_error", error=exc.line())
        finally:
            if sandbox is not None:
                sandbox.close()
        if transcript.finish_reason != "sandbox_error":
            break
    if transcript.finish_reason == "sandbox_error":
        reward = Reward.zero(f"sandbox died {retries + 1} time(s): {transcript.error}", failure="sandbox_error")
    else:
        try:
            with make_sandbox(task) as grader:
                reward = verifier.verify(task, grader, transcript.patch)
        except SandboxError as exc:
            reward = Reward.zero(f"grading sandbox failed: {exc.line()}", failure="verifier_sandbox_error")
    if transcript_dir is not None and rollout_id:
        transcript.save(transcript_dir, rollout_id)
    return transcript, reward
