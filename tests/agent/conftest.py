"""The calc SWE task of the scaffold's own tests (tests/trainer/rl/test_rl_agent.py), shared so these tests grade
against the same real image: gold fix -> reward 1, no change -> 0."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer" / "rl"))

from test_rl_agent import GOLD_PATCH, swe_task  # noqa: E402,F401 - re-exported: the fixture and its gold patch
