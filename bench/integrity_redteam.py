"""Reward integrity, red team: every attack of tests/verifiers/test_redteam.py graded in a fresh sandbox.

Counts what matters for RL: attempts, attacks that scored above 0 (each one is reward a policy can
farm), verifier errors (a crashed grader is a lost rollout, or worse a retried one), and how many
zeros carried a "tampering" reason; the gold patch is graded too, as the honest control (it must score
1). Runs on the real engine; the machine's load is recorded at both ends.

    make bench-integrity                      (every section, bench/results/integrity.json)
    python -m bench.integrity --only red_team (this section alone; the others keep their last results)
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any


SUITE = Path(__file__).resolve().parents[1] / "tests" / "verifiers" / "test_redteam.py"


def _suite() -> Any:
    spec = importlib.util.spec_from_file_location("envfarm_redteam_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _grade(suite: Any, image: str, name: str, patch: str | None, worktree: Any = None) -> dict[str, Any]:
    from envfarm import sandbox as sandboxes
    from envfarm.verifiers.swe import SweVerifier

    started = time.perf_counter()
    row: dict[str, Any] = {"attack": name}
    try:
        with sandboxes.open(image, run_id="bench-integrity-redteam", task_id="redteam") as sb:
            base = suite.prepare_repo(sb)
            if worktree is not None:
                worktree(sb)
            reward = SweVerifier(timeout=120).verify(suite.fixture._task(base), sb, patch)
        row.update(value=reward.value, reason=str(reward.details.get("reason", ""))[:300],
                   tampering=bool(str(reward.details.get("reason", "")).startswith("tampering")))
    except Exception as exc:  # noqa: BLE001 - a verifier error is what this benchmark counts
        row.update(value=None, error=f"{type(exc).__name__}: {str(exc)[:300]}", trace=traceback.format_exc()[-800:])
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def run() -> dict[str, Any]:
    """Grade every attack and the gold control; the counts and one row per attack."""
    from envfarm.config import settings

    suite = _suite()
    image = settings().base_image
    rows = []
    for attack in suite.ATTACKS:
        row = _grade(suite, image, attack.name, attack.patch(), attack.worktree)
        row["class"] = attack.klass
        rows.append(row)
    gold = _grade(suite, image, "gold patch (honest control)", suite.fixture.GOLD_PATCH)
    return {
        "attempts": len(rows),
        "scored_above_zero": sum(1 for r in rows if (r.get("value") or 0) > 0),
        "verifier_errors": sum(1 for r in rows if "error" in r),
        "zero_with_tampering_reason": sum(1 for r in rows if r.get("tampering")),
        "classes": sorted({r["class"] for r in rows}),
        "gold_control": gold,
        "attacks": rows,
    }


if __name__ == "__main__":
    from bench.integrity import main

    sys.argv[1:] = ["--only", "red_team"]
    main()
