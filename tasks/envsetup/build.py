"""Build the env image for one (repository, version): try strategies in order, keep the first that works.

The env layer holds the repository itself (at the version's `environment_setup_commit`, history up to
it, owned by uid 1000 at /testbed) with dependencies installed, so every instance of that version adds
only a thin layer on top (see `envfarm.tasks.instance`). Every failed attempt keeps its reason class and the
log lines that explain it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import docker

from envfarm.config import base_image_for
from envfarm.errors import EngineUnavailable, EnvfarmError, ImageMissing, SandboxError
from envfarm.images import ImageRecipe, ensure_image
from envfarm.images.base import SUITE_PYTHON
from envfarm.images.build import ImageBuildError
from envfarm.task import InstallConfig
from envfarm.tasks.envsetup import recipes_for
from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup.failures import STAGE, classify_build_failure, excerpt
from envfarm.tasks.mirror import Mirror

REPO_STEPS = (
    "git init -q /testbed && cd /testbed && git fetch -q /tmp/src.bundle 'refs/envfarm/*:refs/envfarm/*'"
    " && git -c advice.detachedHead=false checkout -q --detach {commit}"
    " && git for-each-ref --format='%(refname)' | xargs -r -n1 git update-ref -d"
    " && rm -f /tmp/src.bundle .git/FETCH_HEAD && chown -R 1000:1000 /testbed"
)


@dataclass
class Attempt:
    strategy: str
    ok: bool
    reason_class: str = ""
    reason: str = ""
    seconds: float = 0.0
    cached: bool = False
    repairs: list[str] = field(default_factory=list)


@dataclass
class EnvResult:
    repo: str
    version: str
    env_commit: str
    ok: bool
    image: str = ""
    install: InstallConfig | None = None
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    def best_failure(self) -> Attempt | None:
        """The attempt that got furthest (tests ran > tests collected > installed > resolved > interpreter),
        the first of equals: a later near-miss tells more than the first attempt's early failure, but among
        failures at one stage the most preferred strategy's is the representative one."""
        failed = [a for a in self.attempts if not a.ok and a.reason_class != "skipped"]
        if self.ok or not failed:
            return None
        return max(failed, key=lambda a: STAGE.get(a.reason_class, 3))  # the first of equals: the preferred strategy's

    @property
    def reason_class(self) -> str:
        best = self.best_failure()
        return best.reason_class if best else ("" if self.ok or not self.attempts else self.attempts[0].reason_class)

    @property
    def reason(self) -> str:
        """The best attempt's whole explanation (uv's `cause:` lines included), then the other attempts' classes."""
        best = self.best_failure()
        if best is None:
            return ""
        others = "; ".join(f"{a.strategy}: {a.reason_class}" for a in self.attempts if not a.ok and a is not best)
        return f"{best.strategy}: {best.reason_class}\n{best.reason}" + (f"\nother attempts: {others}" if others else "")

    def attempts_json(self) -> list[dict[str, Any]]:
        return [a.__dict__ for a in self.attempts]


