"""Warm pools: acquire pops a started sandbox, an empty pool starts one on demand, close leaves nothing."""

from __future__ import annotations

import pytest

from envfarm.errors import EnvfarmError
from envfarm.sandbox.docker import LABEL_POOL
from envfarm.sandbox.pool import SandboxPool

pytestmark = pytest.mark.engine


def test_warm_acquire_then_cold_fallback_then_clean_close(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    with SandboxPool(base_image, size=2, name="pytest-pool", client=engine_client, run_id="pytest") as pool:
        assert pool.wait_warm(120)
        first, second = pool.acquire(), pool.acquire()
        assert pool.cold_starts == 0, "both came from the warm pool"
        assert first.container.labels[LABEL_POOL] == "pytest-pool"
        assert first.exec("echo ready").output.strip() == "ready"
        pool.size = 0  # stop refilling so the next acquire must start one on demand
        while pool.warm_count:
            pool.release(pool.acquire())
        cold = pool.acquire()
        assert pool.cold_starts >= 1 and cold.exec("true").ok
        for sandbox in (first, second, cold):
            pool.release(sandbox)
    assert not engine_client.containers.list(all=True, filters={"label": f"{LABEL_POOL}=pytest-pool"})
    with pytest.raises(EnvfarmError, match="closed"):
        pool.acquire()


def test_negative_size_is_rejected(base_image) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EnvfarmError, match="pool size"):
        SandboxPool(base_image, size=-1)
