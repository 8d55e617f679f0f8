"""Fixtures: a FleetEmulator served over loopback HTTP, reached with the official client; the real
controller started against it; a fake kubelet that starts its pods."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from kubernetes import client

from envfarm.fleet.api import KubeApi
from envfarm.fleet.controller import ControllerConfig, FleetController
from envfarm.testing.kube_emulator import EmulatedCluster, FakeKubelet

NS = "envfarm-sandboxes"


@pytest.fixture()
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as running:
        yield running


@pytest.fixture()
def core(cluster: EmulatedCluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client())


@pytest.fixture()
def custom(cluster: EmulatedCluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api_client())


@pytest.fixture()
def controller_factory(cluster: EmulatedCluster) -> Iterator[Callable[..., FleetController]]:
    started: list[FleetController] = []

    def start(**overrides: Any) -> FleetController:
        resetter = overrides.pop("resetter", None)
        settings: dict[str, Any] = dict(namespace=NS, qps=200, burst=50, max_in_flight=8, resync_seconds=0.2,
                                        status_interval=0.1, orphan_sweep_seconds=0.5, coalesce_seconds=0.02)
        config = ControllerConfig(**{**settings, **overrides})
        ctl = FleetController(KubeApi(cluster.api_client()), config, resetter=resetter).start()
        started.append(ctl)
        return ctl

    yield start
    for ctl in started:
        ctl.stop(graceful=False)


@pytest.fixture()
def kubelet(cluster: EmulatedCluster) -> Iterator[FakeKubelet]:
    with FakeKubelet(cluster, bad_images={"img-bad"}) as running:
        yield running
