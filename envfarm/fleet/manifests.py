"""`python -m envfarm.fleet.manifests check`: render every kustomization and validate every object.

Rendering uses `kubectl kustomize` (the install path users run); built-in kinds are validated against
the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors); custom
resources (k8s/examples, and anything rendered) against our CRDs' openAPIV3Schema; and the pods and
DaemonSets the controller generates against the Pod schema and the restricted Pod Security rules.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import yaml

from envfarm.errors import EnvfarmError

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
KUBERNETES_VERSION = "1.32"  # the oldest minor we promise to support (kubectl on the lead's machine)


@dataclass
class Report:
    rendered: dict[str, int] = field(default_factory=dict)  # kustomization dir -> object count
    validated: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def kustomization_dirs(root: Path = K8S_DIR) -> list[Path]:
    return sorted(path.parent for path in root.rglob("kustomization.yaml"))


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise EnvfarmError("kubectl is not on PATH, so the kustomizations cannot be rendered",
                           "install it (`apt-get install kubernetes-client`) or run `make setup`")
    proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise EnvfarmError(f"`kubectl kustomize {directory}` failed: {proc.stderr.strip()[:400]}",
                           f"fix {directory}/kustomization.yaml")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd_schemas(root: Path = K8S_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema for every CRD under k8s/."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(root.rglob("*.yaml")):
        for doc in load_yaml_docs(path):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return schemas


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}"


def validate_object(obj: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in crds:
        validator = jsonschema.Draft7Validator(crds[key])
        return [f"{_name(obj)}: {'.'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
                for err in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path) or "<root>"
        return [f"{_name(obj)}: {where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{_name(obj)}: no schema for {key[0]} {key[1]} in Kubernetes {KUBERNETES_VERSION} or our CRDs"]
    return []


def crd_conventions(obj: dict[str, Any]) -> list[str]:
    """What `kubectl get` users rely on: status subresource, printer columns, short names."""
    if obj.get("kind") != "CustomResourceDefinition":
        return []
    problems = []
    if not obj["spec"]["names"].get("shortNames"):
        problems.append(f"{_name(obj)}: no shortNames")
    for version in obj["spec"]["versions"]:
        if "status" not in version.get("subresources", {}):
            problems.append(f"{_name(obj)} {version['name']}: no status subresource")
        if not version.get("additionalPrinterColumns"):
            problems.append(f"{_name(obj)} {version['name']}: no printer columns")
    return problems


def generated_objects(example_fleets: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects the controller would create for the example fleets."""
    from envfarm.fleet.podspec import build_pod
    from envfarm.fleet.prepull import build_prepull_daemonset
    from envfarm.fleet.spec import parse_fleet_spec

    out: list[dict[str, Any]] = []
    for fleet in example_fleets:
        fleet = {**fleet, "metadata": {**fleet["metadata"], "uid": "00000000-0000-0000-0000-000000000000"}}
        spec = parse_fleet_spec(fleet)
        out.append(build_pod(fleet, spec, spec.images[0], 0, now=0.0))
        out.append(build_pod(fleet, spec, spec.images[0], 1, claim="example-claim", now=0.0))
        daemonset = build_prepull_daemonset(fleet, spec)
        if daemonset is not None:
            out.append(daemonset)
    return out


def check(root: Path = K8S_DIR, exclude: tuple[str, ...] = ()) -> Report:
    """`exclude`: top-level folders of k8s/ to leave out (the CLI checks everything)."""
    from envfarm.fleet.podspec import restricted_violations

    report = Report()
    crds = crd_schemas(root)
    for directory in kustomization_dirs(root):
        if directory.relative_to(root).parts[:1] and directory.relative_to(root).parts[0] in exclude:
            continue
        objects = render(directory)
        report.rendered[str(directory.relative_to(root.parent))] = len(objects)
        for obj in objects:
            report.errors += validate_object(obj, crds) + crd_conventions(obj)
            report.validated += 1
    examples = [doc for path in sorted((root / "examples").glob("*.yaml")) for doc in load_yaml_docs(path)]
    for obj in examples:
        report.errors += validate_object(obj, crds)
        report.validated += 1
    fleets = [obj for obj in examples if obj.get("kind") == "SandboxFleet"]
    try:
        generated = generated_objects(fleets)
    except EnvfarmError as exc:  # an invalid example fleet is already reported above
        report.errors.append(f"cannot generate pods from k8s/examples: {exc.problem}")
        generated = []
    for obj in generated:
        report.errors += validate_object(obj, crds)
        if obj["kind"] == "Pod":
            report.errors += [f"{_name(obj)}: {p}" for p in restricted_violations(obj)]
        report.validated += 1
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envfarm.fleet.manifests")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--root", type=Path, default=K8S_DIR)
    args = parser.parse_args(argv)
    try:
        report = check(args.root)
    except EnvfarmError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 2
    for directory, count in report.rendered.items():
        print(f"rendered {directory}: {count} objects")
    for error in report.errors:
        print(f"invalid: {error}", file=sys.stderr)
    print(f"{report.validated} objects validated, {len(report.errors)} errors")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
