"""Pure helpers shared by the emulator and the simulator: merge patches, selectors, kubelet statuses.

They need nothing beyond the standard library, so the simulator (and the benchmark on it) runs without
the `test` extra, and the planner's tests can build pod statuses without starting an emulator.
"""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): a dict merges key by key, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (`a=b`, `a==b`, `a!=b`) and existence terms (`a`, `!a`)."""
    if not selector:
        return True
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def running_status(ip: str = "10.0.0.1") -> dict[str, Any]:
    """The status a kubelet reports for a started, ready sandbox pod."""
    return {"phase": "Running", "podIP": ip,
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "sandbox", "ready": True, "state": {"running": {}}}]}


def image_pull_failure(message: str = "manifest unknown: not found") -> dict[str, Any]:
    """The status of a pod whose image cannot be pulled."""
    return {"phase": "Pending", "containerStatuses": [
        {"name": "sandbox", "ready": False, "state": {"waiting": {"reason": "ErrImagePull", "message": message}}}]}


__all__ = ["image_pull_failure", "merge_patch", "running_status", "selector_matches"]
