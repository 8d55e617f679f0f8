"""Shared fixtures: a real engine, the base image, sandboxes, and the store on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

os.environ.setdefault("DOCKER_HOST", "unix:///run/podman/podman.sock")
# Tests never reach a host: the web verifier's CDN shim answers from its cache alone unless a test points it at
# a fake registry on 127.0.0.1 (tests/verifiers/test_cdn.py).
os.environ["ENVFARM_NPM_REGISTRY"] = "off"


def _engine_or_skip():  # type: ignore[no-untyped-def]
    from envfarm.engine import connect
    from envfarm.errors import EngineUnavailable

    try:
        return connect()
    except EngineUnavailable as exc:
        pytest.skip(f"container engine missing: {exc.line()}")


@pytest.fixture(scope="session")
def engine_client():  # type: ignore[no-untyped-def]
    return _engine_or_skip()


@pytest.fixture(scope="session")
def base_image(engine_client) -> str:  # type: ignore[no-untyped-def]
    from envfarm.config import settings
    from envfarm.images.base import has_base

    if not has_base(engine_client):
        pytest.skip("base image envfarm/base:bookworm missing: run 'make setup'")
    return settings().base_image


@pytest.fixture(scope="session", autouse=True)
def _no_leaked_containers() -> Iterator[None]:
    """Every test session must end with no sandbox of this process left in the engine."""
    yield
    try:
        from envfarm.engine import connect
        from envfarm.sandbox.docker import LABEL_PID

        client = connect()
    except Exception:
        return
    leaked = client.containers.list(all=True, filters={"label": f"{LABEL_PID}={os.getpid()}"})
    for container in leaked:
        container.remove(force=True)
    assert not leaked, f"{len(leaked)} container(s) leaked by the test session"


@pytest.fixture
def docker_sandbox(engine_client, base_image) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A started DockerSandbox on the base image, closed after the test."""
    from envfarm.sandbox.docker import DockerSandbox

    sandbox = DockerSandbox(base_image, run_id="pytest", task_id="fixture", client=engine_client)
    try:
        yield sandbox
    finally:
        sandbox.close()


PG_URL = os.environ.get("ENVFARM_TEST_PG_URL", "")


def _pg_schema_url(schema: str) -> str:
    separator = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh, empty database URL: a SQLite file, or a private schema in the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'envfarm.db'}"
        return
    if not PG_URL:
        pytest.skip("PostgreSQL missing: ENVFARM_TEST_PG_URL is not set (make test sets it after make setup starts the server)")
    import sqlalchemy as sa

    admin = sa.create_engine(PG_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL missing: cannot connect to ENVFARM_TEST_PG_URL ({str(exc.orig).splitlines()[0]}); run make setup")
    try:
        yield _pg_schema_url(schema)
    finally:
        from envfarm.store import db

        for url, store in list(db._stores.items()):
            if schema in url:
                store.dispose()
                db._stores.pop(url, None)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def store(store_url):  # type: ignore[no-untyped-def]
    from envfarm.store.db import Store

    s = Store(store_url)
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture(scope="session")
def ray_local():  # type: ignore[no-untyped-def]
    """One local Ray for the whole test session (starting one costs several seconds on 2 cores)."""
    ray = pytest.importorskip("ray", reason="ray missing: run make setup")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests get one rerun. They judge what a page did from frames and video within settle windows,
    and in full-suite runs on this 2-core machine a correct page was once read as unchanged (and a broken
    twin as changed) while each test passed alone; one rerun keeps that timing noise from failing a run,
    and a real regression still fails both attempts (pytest's report lists every rerun)."""
    for item in items:
        if item.get_closest_marker("browser") is not None and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))
