"""`envfarm.sandbox.open`: the one way to a sandbox. The docker backend for real on the engine; the kubernetes
backend as far as it runs without a cluster (which pod, which errors), since no API server runs here."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from envfarm import sandbox as sandboxes
from envfarm.config import settings
from envfarm.errors import EnvfarmError, SandboxError
from envfarm.sandbox import KubernetesTarget, SandboxBackend, SandboxLimits

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def clean_env(monkeypatch):  # type: ignore[no-untyped-def]
    for name in ("ENVFARM_SANDBOX_BACKEND", "ENVFARM_KUBE_PODS", "ENVFARM_KUBE_FLEET", "ENVFARM_KUBE_NAMESPACE", "ENVFARM_BASE_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    settings.cache_clear()
    yield monkeypatch
    settings.cache_clear()


@pytest.mark.engine
def test_docker_is_the_default_and_applies_labels_and_limits(clean_env, engine_client, base_image) -> None:
    with sandboxes.open(base_image, run_id="pytest", task_id="factory-1", limits=SandboxLimits(pids=64),
                        client=engine_client) as box:
        assert box.exec("echo hi").output.strip() == "hi"
        container = engine_client.containers.get(box.id)
        assert container.labels["envfarm.io/run"] == "pytest" and container.labels["envfarm.io/task"] == "factory-1"
        assert container.attrs["HostConfig"]["PidsLimit"] == 64
    assert not engine_client.containers.list(all=True, filters={"id": box.id}), "closing removed the container"


def test_backend_comes_from_the_environment(clean_env) -> None:
    clean_env.setenv("ENVFARM_SANDBOX_BACKEND", "kubernetes")
    clean_env.setenv("ENVFARM_KUBE_PODS", "pod-a, pod-b")
    clean_env.setenv("ENVFARM_KUBE_NAMESPACE", "ns")
    chosen = SandboxBackend.from_env()
    assert chosen.backend == "kubernetes" and chosen.kubernetes.pods == ["pod-a", "pod-b"]
    box = sandboxes.open("any-image", run_id="r", slot=1, api_client=object())  # no cluster contacted before the first command
    assert box.id == "ns/pod-b"


def test_a_bad_backend_name_is_one_line_with_the_fix(clean_env) -> None:
    clean_env.setenv("ENVFARM_SANDBOX_BACKEND", "k8s")
    with pytest.raises(EnvfarmError, match="ENVFARM_SANDBOX_BACKEND") as info:
        sandboxes.open("img", run_id="r")
    assert "\n" not in info.value.line() and "docker or kubernetes" in info.value.fix
    with pytest.raises(EnvfarmError, match="k8s"):
        sandboxes.open("img", run_id="r", backend="k8s")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, message", [
    ({"slot": None}, r"no pod for sandbox slot None"),
    ({"slot": 2}, r"no pod for sandbox slot 2: sandbox.kubernetes.pods lists 1"),
    ({"slot": 0, "limits": SandboxLimits()}, r"limits cannot be set per sandbox on the kubernetes backend"),
    ({"slot": 0, "on_event": lambda *a: None}, r"client/on_event are Docker-engine options"),
])
def test_kubernetes_misuse_names_the_fix(clean_env, kwargs, message) -> None:
    backend = SandboxBackend(backend="kubernetes", kubernetes=KubernetesTarget(pods=["only"]))
    with pytest.raises(SandboxError, match=message) as info:
        sandboxes.open("img", run_id="r", backend=backend, api_client=object(), **kwargs)
    assert info.value.fix


def test_the_base_image_name_reaches_every_caller(clean_env) -> None:
    from envfarm.task import InstallConfig
    from envfarm.tasks.envsetup.base import BuildOptions

    assert settings().base_image == "envfarm/base:bookworm"
    clean_env.setenv("ENVFARM_BASE_IMAGE", "registry.local/base:custom")
    settings.cache_clear()
    assert BuildOptions().base_image == "registry.local/base:custom", "the miner's env builds start from it"
    assert InstallConfig().base_image == "registry.local/base:custom"


def test_no_package_constructs_a_backend_directly() -> None:
    """Every caller goes through open(): only envfarm/sandbox/ may name DockerSandbox( as a call."""
    out = subprocess.run(["grep", "-rn", "DockerSandbox(", "--include=*.py", "envfarm", "tasks", "trainer", "verifiers"],
                         cwd=REPO, capture_output=True, text=True).stdout
    offenders = [line for line in out.splitlines() if not line.startswith("envfarm/sandbox/")]
    assert not offenders, offenders
    assert re.search(r"envfarm/sandbox/factory\.py:\d+:.*DockerSandbox\(", out), "the factory is where the backend is made"
