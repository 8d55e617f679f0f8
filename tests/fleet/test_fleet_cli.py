"""`envfarm fleet ...` (envfarm/fleet/cli.py): the sub-commands exist, `status` reads what the real
controller wrote through a kubeconfig that points at the emulator, `controller` runs the controller."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from envfarm.errors import EnvfarmError
from envfarm.fleet import manifests
from envfarm.fleet.cli import app
from envfarm.fleet.controller import run_controller
from fleet_helpers import GROUP, NS, make_claim, make_fleet, ready_count, wait_until

runner = CliRunner()


@pytest.fixture()
def kubeconfig(cluster, tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": cluster.url}}],
        "users": [{"name": "tester", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}]}))
    return str(path)


def test_the_fleet_commands_are_mounted_on_envfarm() -> None:
    proc = subprocess.run([sys.executable, "-m", "envfarm.cli", "fleet", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(command in proc.stdout for command in ("controller", "status", "manifests"))


def test_status_shows_what_the_controller_wrote(cluster, custom, controller_factory, kubelet, kubeconfig) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 2}])
    controller_factory()
    wait_until(lambda: ready_count(cluster) == 2, what="the warm pool")
    make_claim(custom, "c0")

    def settled() -> bool:  # the claim bound and the pool refilled: nothing changes after this
        status = custom.get_namespaced_custom_object(*GROUP, "sandboxfleets", "f").get("status") or {}
        return (status.get("claimed"), status.get("ready")) == (1, 3)

    wait_until(settled, what="the fleet status showing the claim and the refilled pool")
    result = runner.invoke(app, ["status", "--kubeconfig", kubeconfig, "--namespace", NS, "--claims"])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()[:2]
    assert header.split() == ["NAME", "MAX", "READY", "PENDING", "CLAIMED", "WARM", "FAILED", "SUCCESS", "QUARANTINED", "CLAIMS"]
    assert row.split()[:5] == ["f", "100", "3", "0", "1"] and row.split()[-1] == "Bound=1"
    claim_line = next(line for line in result.output.splitlines() if line.startswith("c0 "))
    assert claim_line.split()[:4] == ["c0", "f", "a", "Bound"] and "warm" in claim_line


def test_status_of_a_missing_fleet_is_one_clear_error(cluster, kubeconfig) -> None:
    result = runner.invoke(app, ["status", "nope", "--kubeconfig", kubeconfig])
    assert isinstance(result.exception, EnvfarmError) and "no SandboxFleet 'nope'" in result.exception.problem


def test_a_missing_kubeconfig_is_one_clear_error() -> None:
    for command in (["status"], ["controller", "--metrics-port", "0"]):
        result = runner.invoke(app, [*command, "--kubeconfig", "/nonexistent/kubeconfig"])
        assert isinstance(result.exception, EnvfarmError) and "does not exist" in result.exception.problem


def test_the_controller_command_runs_the_controller_until_stopped(cluster, custom, kubelet, kubeconfig) -> None:
    make_fleet(custom, images=[{"name": "a", "image": "img-a", "warm": 3}])
    stop = threading.Event()
    thread = threading.Thread(target=run_controller, kwargs=dict(namespace=NS, metrics_port=0, kubeconfig=kubeconfig, stop=stop))
    thread.start()
    try:
        wait_until(lambda: ready_count(cluster) == 3, what="the warm pool made by `envfarm fleet controller`")
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (needed for `kubectl kustomize`)")
def test_manifests_check_exit_codes(tmp_path: Path) -> None:
    root = tmp_path / "k8s"
    shutil.copytree(manifests.K8S_DIR, root)
    good = runner.invoke(app, ["manifests", "check", "--root", str(root)])
    assert good.exit_code == 0 and "0 errors" in good.output
    fleet = root / "examples" / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("maxPods:", "maxPods: -5\n  unused:", 1))
    bad = runner.invoke(app, ["manifests", "check", "--root", str(root)])
    assert bad.exit_code == 1 and "invalid:" in bad.output
