"""The environment an imported task runs in, from the first source that works, in this order:

1. the dataset's own recipe, where the row carries one (SWE-rebench's `install_config`: python,
   pre_install, packages / requirements, pip_packages, install), built here on envfarm's Debian base
   from the repository snapshot (a bare mirror `<owner>__<name>.git` under `--mirrors`);
2. the pre-built image the row names (SWE-bench 5.x `image`, SWE-rebench `docker_image`, SWE-smith
   `image_name`, R2E-Gym `docker_image`), pulled from the registry the user configures
   (`--registry` / ENVFARM_IMAGE_REGISTRY; `http://host:port` for a plain-HTTP one);
3. envfarm's own environment setup (`envfarm.tasks.envsetup.build.build_env`, the miner's), again from
   the repository snapshot.

A source that cannot serve the task (no recipe, no mirror, no image named, a pull or a build that
fails) is recorded as an attempt with its reason and the next one is tried; when none works the
error lists every attempt. Built images get envfarm's instance layer (`envfarm.tasks.instance`), so
an imported task's image holds no commit after its base, like a mined one.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException

from envfarm.errors import EngineUnavailable, EnvfarmError, ImageMissing, SandboxError
from envfarm.images import ImageRecipe, ensure_image
from envfarm.images.build import ImageBuildError, image_exists
from envfarm.task import TaskSpec
from envfarm.tasks.envsetup import recipes_for
from envfarm.tasks.envsetup.base import BuildOptions
from envfarm.tasks.envsetup.build import REPO_STEPS, build_env
from envfarm.tasks.importers.base import dataset_image
from envfarm.tasks.envsetup.failures import excerpt
from envfarm.tasks.envsetup.python import BASE_FOR_PYTHON, SYSTEM_PYTHON, VENV
from envfarm.tasks.instance import instance_recipe
from envfarm.tasks.mirror import Mirror
from envfarm.verifiers.run import patched_paths

RECIPE, REGISTRY, ENVSETUP = "dataset-recipe", "registry", "envsetup"
# install_config keys that make a recipe (SWE-bench's spec keys, which SWE-rebench rows carry as given).
RECIPE_KEYS = ("pre_install", "packages", "pip_packages", "install")
WHEELHOUSE = "/opt/wheelhouse"


@dataclass(frozen=True)
class EnvSources:
    """Where environments may come from: repository snapshots, a registry, build options."""

    mirrors: Path | None = None  # folder of bare mirrors named <owner>__<name>.git
    registry: str = ""  # "http://127.0.0.1:5000", "registry.example.com/mirror"; "" pulls names as written
    options: BuildOptions = field(default_factory=BuildOptions)

    def mirror(self, repo: str) -> Mirror | None:
        if self.mirrors is None:
            return None
        path = self.mirrors / f"{repo.replace('/', '__')}.git"
        return Mirror(path) if (path / "HEAD").exists() else None


@dataclass
class TaskEnv:
    image: str
    source: str
    attempts: list[dict[str, Any]] = field(default_factory=list)


class TaskEnvError(EnvfarmError):
    """No source could give the task an environment; `attempts` says why each one could not."""

    def __init__(self, problem: str, fix: str, attempts: list[dict[str, Any]]) -> None:
        self.attempts = attempts
        super().__init__(problem, fix)


def has_recipe(task: TaskSpec) -> bool:
    recipe = task.install.model_dump()
    return any(recipe.get(key) for key in RECIPE_KEYS)


def registry_ref(name: str, registry: str) -> str:
    """`name` as pulled from `registry` (its own host, if it names one, is replaced)."""
    if not registry:
        return name
    host = registry.split("://", 1)[-1].rstrip("/")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest  # the row's own registry host: the user's registry mirrors it
    return f"{host}/{name}"


def pull(name: str, registry: str, client: docker.DockerClient) -> str:
    """The local reference of `name` from `registry`, pulled unless the engine has it already."""
    ref = registry_ref(name, registry)
    if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
        ref += ":latest"
    if image_exists(client, ref):
        return ref
    plain_http = registry.startswith("http://")
    podman = any(c.get("Name") == "Podman Engine" for c in client.version().get("Components", []))
    try:
        if plain_http and podman:
            # Podman's Docker-compatible pull reads TLS settings from registries.conf as loaded when the
            # service started; its own endpoint takes them per request.
            reply = client.api._post(client.api.base_url + "/v4.0.0/libpod/images/pull",  # noqa: SLF001 - docker-py's own request helper
                                     params={"reference": ref, "tlsVerify": "false", "quiet": "true"}, timeout=3600)
            lines = [json.loads(line) for line in reply.text.splitlines() if line.strip()]
        else:
            repository, _, tag = ref.rpartition(":")
            lines = list(client.api.pull(repository, tag=tag, stream=True, decode=True))
    except (APIError, DockerException, ValueError) as exc:
        raise ImageMissing(f"pulling {ref} failed: {' '.join(str(exc).split())[:300]}", _pull_fix(registry)) from None
    errors = [str(line.get("error")) for line in lines if isinstance(line, dict) and line.get("error")]
    if errors or not image_exists(client, ref):
        raise ImageMissing(f"pulling {ref} failed: {(errors or ['the engine reports no such image after the pull'])[0][:300]}", _pull_fix(registry))
    return ref


def _pull_fix(registry: str) -> str:
    where = f"registry {registry}" if registry else "the registry the image name points at (set --registry to use a mirror)"
    return f"push the image to {where}, or point --registry / ENVFARM_IMAGE_REGISTRY at one that has it"


def _python_layer(python: str | None, options: BuildOptions) -> tuple[str, str]:
    """(base image, venv command) for the recipe's Python: a Debian base that ships it, else uv's download."""
    base = BASE_FOR_PYTHON.get(python or "", options.base_image)
    if not python or SYSTEM_PYTHON.get(base) == python:
        return base, f"python3 -m venv {VENV}"
    return base, (f"export UV_PYTHON_INSTALL_DIR=/opt/python && uv python install -q {shlex.quote(python)}"
                  f" && uv venv -q --seed --python {shlex.quote(python)} {VENV}")


def _commands(value: Any) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def recipe_steps(task: TaskSpec, venv: str) -> tuple[list[str], list[tuple[str, bytes]]]:
    """(RUN steps, files) that install the dataset's recipe into /testbed, in the harness's order:
    pre_install, the environment's packages (a requirements file the row carries, or a package
    list), pip_packages, then the repository's own install command."""
    recipe = task.install.model_dump()
    steps = [venv]
    files: list[tuple[str, bytes]] = []
    steps += _commands(recipe.get("pre_install"))
    packages = str(recipe.get("packages") or "").strip()
    if packages == "requirements.txt":
        frozen = task.extra.get("requirements")
        if not frozen:
            raise EnvfarmError("the recipe installs requirements.txt but the row carries no 'requirements'",
                               "import the row with its requirements field as the dataset publishes it")
        files.append(("/tmp/envfarm-requirements.txt", str(frozen).encode()))
        steps.append("python -m pip install -r /tmp/envfarm-requirements.txt")
    elif packages == "environment.yml" or packages.endswith((".yml", ".yaml")):
        raise EnvfarmError(f"the recipe installs a conda environment ({packages}), which envfarm's Debian bases have no conda for",
                           "use the row's pre-built image (--registry), or give the task an install recipe in pip terms")
    elif packages:
        steps.append("python -m pip install " + " ".join(shlex.quote(p) for p in packages.split()))
    pip_packages = _commands(recipe.get("pip_packages"))
    if pip_packages:
        steps.append("python -m pip install " + " ".join(shlex.quote(p) for p in pip_packages))
    steps += _commands(recipe.get("install"))
    return steps, files


