"""Build the env image for one (repository, version): try strategies in order, keep the first that works.

The env layer holds the repository itself (at the version's `environment_setup_commit`, history up to
it, owned by uid 1000 at /testbed) with dependencies installed, so every instance of that version adds
only a thin layer on top (see `envfarm.tasks.instance`). Every failed attempt keeps its reason class and the
log lines that explain it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import docker

from envfarm.errors import EngineUnavailable, ImageMissing, SandboxError
from envfarm.images import ImageRecipe, ensure_image
from envfarm.images.build import ImageBuildError
from envfarm.task import InstallConfig
from envfarm.tasks.envsetup import recipes_for
from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup.failures import classify_build_failure, excerpt
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

    @property
    def reason_class(self) -> str:
        """The most telling failure: one from an interpreter that exists, over 'python_unavailable'."""
        if self.ok or not self.attempts:
            return ""
        real = [a.reason_class for a in self.attempts if a.reason_class not in ("python_unavailable", "skipped")]
        return real[0] if real else self.attempts[0].reason_class

    @property
    def reason(self) -> str:
        return "; ".join(f"{a.strategy}: {a.reason_class}" for a in self.attempts if not a.ok)[:2000]

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
) -> EnvResult:
    """Try each strategy; infrastructure errors (engine down, image missing) propagate to be retried."""
    recipes = recipes_for(language)
    started = time.monotonic()
    result = EnvResult(repo, version, env_commit, ok=False)
    tooling: dict[str, str] = {}
    bundle = mirror.bundle(env_commit)
    unavailable: set[str] = set()
    for strategy in recipes.strategies(mirror, env_commit, date, options):
        if strategy.python in unavailable:  # the same interpreter download would fail the same way
            result.attempts.append(Attempt(strategy.name, False, "skipped", f"python {strategy.python} unavailable"))
            continue
        if strategy.base_image not in tooling:
            try:
                tooling[strategy.base_image] = ensure_image(recipes.tooling(strategy.base_image), client).tag
            except ImageMissing:
                unavailable.add(strategy.python)
                result.attempts.append(Attempt(strategy.name, False, "python_unavailable",
                                               f"base image {strategy.base_image} is not built: run 'envfarm images build base --suite "
                                               f"{strategy.base_image.split(':')[-1]}' to mine repositories that need Python {strategy.python}"))
                continue
        recipe = env_recipe(bundle, repo, version, env_commit, strategy, collect_paths, options, tooling[strategy.base_image], language)
        t0 = time.monotonic()
        try:
            built = ensure_image(recipe, client, timeout=options.build_timeout)
        except (EngineUnavailable, ImageMissing, SandboxError):
            raise
        except ImageBuildError as exc:
            reason_class = classify_build_failure(exc.log or exc.problem)
            if reason_class == "disk_full":
                raise SandboxError(f"the engine ran out of disk building {repo}@{version}", "free disk space (envfarm images prune)") from None
            result.attempts.append(Attempt(strategy.name, False, reason_class, excerpt(exc.log or exc.problem), time.monotonic() - t0))
            if reason_class == "python_unavailable":
                unavailable.add(strategy.python)
            continue
        result.attempts.append(Attempt(strategy.name, True, seconds=built.seconds, cached=built.cached))
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
        break
    result.seconds = time.monotonic() - started
    return result
