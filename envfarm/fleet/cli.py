"""`envfarm fleet ...`: the fleet's commands: run the controller, check the manifests, read fleet status.

`envfarm.cli` mounts `app` as `envfarm fleet`. Each command is a thin front on a module that also runs
alone (`python -m envfarm.fleet.controller`, `python -m envfarm.fleet.manifests check`), so the
controller's container and CI need no CLI. Errors are EnvfarmError: `envfarm` prints them as one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from envfarm.errors import EnvfarmError
from envfarm.fleet import labels as L

app = typer.Typer(help="Kubernetes fleet controller and tools.", no_args_is_help=True, add_completion=False)
manifests_app = typer.Typer(help="The manifests under k8s/.", no_args_is_help=True)
app.add_typer(manifests_app, name="manifests")

KUBECONFIG_HELP = "kubeconfig file (default: in-cluster service account, then KUBECONFIG / ~/.kube/config)"


@app.command()
def controller(
    namespace: str = typer.Option("envfarm-sandboxes", help="namespace of the fleets, claims and sandbox pods"),
    qps: float = typer.Option(50.0, help="API writes per second (token bucket rate)"),
    burst: int = typer.Option(100, help="token bucket size"),
    max_in_flight: int = typer.Option(64, help="concurrent API writes"),
    leader_elect: bool = typer.Option(False, "--leader-elect", help="act only while holding the Lease (replicas > 1)"),
    lease_namespace: str = typer.Option("envfarm-system", help="namespace of the leader-election Lease"),
    metrics_port: int = typer.Option(9090, help="Prometheus metrics port (0: none)"),
    kubeconfig: Optional[str] = typer.Option(None, help=KUBECONFIG_HELP),
) -> None:
    """Run the fleet controller until interrupted (what the Deployment in k8s/ runs)."""
    from envfarm.fleet.controller import run_controller

    run_controller(namespace, qps, burst, max_in_flight, leader_elect, lease_namespace, metrics_port, kubeconfig)


@manifests_app.command("check")
def manifests_check(root: Optional[Path] = typer.Option(None, help="the k8s/ folder to check (default: this checkout's)")) -> None:
    """Render every kustomization with `kubectl kustomize` and validate every object (exit 1 on errors)."""
    from envfarm.fleet import manifests

    report = manifests.check(root or manifests.K8S_DIR)
    for directory, count in report.rendered.items():
        typer.echo(f"rendered {directory}: {count} objects")
    for error in report.errors:
        typer.echo(f"invalid: {error}", err=True)
    typer.echo(f"{report.validated} objects validated, {len(report.errors)} errors")
    raise typer.Exit(0 if report.ok else 1)


FLEET_COLUMNS = ("NAME", "MAX", "READY", "PENDING", "CLAIMED", "WARM", "FAILED", "SUCCESS", "QUARANTINED")
CLAIM_COLUMNS = ("NAME", "FLEET", "IMAGE", "PHASE", "POD", "FROM", "REASON")


@app.command()
def status(
    fleet: Optional[str] = typer.Argument(None, help="one fleet (default: every fleet in the namespace)"),
    namespace: str = typer.Option("envfarm-sandboxes", help="namespace of the fleets and claims"),
    claims: bool = typer.Option(False, "--claims", help="also list each claim (default: counts by phase)"),
    kubeconfig: Optional[str] = typer.Option(None, help=KUBECONFIG_HELP),
    context: Optional[str] = typer.Option(None, help="kubeconfig context (default: the current one)"),
) -> None:
    """SandboxFleet and SandboxClaim status as the controller wrote it, read through the API server."""
    from envfarm.fleet.controller import load_api_client

    api_client = load_api_client(kubeconfig, max_in_flight=1, context=context)
    fleets = [f for f in _list(api_client, namespace, L.FLEET_PLURAL) if fleet in (None, f["metadata"]["name"])]
    if fleet is not None and not fleets:
        raise EnvfarmError(f"no SandboxFleet {fleet!r} in namespace {namespace}",
                           f"list them with `envfarm fleet status --namespace {namespace}`")
    names = {f["metadata"]["name"] for f in fleets}
    claim_objs = [c for c in _list(api_client, namespace, L.CLAIM_PLURAL) if (c.get("spec") or {}).get("fleet") in names]
    rows = [_fleet_row(f, claim_objs) for f in fleets]
    typer.echo(_table(FLEET_COLUMNS + ("CLAIMS",), rows) if rows else f"no SandboxFleets in namespace {namespace}")
    if claims and claim_objs:
        typer.echo("")
        typer.echo(_table(CLAIM_COLUMNS, [_claim_row(c) for c in claim_objs]))


def _list(api_client: Any, namespace: str, plural: str) -> list[dict[str, Any]]:
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    try:
        listing = custom.list_namespaced_custom_object(L.GROUP, L.VERSION, namespace, plural, _request_timeout=30)
    except client.ApiException as exc:
        raise EnvfarmError(f"listing {plural} in namespace {namespace}: {exc.status} {exc.reason}",
                           "install the CRDs (`kubectl apply -k k8s/`) and check you may list them") from None
    except Exception as exc:  # noqa: BLE001 - connection refused, TLS, timeouts read the same to the user
        raise EnvfarmError(f"listing {plural}: the cluster did not answer ({str(exc).splitlines()[0][:200]})",
                           "check the cluster is reachable (--kubeconfig, --context)") from None
    return sorted(listing.get("items") or [], key=lambda obj: obj["metadata"]["name"])


def _fleet_row(fleet: dict[str, Any], claims: list[dict[str, Any]]) -> list[str]:
    spec, st = fleet.get("spec") or {}, fleet.get("status") or {}
    phases: dict[str, int] = {}
    for claim in claims:
        if claim["spec"].get("fleet") == fleet["metadata"]["name"]:
            phase = (claim.get("status") or {}).get("phase", "Pending")
            phases[phase] = phases.get(phase, 0) + 1
    quarantined = ",".join(q.get("name", "?") for q in st.get("quarantined") or []) or "-"
    counts = " ".join(f"{phase}={n}" for phase, n in sorted(phases.items())) or "-"
    return [fleet["metadata"]["name"], str(spec.get("maxPods", "")),
            *(str(st.get(key, "-")) for key in ("ready", "pending", "claimed", "warm", "failedTotal", "successRate")),
            quarantined, counts]


def _claim_row(claim: dict[str, Any]) -> list[str]:
    spec, st = claim.get("spec") or {}, claim.get("status") or {}
    return [claim["metadata"]["name"], str(spec.get("fleet", "")), str(spec.get("image", "")),
            str(st.get("phase", "Pending")), str(st.get("podName", "-")), str(st.get("servedFrom", "-")),
            str(st.get("reason", "-"))]


def _table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    """Plain aligned columns, as `kubectl get` prints them (greppable, no box drawing)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]
    return "\n".join("   ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [list(columns), *rows])
