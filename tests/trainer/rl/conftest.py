"""One local Ray per test session (shared with tests/trainer/rl via the same guard)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray", reason="ray missing: pip install ray==2.60.0")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
