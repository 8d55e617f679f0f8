"""Garbage collection of containers whose owner run is gone.

A container is kept only while its run is `running` in the store and, when the run lives on this host,
its owner process is still alive. Labels are the source of truth, so a caller killed with SIGKILL leaves
nothing gc cannot find.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import docker
from docker.errors import APIError, DockerException, NotFound

from envfarm.sandbox.docker import LABEL_HOST, LABEL_MANAGED, LABEL_PID, LABEL_RUN
from envfarm.store.db import Store
from envfarm.store.models import RunRow


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class GcReport:
    examined: int = 0
    removed: list[str] = None  # type: ignore[assignment]
    kept: int = 0

    def __post_init__(self) -> None:
        self.removed = self.removed or []


def orphaned(labels: dict[str, str], runs: dict[str, RunRow], this_host: str) -> bool:
    run = runs.get(labels.get(LABEL_RUN, ""))
    host = labels.get(LABEL_HOST, "")
    pid = int(labels.get(LABEL_PID, "0") or 0)
    owner_dead_here = host == this_host and not pid_alive(pid)
    if run is None:
        # No run row: an ad-hoc sandbox; it lives exactly as long as its process (on another host we
        # cannot tell, so it stays until that host's gc or `gc --all`).
        return owner_dead_here
    if run.status != "running":
        return True
    return owner_dead_here


def _labels(container) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Labels of a sparse list entry (top-level `Labels`, not `Config.Labels`)."""
    return container.attrs.get("Labels") or {}


def collect(client: docker.DockerClient, store: Store | None, remove_all: bool = False, dry_run: bool = False) -> GcReport:
    report = GcReport()
    # sparse: labels come with the list itself, so a container removed meanwhile (by its owner, or by
    # another gc) cannot fail the sweep with a 404 on a per-container inspect.
    containers = client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL_MANAGED}=true"})
    runs: dict[str, RunRow] = {}
    if store is not None and not remove_all:
        run_ids = {_labels(c).get(LABEL_RUN, "") for c in containers}
        with store.session() as session:
            for run_id in run_ids:
                row = session.get(RunRow, run_id)
                if row is not None:
                    runs[run_id] = row
    this_host = socket.gethostname()
    for container in containers:
        report.examined += 1
        if remove_all or orphaned(_labels(container), runs, this_host):
            report.removed.append(container.id[:12])
            if not dry_run:
                try:
                    container.remove(force=True, v=True)
                except NotFound:
                    pass
                except APIError as exc:
                    if "no such container" in str(exc).lower():
                        continue
                    report.removed.pop()
                    report.kept += 1
                except DockerException:
                    report.removed.pop()
                    report.kept += 1
        else:
            report.kept += 1
    return report
