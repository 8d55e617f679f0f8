"""The manifests CI check: every overlay renders and validates, and the check catches real mistakes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from envfarm.fleet import manifests

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (needed for `kubectl kustomize`)")


# Every folder under k8s/ is checked, the mining Job's included.
OTHER_TEAMS: tuple[str, ...] = ()


def test_every_overlay_renders_and_validates() -> None:
    report = manifests.check(exclude=OTHER_TEAMS)
    assert report.errors == []
    assert set(report.rendered) >= {"k8s", "k8s/base", "k8s/jobs", "k8s/overlays/dev", "k8s/overlays/production"}
    kinds = {obj["kind"] for obj in manifests.render(manifests.K8S_DIR)}
    assert {"CustomResourceDefinition", "Deployment", "Role", "RoleBinding", "NetworkPolicy", "Namespace"} <= kinds
    assert "ClusterRole" not in kinds  # least privilege: namespaced roles only


def test_production_runs_two_replicas_and_dev_one() -> None:
    def replicas(overlay: str) -> int:
        objs = manifests.render(manifests.K8S_DIR / "overlays" / overlay)
        return next(o for o in objs if o["kind"] == "Deployment")["spec"]["replicas"]

    assert (replicas("dev"), replicas("production")) == (1, 2)


@pytest.fixture()
def k8s_copy(tmp_path: Path) -> Path:
    root = tmp_path / "k8s"
    shutil.copytree(manifests.K8S_DIR, root)
    return root


def test_a_bad_custom_resource_is_caught(k8s_copy: Path) -> None:
    fleet = yaml.safe_load((k8s_copy / "examples" / "fleet.yaml").read_text())
    fleet["spec"]["maxPods"] = -5
    fleet["spec"]["images"][0]["name"] = "Has_Upper"
    (k8s_copy / "examples" / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    report = manifests.check(k8s_copy, exclude=OTHER_TEAMS)
    joined = "\n".join(report.errors)
    assert "spec.maxPods" in joined and "spec.images.0.name" in joined


def test_an_unknown_field_in_a_builtin_kind_is_caught(k8s_copy: Path) -> None:
    path = k8s_copy / "base" / "networkpolicy.yaml"
    path.write_text(path.read_text().replace("policyTypes: [Ingress, Egress]", "policyTypes: [Ingress, Egress]\n  egresss: []", 1))
    report = manifests.check(k8s_copy, exclude=OTHER_TEAMS)
    assert any("NetworkPolicy" in e and "egresss" in e for e in report.errors), report.errors


def test_a_crd_without_printer_columns_is_caught(k8s_copy: Path) -> None:
    path = k8s_copy / "base" / "crds" / "sandboxclaims.yaml"
    crd = yaml.safe_load(path.read_text())
    del crd["spec"]["versions"][0]["additionalPrinterColumns"]
    path.write_text(yaml.safe_dump(crd))
    assert any("printer columns" in e for e in manifests.check(k8s_copy, exclude=OTHER_TEAMS).errors)


def test_cli_exit_codes(k8s_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manifests.main(["check", "--root", str(k8s_copy)]) == 0
    (k8s_copy / "overlays" / "dev" / "kustomization.yaml").write_text("resources: [../../nope]\n")
    assert manifests.main(["check", "--root", str(k8s_copy)]) == 2
    assert "fix:" in capsys.readouterr().err
