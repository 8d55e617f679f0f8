"""The run's configuration: YAML + `key=value` overrides, validated by pydantic so a bad value names
its field and the fix before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from envfarm.errors import EnvfarmError
from envfarm.sandbox.backend import SandboxBackend
from envfarm.userfiles import load_yaml
from envfarm.trainer.loop.family import FAMILIES, family_names
from envfarm.trainer.paths import TINY_CHECKPOINT as TINY
from envfarm.trainer.scheduler import SchedulerConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyCfg(_Strict):
    checkpoint: str | None = Field(str(TINY), description="folder with config.json + model.safetensors; null = fresh preset")
    preset: Literal["tiny", "micro"] = "tiny"  # used only when checkpoint is null
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(12, ge=1, le=4096)
    draft: Literal["mtp", "adaptive", "none"] = Field(
        "mtp", description="mtp: every MTP head every step; adaptive: heads per step from measured costs and acceptance; none")


class TasksCfg(_Strict):
    family: str = Field("func", description="a registered task family (trainer/loop/family.py FAMILIES): func | swe | web")
    names: list[str] = Field(default_factory=list, description="func, web: subset of the family's tasks by name; empty = all")
    ids: list[str] = Field(default_factory=list, description="swe: instance ids in the store; empty = every validated SWE task")

    @model_validator(mode="after")
    def _registered(self) -> "TasksCfg":
        if self.family not in FAMILIES:
            raise ValueError(f"tasks.family={self.family!r} is not a registered task family: set tasks.family to one of "
                             f"{', '.join(FAMILIES)}")
        return self


class AgentCfg(_Strict):
    """Per-episode limits of the agent scaffold (SWE tasks)."""

    max_steps: int = Field(30, ge=1)
    max_tokens: int = Field(16_384, ge=1)
    command_timeout: float = Field(120.0, gt=0)
    observation_chars: int = Field(4_000, ge=100)
    max_prompt_tokens: int = Field(4_096, ge=512)
    concurrent_episodes: int = Field(8, ge=1, description="episodes a worker runs at once; their turns decode together "
                                                           "in one continuously batched engine (trainer/rollout/batcher.py)")
    test_timeout: float = Field(1800.0, gt=0, description="seconds the verifier's test run of one episode's patch may take")
    transcripts: bool = True


class PartialCfg(_Strict):
    """Partial rollouts (MiMo's data scheduler): a worker call stops generating once a rollout used its token
    budget or the call its time budget; unfinished groups are parked with the policy version that started
    them and continued by a later call, or discarded once older than stream.max_staleness. Off by default:
    the demo's completions are 12 tokens, so a budget would only add calls."""

    enabled: bool = False
    token_budget: int = Field(0, ge=0, description="new tokens per rollout per worker call; 0 = no token budget")
    time_budget_s: float = Field(0.0, ge=0, description="a call starts no further segment after this many seconds; 0 = none")
    segment_tokens: int = Field(4, ge=1, description="tokens generated between budget checks")

    @model_validator(mode="after")
    def _some_budget(self) -> "PartialCfg":
        if self.enabled and not self.token_budget and not self.time_budget_s:
            raise ValueError("rollout.partial.enabled is true but it has no budget: set rollout.partial.token_budget=4 "
                             "or rollout.partial.time_budget_s=30 (or rollout.partial.enabled=false)")
        return self


class RolloutCfg(_Strict):
    num_workers: int = Field(1, ge=1, le=256)
    group_size: int = Field(8, ge=2, description="samples per task; GRPO needs >= 2")
    groups_per_call: int = Field(4, ge=1, description="groups a worker generates per call")
    grade_timeout: float = Field(5.0, gt=0, description="seconds per program")
    grade_retries: int = Field(1, ge=0)
    image: str = ""  # empty: the configured base image
    worker_cpus: float = Field(1.0, ge=0)
    partial: PartialCfg = Field(default_factory=PartialCfg)


class StreamCfg(_Strict):
    capacity: int = Field(128, ge=1)
    max_staleness: int = Field(2, ge=0)
    stale_policy: Literal["drop", "downweight"] = "drop"


class AlgoCfg(_Strict):
    name: Literal["grpo", "mopd"] = "grpo"
    lr: float = Field(3e-4, gt=0, lt=1)
    clip_low: float = Field(0.2, gt=0, lt=1)
    clip_high: float = Field(0.28, gt=0)
    kl_coef: float = Field(0.0, ge=0)
    entropy_coef: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    routing_replay: bool = True
    mtp_loss_weight: float = Field(0.0, ge=0, description="train the MTP draft heads on the completions (keeps acceptance up)")
    mopd_alpha: float = 1.0
    mopd_eps_low: float = 0.5
    mopd_eps_high: float = 2.0
    teachers: dict[str, str] = Field(default_factory=dict, description="domain -> checkpoint folder (MOPD)")

    @model_validator(mode="after")
    def _teachers(self) -> "AlgoCfg":
        if self.name == "mopd" and not self.teachers:
            raise ValueError("algo.name is 'mopd' but algo.teachers is empty: add e.g. algo.teachers={code: trainer/checkpoints/tiny}")
        return self


class TrainCfg(_Strict):
    steps: int = Field(60, ge=1)
    groups_per_step: int = Field(4, ge=1)
    checkpoint_every: int = Field(5, ge=1)
    out_dir: str = ".envfarm/train/demo"
    seed: int = 0
    max_minutes: float = Field(0, ge=0, description="stop (after a checkpoint) once this many minutes passed; 0 = no limit")
    resume: bool = True
    torch_threads: int = Field(1, ge=1)
    eval_samples: int = Field(16, ge=0, description="samples per task for the start/end evaluation on the whole family; 0 = off")


class WebCfg(_Strict):
    """The web family (tasks.family=web, trainer/families/web.py): its tasks, who writes the pages, how they are
    judged. The judge's API key is read from ENVFARM_JUDGE_API_KEY, never from the config."""

    tasks_file: str = Field("", description="YAML/JSON list of {id, prompt, rubric, script?}; empty = the built-in set")
    author: Literal["policy", "replay", "chat"] = Field(
        "policy", description="policy: the learned policy writes each page; replay: pages read from replay_file (a scripted "
                              "policy, or pages written earlier); chat: an OpenAI-compatible model writes them (chat_url). "
                              "Replayed and chat pages are scored by the learned policy for training (off-policy samples)")
    replay_file: str = Field("", description="author=replay: JSONL of {task, text}; sample i of a group is the task's i-th text (cycling)")
    chat_url: str = Field("", description="author=chat: the model server's /v1 base (API key from ENVFARM_AUTHOR_API_KEY)")
    chat_model: str = ""
    chat_max_tokens: int = Field(8192, ge=1)
    build_timeout: float = Field(60.0, gt=0, description="seconds a page's ```build command may run in the sandbox")
    judge_url: str = Field("", description="OpenAI-compatible /v1 base of a multimodal judge; empty = ENVFARM_JUDGE_URL, or none")
    judge_model: str = ""
    judge_mode: Literal["auto", "video", "frames"] = "auto"
    judge_weight: float = Field(0.0, ge=0, le=1, description="share of the judge in the reward (0: recorded only)")
    gate: Literal["render", "executability", "none"] = Field("render", description="render: 0 for a page that did not render (ReLook)")
    keep_evidence: bool = Field(True, description="keep each rollout's video and report under train.out_dir/web")

    @model_validator(mode="after")
    def _author_needs_source(self) -> "WebCfg":
        if self.author == "replay" and not self.replay_file:
            raise ValueError("web.author is replay but web.replay_file is empty: set web.replay_file=pages.jsonl (lines of {task, text})")
        if self.author == "chat" and not (self.chat_url and self.chat_model):
            raise ValueError("web.author is chat but web.chat_url or web.chat_model is empty: set both, e.g. "
                             "web.chat_url=http://127.0.0.1:8000/v1 web.chat_model=MODEL")
        return self


# The `sandbox:` section is envfarm's backend model itself: the trainer opens sandboxes with it.
SandboxCfg = SandboxBackend


class RunConfig(_Strict):
    name: str = "demo"
    policy: PolicyCfg = Field(default_factory=PolicyCfg)
    tasks: TasksCfg = Field(default_factory=TasksCfg)
    agent: AgentCfg = Field(default_factory=AgentCfg)
    web: WebCfg = Field(default_factory=WebCfg)
    rollout: RolloutCfg = Field(default_factory=RolloutCfg)
    stream: StreamCfg = Field(default_factory=StreamCfg)
    algo: AlgoCfg = Field(default_factory=AlgoCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    sandbox: SandboxCfg = Field(default_factory=SandboxCfg)
    store_url: str | None = None  # null: ENVFARM_DB_URL or the SQLite file under ~/.envfarm
    ray_address: str | None = None  # null: RAY_ADDRESS or a local Ray

    @model_validator(mode="after")
    def _cross_checks(self) -> "RunConfig":
        family = FAMILIES[self.tasks.family]
        if self.rollout.partial.enabled and not family.partial_rollouts:
            raise ValueError(f"rollout.partial.enabled is implemented for tasks.family={'|'.join(family_names(partial_rollouts=True))} "
                             "only (agent episodes are not resumable yet): set rollout.partial.enabled=false")
        if self.sandbox.backend == "kubernetes":
            k = self.sandbox.kubernetes
            if not family.shared_sandbox and not k.fleet:
                raise ValueError(f"sandbox.backend=kubernetes grades tasks.family={'|'.join(family_names(shared_sandbox=True))} "
                                 f"only from listed pods ({self.tasks.family} episodes need a pod per task image): set "
                                 "sandbox.kubernetes.fleet to claim them from a SandboxFleet, or use sandbox.backend=docker")
            if not k.fleet and len(k.pods) < self.rollout.num_workers:
                raise ValueError(f"sandbox.kubernetes.pods names {len(k.pods)} pod(s) for {self.rollout.num_workers} rollout "
                                 "worker(s): list one running sandbox pod per worker, e.g. sandbox.kubernetes.pods=[sandbox-0]")
        return self


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise EnvfarmError(f"override {dotted}: {k} is not a section", "override a leaf such as train.steps=10")
    node[keys[-1]] = value


def _read_config(p: Path) -> dict[str, Any]:
    """The config file as a mapping; missing, a folder, not UTF-8, bad YAML or empty: one EnvfarmError each
    (an empty file would otherwise run every default on nothing that was read)."""
    raw = load_yaml(p, "config file", "pass --config trainer/configs/demo.yaml or another YAML file")
    if not isinstance(raw, dict):
        raise EnvfarmError(f"config file {p} must be a mapping of sections", "see trainer/configs/demo.yaml")
    return raw


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:  # type: ignore[assignment]
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_config(Path(path))
    for item in overrides:
        if "=" not in item:
            raise EnvfarmError(f"override {item!r} is not key=value", "write overrides like train.steps=10")
        key, value = item.split("=", 1)
        if not all(part.strip() for part in key.split(".")):
            raise EnvfarmError(f"override {item!r} has an empty key", "write overrides like train.steps=10")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise EnvfarmError(f"override {item!r}: the value is not valid YAML", "quote a string value, e.g. key='[text'") from None
        _set(raw, key.strip(), parsed)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "config"
        if err["type"] == "value_error":  # a cross-field check: its message already names fields and fix
            problem, _, fix = err["msg"].removeprefix("Value error, ").partition(": ")
            raise EnvfarmError(f"bad config: {problem}", fix or "see trainer/configs/demo.yaml") from None
        hint = "remove it (unknown field)" if err["type"] == "extra_forbidden" else "give a valid value"
        raise EnvfarmError(f"bad config value {field}={err.get('input')!r}: {err['msg']}", f"{hint}; see trainer/configs/demo.yaml") from None
