"""The rollout workers' sandbox factory: the docker branch for real (a container that runs a program), the
kubernetes branch as far as it runs without a cluster (construction, validation, and a clear error with
the fix when no cluster or kubeconfig is reachable). No real Kubernetes cluster is used here."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from envfarm.errors import EnvfarmError, SandboxError
from envfarm.sandbox.protocol import Sandbox
from envfarm.trainer.loop.config import load_config
from envfarm.sandbox.kubernetes import kube_api_client
from envfarm.trainer.loop.sandboxes import make_sandbox, preflight

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "trainer/configs/demo.yaml"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def dead_kubeconfig(tmp_path: Path) -> Path:
    """A valid kubeconfig whose API server address has nothing listening."""
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{_closed_port()}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return path


def _kube(kubeconfig: Path | str, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(DEMO, ["sandbox.backend=kubernetes", "rollout.num_workers=2", "sandbox.kubernetes.namespace=ns",
                              "sandbox.kubernetes.pods=[pod-0, pod-1]", f"sandbox.kubernetes.kubeconfig={kubeconfig}", *extra])


@pytest.mark.engine
def test_docker_branch_runs_a_program(base_image):
    cfg = load_config(DEMO)
    assert cfg.sandbox.backend == "docker"  # the demo's default is unchanged
    sandbox = make_sandbox(cfg, 3, "pytest-factory")
    try:
        result = sandbox.exec("python3 -c 'print(6 * 7)'", timeout=30)
        assert result.exit_code == 0 and result.output.strip() == "42"
        assert sandbox.container.labels["envfarm.io/task"] == "rollout-worker-3"
    finally:
        sandbox.close()
    preflight(cfg)  # nothing to check for docker


@pytest.mark.parametrize("overrides, message", [
    (["sandbox.backend=k8s"], r"sandbox.backend='k8s'"),
    (["sandbox.backend=kubernetes"], r"sandbox.kubernetes.pods names 0 pod"),
    (["sandbox.backend=kubernetes", "sandbox.kubernetes.pods=[p]", "tasks.family=swe"], re.escape("sandbox.backend=kubernetes grades tasks.family=func|web only")),  # the families that share a worker's sandbox
    (["sandbox.kubernetes.request_timeout_s=0"], r"sandbox.kubernetes.request_timeout_s=0"),
    (["rollout.partial.enabled=true"], r"rollout.partial.enabled is true but it has no budget"),
    (["rollout.partial.enabled=true", "rollout.partial.token_budget=2", "tasks.family=swe"], r"tasks.family=func only"),
    (["rollout.partial.token_budget=-1"], r"rollout.partial.token_budget=-1"),
])
def test_bad_values_name_the_field_and_the_fix(overrides, message):
    with pytest.raises(EnvfarmError, match=message) as info:
        load_config(DEMO, overrides)
    assert info.value.fix


def test_kubernetes_branch_builds_a_sandbox_per_worker_without_contacting_the_cluster(dead_kubeconfig):
    from envfarm.sandbox.kubernetes import KubernetesSandbox

    cfg = _kube(dead_kubeconfig, "sandbox.kubernetes.container=box", "sandbox.kubernetes.workdir=/work")
    sandbox = make_sandbox(cfg, 1, "pytest-factory")
    assert isinstance(sandbox, KubernetesSandbox) and isinstance(sandbox, Sandbox)
    assert (sandbox.id, sandbox.container, sandbox.workdir) == ("ns/pod-1", "box", "/work")
    with pytest.raises(SandboxError, match="exec into ns/pod-1 failed"):  # the first command is what reaches the cluster
        sandbox.exec("true", timeout=5)


def test_unreachable_cluster_fails_before_the_run_starts(dead_kubeconfig):
    from envfarm.trainer.loop.run import train

    cfg = _kube(dead_kubeconfig, f"train.out_dir={dead_kubeconfig.parent / 'run'}")
    with pytest.raises(SandboxError, match=r"cannot read pod ns/pod-0 from the cluster at https://127.0.0.1:\d+") as info:
        preflight(cfg)
    assert "sandbox.kubernetes.kubeconfig" in info.value.fix and "sandbox.backend=docker" in info.value.fix
    with pytest.raises(SandboxError, match="cannot read pod"):
        train(cfg)  # the same check, before Ray or any worker starts
    assert not (dead_kubeconfig.parent / "run").exists()


def test_missing_kubeconfig_names_the_fix(tmp_path, monkeypatch):
    with pytest.raises(SandboxError, match=r"sandbox.kubernetes.kubeconfig='.*nope' does not exist") as info:
        kube_api_client(_kube(tmp_path / "nope").sandbox.kubernetes)
    assert "sandbox.backend=docker" in info.value.fix
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(DEMO, ["sandbox.backend=kubernetes", "sandbox.kubernetes.pods=[p]"])
    with pytest.raises(SandboxError, match="no usable Kubernetes configuration") as info:
        make_sandbox(cfg, 0, "pytest-factory")
    assert "sandbox.kubernetes.kubeconfig" in info.value.fix
