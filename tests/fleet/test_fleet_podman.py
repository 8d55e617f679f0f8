"""The pod spec the controller generates, run for real with `podman kube play` on the base image, then
driven through KubernetesSandbox with `podman exec` as the exec transport. Catches a spec that could not
start (bad security context, volumes, command) and checks the restrictions hold inside the container."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from envfarm.fleet.podspec import build_pod
from fleet_local_exec import LocalExec  # the WSClient surface, here over `podman exec -i`
from envfarm.sandbox.kubernetes import KubernetesSandbox
from envfarm.fleet.spec import parse_fleet_spec

pytestmark = pytest.mark.engine
IMAGE = "envfarm/base:bookworm"
PODMAN = shutil.which("podman")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert PODMAN is not None
    return subprocess.run([PODMAN, "--runtime", "runc", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def played_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if PODMAN is None:
        pytest.skip("podman is not installed (needed to run the generated pod spec)")
    if podman("image", "exists", IMAGE, timeout=30).returncode != 0:
        pytest.skip(f"the base image {IMAGE} is not built yet (make setup builds it)")
    name = f"fleettest-{uuid.uuid4().hex[:6]}"
    fleet = {"metadata": {"name": name, "namespace": "envfarm-sandboxes", "uid": str(uuid.uuid4())},
             "spec": {"images": [{"name": "base", "image": IMAGE}], "template": {"workdir": "/scratch"}}}
    pod = build_pod(fleet, parse_fleet_spec(fleet), parse_fleet_spec(fleet).images[0], 0)
    manifest = tmp_path_factory.mktemp("kube") / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    played = podman("kube", "play", "--network", "none", str(manifest))
    if played.returncode != 0:
        pytest.fail(f"podman kube play refused the generated pod spec: {played.stderr.strip()[-800:]}")
    container = f"{pod['metadata']['name']}-sandbox"
    try:
        yield container
    finally:
        podman("kube", "down", str(manifest), timeout=60)


def podman_exec_stream(container: str) -> Any:
    def stream(fn: Any, name: str, namespace: str, command: list[str], **kwargs: Any) -> LocalExec:
        exec_argv = [PODMAN or "podman", "--runtime", "runc", "exec", "-i", container, *command]
        return LocalExec(exec_argv, Path("/"))

    return stream


def test_generated_spec_starts_with_the_restrictions_in_force(played_pod: str) -> None:
    state = podman("inspect", "--format", "{{.State.Running}}", played_pod)
    assert state.stdout.strip() == "true", state.stderr
    identity = podman("exec", played_pod, "sh", "-c", "id -u; grep CapEff /proc/self/status; "
                      "ls /var/run/secrets/kubernetes.io 2>&1; grep NoNewPrivs /proc/self/status")
    lines = identity.stdout
    assert lines.splitlines()[0] == "1000"  # runAsUser from the spec, not root
    assert "CapEff:\t0000000000000000" in lines  # every capability dropped
    assert "No such file" in lines  # no service-account token mounted
    assert "NoNewPrivs:\t1" in lines  # allowPrivilegeEscalation: false


def test_kubernetes_sandbox_drives_the_running_pod(played_pod: str) -> None:
    sandbox = KubernetesSandbox(None, "envfarm-sandboxes", played_pod, workdir="/scratch",
                                stream_fn=podman_exec_stream(played_pod))
    result = sandbox.exec("echo hello > greeting && cat greeting && python3 -c 'print(6*7)'")
    assert result.ok and result.output.split() == ["hello", "42"]
    sandbox.write_file("/scratch/notes.txt", "line one\n")
    assert sandbox.read_file("/scratch/notes.txt") == b"line one\n"
    slow = sandbox.exec("sleep 30", timeout=1)
    assert slow.timed_out and slow.exit_code == 124