def _env_from_recipe(task: TaskSpec, mirror: Mirror, sources: EnvSources, client: docker.DockerClient | None) -> str:
    options = sources.options
    env_commit = task.environment_setup_commit if mirror.has_commit(task.environment_setup_commit) else task.base_commit
    base, venv = _python_layer(task.install.python, options)
    tooling = ensure_image(recipes_for("python").tooling(base), client).tag
    steps, files = recipe_steps(task, venv)
    env: list[tuple[str, str]] = [("PATH", f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ("VIRTUAL_ENV", VENV)]
    if options.wheelhouse:
        env.append(("PIP_FIND_LINKS", WHEELHOUSE))
    if options.offline:
        env.append(("PIP_NO_INDEX", "1"))
    recipe = ImageRecipe(
        kind="env",
        name=f"{task.repo}-{task.version or env_commit[:12]}-recipe",
        parent=tooling,
        files=(("/tmp/src.bundle", mirror.bundle(env_commit)), *files, *((f"{WHEELHOUSE}/{n}", d) for n, d in options.wheelhouse)),
        steps=(REPO_STEPS.format(commit=env_commit),
               " && ".join(["cd /testbed", *steps]),
               f"chown -R 1000:1000 /testbed {VENV}"),
        env=tuple(env),
        network=not options.offline,
        labels=(("envfarm.io/repo", task.repo), ("envfarm.io/env-source", RECIPE), ("envfarm.io/env-commit", env_commit)),
    )
    env_tag = ensure_image(recipe, client, timeout=options.build_timeout).tag
    return _instance(task, mirror, env_tag, env_commit, client)


def _instance(task: TaskSpec, mirror: Mirror, env_tag: str, env_commit: str, client: docker.DockerClient | None) -> str:
    if not mirror.has_commit(task.base_commit):
        raise EnvfarmError(f"base_commit {task.base_commit[:12]} is not in the mirror of {task.repo}",
                           "fetch the repository again (its mirror predates the task)")
    return ensure_image(instance_recipe(mirror, task.instance_id, env_tag, env_commit, task.base_commit,
                                        patched_paths(task.test_patch)), client).tag


def _env_from_envsetup(task: TaskSpec, mirror: Mirror, sources: EnvSources, client: docker.DockerClient | None) -> str:
    env_commit = task.environment_setup_commit if mirror.has_commit(task.environment_setup_commit) else task.base_commit
    existing = set(mirror.ls(env_commit))
    collect = sorted(p for p in patched_paths(task.test_patch) if p in existing and p.endswith(".py"))
    date = task.created_at.date().isoformat() if task.created_at else None
    version = task.version or env_commit[:12]
    result = build_env(mirror, task.repo, version, env_commit, date, collect, sources.options, client, language=task.language)
    if not result.ok:
        raise EnvfarmError(f"envfarm's environment setup found no working install ({result.reason_class}): {result.reason[:300]}",
                           "give the task an install recipe, or a pre-built image")
    return _instance(task, mirror, result.image, env_commit, client)


def ensure_env(task: TaskSpec, sources: EnvSources, client: docker.DockerClient | None = None) -> TaskEnv:
    """An image for `task` from the first source that works (see the module docstring).

    Engine failures (EngineUnavailable, SandboxError) propagate: they are not the task's, and trying
    the next source would only hide them.
    """
    from envfarm.engine import connect

    client = client or connect()
    attempts: list[dict[str, Any]] = []
    mirror = sources.mirror(task.repo)
    named = dataset_image(task)
    plan: list[tuple[str, Any]] = []
    if has_recipe(task):
        plan.append((RECIPE, (lambda: _env_from_recipe(task, mirror, sources, client)) if mirror else None))
    if named:
        plan.append((REGISTRY, lambda: pull(named, sources.registry, client)))
    plan.append((ENVSETUP, (lambda: _env_from_envsetup(task, mirror, sources, client)) if mirror else None))
    for source, build in plan:
        if build is None:
            attempts.append({"source": source, "ok": False, "reason": f"no snapshot of {task.repo}: no {task.repo.replace('/', '__')}.git under --mirrors"})
            continue
        try:
            image = build()
        except (EngineUnavailable, SandboxError):
            raise
        except ImageBuildError as exc:
            attempts.append({"source": source, "ok": False, "reason": f"{exc.problem}: {excerpt(exc.log or '')[-600:]}"})
            continue
        except EnvfarmError as exc:  # ImageMissing (a failed pull) included
            attempts.append({"source": source, "ok": False, "reason": exc.line()[:600]})
            continue
        attempts.append({"source": source, "ok": True, "image": image})
        return TaskEnv(image, source, attempts)
    tried = "; ".join(f"{a['source']}: {a['reason']}" for a in attempts)
    raise TaskEnvError(f"{task.instance_id}: no environment could be made ({tried[:900]})",
                       "pass --mirrors DIR holding the repository's bare mirror, or --registry URL holding the row's image", attempts)


__all__ = ["ENVSETUP", "RECIPE", "REGISTRY", "EnvSources", "TaskEnv", "TaskEnvError", "ensure_env", "has_recipe", "pull", "recipe_steps",
           "registry_ref"]