def env_recipe(bundle: bytes, repo: str, version: str, env_commit: str, strategy: Strategy,
               collect_paths: list[str], options: BuildOptions, tooling_tag: str, language: str = "python") -> ImageRecipe:
    recipes = recipes_for(language)
    files: list[tuple[str, bytes]] = [("/tmp/src.bundle", bundle)]
    files += [(f"/opt/wheelhouse/{name}", data) for name, data in options.wheelhouse]
    return ImageRecipe(
        kind="env",
        name=f"{repo}-{version}",
        parent=tooling_tag,
        files=tuple(files),
        steps=(REPO_STEPS.format(commit=env_commit), *recipes.env_steps(strategy, collect_paths, options)),
        env=(("PATH", "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ("VIRTUAL_ENV", "/opt/venv"), *strategy.env),
        network=not options.offline,
        labels=(("envfarm.io/repo", repo), ("envfarm.io/version", version), ("envfarm.io/env-commit", env_commit)),
    )


def build_env(
    mirror: Mirror,
    repo: str,
    version: str,
    env_commit: str,
    date: str | None,
    collect_paths: list[str],
    options: BuildOptions,
    client: docker.DockerClient | None = None,
    language: str = "python",
    base_builder: Callable[[str], str] | None = None,
) -> EnvResult:
    """Try each strategy, repairing each failure the recipes know how to answer, within
    `options.max_builds` builds; infrastructure errors (engine down, disk full) propagate to be retried.

    A missing Debian interpreter base is built on demand (once, under the image build lock) where
    `options.build_bases` allows; `base_builder` stands in for `envfarm.images.base.build_base` in tests."""
    recipes = recipes_for(language)
    started = time.monotonic()
    result = EnvResult(repo, version, env_commit, ok=False)
    refusal = getattr(recipes, "refusal", None)
    refused = refusal(mirror, env_commit) if refusal else None
    if refused:
        result.attempts.append(Attempt("refused", False, *refused))
        result.seconds = time.monotonic() - started
        return result
    tooling: dict[str, str] = {}
    bundle = mirror.bundle(env_commit)
    unavailable: set[str] = set()
    builds = 0
    nearest: tuple[Strategy, str] | None = None  # the failed strategy that got furthest, and its log (for the agent stage)
    repair = getattr(recipes, "repair", None)
    hopeless: set[str] = set()  # plans that named a package no index has: another interpreter cannot help
    for root in recipes.strategies(mirror, env_commit, date, options):
        strategy: Strategy | None = root
        if root.name.split("@")[0] in hopeless:
            result.attempts.append(Attempt(root.name, False, "skipped", "the same plan needs a package no index has"))
            continue
        for _step in range(options.max_repairs + 1):
            if strategy is None or builds >= options.max_builds:
                break
            if strategy.python in unavailable:  # the same interpreter would fail the same way
                result.attempts.append(Attempt(strategy.name, False, "skipped", f"python {strategy.python} unavailable"))
                break
            if strategy.base_image not in tooling:
                tag = _tooling(recipes, strategy, options, client, base_builder, result)
                if tag is None:
                    unavailable.add(strategy.python)
                    break
                tooling[strategy.base_image] = tag
            recipe = env_recipe(bundle, repo, version, env_commit, strategy, collect_paths, options, tooling[strategy.base_image], language)
            t0 = time.monotonic()
            builds += 1
            repairs = list(strategy.notes or ())
            try:
                built = ensure_image(recipe, client, timeout=options.build_timeout)
            except (EngineUnavailable, ImageMissing, SandboxError):
                raise
            except ImageBuildError as exc:
                log = exc.log or exc.problem
                reason_class = classify_build_failure(log)
                if reason_class == "disk_full":
                    raise SandboxError(f"the engine ran out of disk building {repo}@{version}", "free disk space (envfarm images prune)") from None
                result.attempts.append(Attempt(strategy.name, False, reason_class, excerpt(log), time.monotonic() - t0, repairs=repairs))
                if nearest is None or STAGE.get(reason_class, 3) >= STAGE.get(classify_build_failure(nearest[1]), 3):
                    nearest = (strategy, log)
                if reason_class == "python_unavailable":
                    unavailable.add(strategy.python)
                    break
                strategy = repair(strategy, log, options) if repair else None
                if strategy is None and reason_class == "no_matching_distribution":
                    hopeless.add(root.name.split("@")[0])
                continue
            return _succeeded(result, strategy, built, started)
    if options.agent_policy is not None and nearest is not None:
        _agent_stage(result, nearest, options, lambda s: env_recipe(bundle, repo, version, env_commit, s, collect_paths, options,
                                                                    tooling[s.base_image], language), client)
    result.seconds = time.monotonic() - started
    return result


def _succeeded(result: EnvResult, strategy: Strategy, built: Any, started: float) -> EnvResult:
    result.attempts.append(Attempt(strategy.name, True, seconds=built.seconds, cached=built.cached, repairs=list(strategy.notes or ())))
    result.ok, result.image = True, built.tag
    result.install = InstallConfig(
        base_image=strategy.base_image,
        python=strategy.python,
        install=list(strategy.install),
        test_cmd=strategy.test_cmd,
        log_parser=strategy.log_parser,
        exclude_newer=strategy.exclude_newer,
        strategy=strategy.name,
        env_image=built.tag,
    )
    result.seconds = time.monotonic() - started
    return result


def _agent_stage(result: EnvResult, nearest: tuple[Strategy, str], options: BuildOptions,
                 recipe_for: Callable[[Strategy], ImageRecipe], client: docker.DockerClient | None) -> None:
    """The optional model stage (`agent_repair`) on the failure that got furthest; every round is an attempt."""
    from envfarm.tasks.envsetup.agent_repair import agent_repair

    started = time.monotonic()
    outcome: dict[str, Any] = {}

    def build(candidate: Strategy) -> tuple[bool, str]:
        t0 = time.monotonic()
        try:
            outcome["built"] = ensure_image(recipe_for(candidate), client, timeout=options.build_timeout)
        except ImageBuildError as exc:
            log = exc.log or exc.problem
            result.attempts.append(Attempt(candidate.name, False, classify_build_failure(log), excerpt(log), time.monotonic() - t0,
                                           repairs=list(candidate.notes)))
            return False, log
        return True, ""

    assert options.agent_policy is not None
    repaired = agent_repair(options.agent_policy(), nearest[0], nearest[1], build)
    if repaired.strategy is not None:
        _succeeded(result, repaired.strategy, outcome["built"], started)


def _tooling(recipes: Any, strategy: Strategy, options: BuildOptions, client: docker.DockerClient | None,
             base_builder: Callable[[str], str] | None, result: EnvResult) -> str | None:
    """The language tooling layer on the strategy's base, building a missing Debian base first when allowed."""
    suite = next((s for s in SUITE_PYTHON if base_image_for(s) == strategy.base_image), None)
    for first_try in (True, False):
        try:
            return ensure_image(recipes.tooling(strategy.base_image), client).tag
        except ImageMissing:
            if first_try and suite is not None and options.build_bases and not options.offline:  # debootstrap needs Debian's mirror
                try:
                    (base_builder or _build_base)(suite)
                    continue
                except EnvfarmError as exc:
                    result.attempts.append(Attempt(strategy.name, False, "python_unavailable",
                                                   f"building the {suite} base for Python {strategy.python} failed: {exc.line()}"))
                    return None
            hint = f"run 'envfarm images build base --suite {suite}'" if suite else "build or pull it"
            result.attempts.append(Attempt(strategy.name, False, "python_unavailable",
                                           f"base image {strategy.base_image} is not built: {hint} to mine repositories that need Python {strategy.python}"))
            return None
    return None


def _build_base(suite: str) -> str:
    from envfarm.images.base import build_base

    return build_base(suite, on_log=lambda _line: None)
