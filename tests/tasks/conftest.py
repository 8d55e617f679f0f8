"""Session fixtures: one offline wheelhouse and one set of fixture repositories per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .fixtures import build_wheelhouse, make_broken_repo, make_calc_repo


@pytest.fixture(scope="session")
def fixture_world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mining-world")
    os.environ.setdefault("PYTHON", sys.executable)
    wheelhouse = build_wheelhouse(root / "wheels")
    dump, mirror = make_calc_repo(root)
    make_broken_repo(root, dump)
    return {"root": root, "dump": dump, "calc_mirror": mirror, "wheelhouse": wheelhouse}
