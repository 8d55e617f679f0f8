"""A SWE rollout: the episode in one sandbox from the task's image, grading in a fresh one (so nothing
the agent did outside the repository can touch the test run), both always closed.

A sandbox that dies mid-episode is retried on a new sandbox up to `retries` times. Whatever else goes wrong
with one task (its image is missing, the engine is gone, the verifier raises on its logs or its test_patch)
ends that rollout only: it is recorded as failed with reward 0, why (`failure`) and whose fault
(`failure_class`: "infrastructure", which a retry elsewhere may fix, or "task"), and the run goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from envfarm.errors import EngineUnavailable, EnvfarmError, ImageMissing, SandboxError, StoreError
from envfarm.sandbox.protocol import Sandbox
from envfarm.task import TaskSpec
from envfarm.agent.episode import AgentPolicy, EpisodeLimits, Transcript, run_episode
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.swe import SweVerifier

SandboxFactory = Callable[[TaskSpec], Sandbox]
INFRASTRUCTURE = (SandboxError, EngineUnavailable, ImageMissing, StoreError, OSError)


def failure_of(stage: str, exc: BaseException) -> Reward:
    """Reward 0 for a rollout that `exc` stopped at `stage` ("episode" or "grading"), classified."""
    infra = isinstance(exc, INFRASTRUCTURE)
    kind = {SandboxError: "sandbox_error", ImageMissing: "image_missing", EngineUnavailable: "engine_unavailable"}
    name = next((v for k, v in kind.items() if isinstance(exc, k)), "store_error" if isinstance(exc, StoreError)
                else "task_error" if isinstance(exc, EnvfarmError) else f"{type(exc).__name__}")
    failure = ("verifier_" if stage == "grading" else "") + name
    line = exc.line() if isinstance(exc, EnvfarmError) else f"{type(exc).__name__}: {str(exc)[:300]}"
    return Reward.zero(f"{stage} failed: {line}", failure=failure, failure_class="infrastructure" if infra else "task")


def grade(task: TaskSpec, patch: str, make_sandbox: SandboxFactory, verifier: SweVerifier | None = None) -> Reward:
    """The reward for `patch` on `task`, graded in a fresh sandbox (nothing the agent did outside the diff reaches
    the test run). Never raises: a verifier or engine failure is a classified zero (`failure_of`)."""
    try:
        with make_sandbox(task) as grader:
            return (verifier or SweVerifier()).verify(task, grader, patch)
    except Exception as exc:  # noqa: BLE001 - the verifier on one task's logs must not end the run
        return failure_of("grading", exc)


def swe_rollout(task: TaskSpec, make_policy: Callable[[], AgentPolicy], make_sandbox: SandboxFactory,
                limits: EpisodeLimits = EpisodeLimits(), verifier: SweVerifier | None = None, retries: int = 1,
                transcript_dir: str | Path | None = None, rollout_id: str = "") -> tuple[Transcript, Reward]:
    verifier = verifier or SweVerifier()
    transcript = Transcript(task.instance_id)
    reward: Reward | None = None
    for _attempt in range(retries + 1):
        sandbox = None
        try:
            sandbox = make_sandbox(task)
            transcript = run_episode(make_policy(), task, sandbox, limits)
        except SandboxError as exc:
            transcript = Transcript(task.instance_id, finish_reason="sandbox_error", error=exc.line())
        except Exception as exc:  # noqa: BLE001 - a missing image, a dead engine: this task's rollout fails, the run goes on
            transcript = Transcript(task.instance_id, finish_reason="error", error=str(exc)[:300])
            reward = failure_of("episode", exc)
        finally:
            if sandbox is not None:
                sandbox.close()
        if transcript.finish_reason != "sandbox_error":
            break
    if reward is None and transcript.finish_reason == "model_error":  # the model server failed, not the policy
        reward = Reward.zero(f"model server failed: {transcript.error}", failure="model_error", failure_class="infrastructure")
    if reward is None and transcript.finish_reason == "sandbox_error":
        reward = Reward.zero(f"sandbox died {retries + 1} time(s): {transcript.error}", failure="sandbox_error",
                             failure_class="infrastructure")
    if reward is None:
        reward = grade(task, transcript.patch, make_sandbox, verifier)
    if transcript_dir is not None and rollout_id:
        transcript.save(transcript_dir, rollout_id)
    return transcript, reward
