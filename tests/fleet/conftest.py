"""Fixtures: a FleetEmulator served over loopback HTTP, reached with the official client."""

from __future__ import annotations

from typing import Iterator

import pytest
from kubernetes import client

from envfarm.testing.kube_emulator import EmulatedCluster

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
