"""How `envfarm tasks validate` decides a task's status from its runs (each run on the real engine is
covered in test_import_environments.py; here every combination of outcomes, without containers)."""

from __future__ import annotations

import pytest

from envfarm.tasks.harness_validate import TaskValidation, validation_report


@pytest.mark.parametrize(("gold", "empty", "status"), [
    (["resolved", "resolved"], ["unresolved", "unresolved"], "valid"),
    (["unresolved", "unresolved"], ["unresolved", "unresolved"], "gold_fails"),
    (["error"], ["unresolved"], "gold_fails"),  # the gold patch does not apply
    (["resolved", "unresolved"], ["unresolved", "unresolved"], "gold_flaky"),
    (["resolved"], ["resolved"], "empty_passes"),
    (["infrastructure"], ["infrastructure"], "infrastructure"),
    (["infrastructure", "resolved"], ["unresolved", "infrastructure"], "valid"),  # infra runs count neither way
    (["infrastructure"], ["unresolved"], "infrastructure"),  # no gold run finished: not a failing task
])
def test_status_from_runs(gold: list[str], empty: list[str], status: str) -> None:
    assert TaskValidation("a__b-1", gold=gold, empty=empty).decide() == status


def test_the_report_lists_failing_gold_patches_apart_from_infrastructure() -> None:
    results = [TaskValidation("a__b-1", gold=["unresolved"], empty=["unresolved"]), TaskValidation("a__b-2", gold=["resolved", "unresolved"], empty=["unresolved"] * 2),
               TaskValidation("a__b-3", gold=["infrastructure"], empty=["infrastructure"]), TaskValidation("a__b-4", gold=["resolved"], empty=["unresolved"])]
    for r in results:
        r.decide()
    report = validation_report(results, runs=2)
    assert report["gold_patch_fails_ids"] == ["a__b-1", "a__b-2"] and report["infrastructure_ids"] == ["a__b-3"]
    assert report["counts"] == {"valid": 1, "gold_fails": 1, "gold_flaky": 1, "empty_passes": 0, "infrastructure": 1}
