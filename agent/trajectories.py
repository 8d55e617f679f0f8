"""The trajectory file of `envfarm rollout`: one JSON line per graded episode, appended whole, resumable.

A line holds what a trainer or an evaluation needs: the task and sample index (`task_id`, `k`), the
conversation (`messages`, with the model's native tool calls), every tool call with its observation
(`tool_calls`), the reward and the verifier's details (`grade`), token usage and the patch. A line is
written with one `write` on an O_APPEND descriptor and fsynced; opening the file again drops a trailing
line without its newline (a kill in the middle of a write, a full disk), so every line in the file is whole
and a re-run skips exactly the (task, k) pairs that have one. pass@k is computed from the file, so it
counts earlier runs too.

Part of the scaffold package (see `rollout_cli`); plain JSON, no trainer import needed to read it.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from envfarm.errors import EnvfarmError
from envfarm.agent.episode import Transcript
from envfarm.verifiers.reward import Reward


def trajectory_row(task_id: str, k: int, rollout_id: str, model: str, transcript: Transcript, reward: Reward) -> dict[str, Any]:
    return {
        "rollout_id": rollout_id, "task_id": task_id, "k": k, "model": model,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reward": reward.value, "passed": reward.passed, "grade": reward.to_dict(),
        "finish_reason": transcript.finish_reason, "steps": transcript.steps, "tool_errors": transcript.tool_errors,
        "seconds": transcript.seconds, "error": transcript.error,
        "usage": {**transcript.usage, "generated_tokens": transcript.tokens},
        "messages": transcript.messages, "tool_calls": transcript.calls, "patch": transcript.patch,
    }


@dataclass
class Opened:
    done: set[tuple[str, int]]  # (task_id, k) pairs with a whole line
    dropped_bytes: int  # a trailing partial line removed on open
    unreadable_lines: int  # whole lines that are not a trajectory (kept, not counted as done)


class TrajectoryFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def open(self) -> Opened:
        """Repair a torn last line, then read which (task, k) pairs are done."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        dropped = 0
        if self.path.exists():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                dropped = len(data) - keep
                with self.path.open("r+b") as f:
                    f.truncate(keep)
                    os.fsync(f.fileno())
        done: set[tuple[str, int]] = set()
        bad = 0
        for row in self._lines():
            if row is None:
                bad += 1
            else:
                done.add((row["task_id"], row["k"]))
        return Opened(done, dropped, bad)

    def _lines(self) -> Iterator[dict[str, Any] | None]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    yield None
                    continue
                ok = isinstance(row, dict) and isinstance(row.get("task_id"), str) and isinstance(row.get("k"), int)
                yield row if ok else None

    def rows(self) -> list[dict[str, Any]]:
        return [r for r in self._lines() if r is not None]

    def append(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, default=str, ensure_ascii=False) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    if n <= 0:
                        raise EnvfarmError(f"cannot write to {self.path}", "check the disk has space")
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c passed (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def summarize(rows: list[dict[str, Any]], task_ids: list[str], k: int) -> dict[str, Any]:
    """pass@1 and pass@k over `task_ids`, each task's samples k < `k` only (extra samples from bigger runs ignored)."""
    per_task: dict[str, dict[int, bool]] = {t: {} for t in task_ids}  # k -> passed: a pair counts once
    for row in rows:
        if row["task_id"] in per_task and 0 <= row["k"] < k:
            per_task[row["task_id"]][row["k"]] = bool(row.get("passed"))
    complete = {t: list(s.values()) for t, s in per_task.items() if len(s) == k}
    out: dict[str, Any] = {"tasks": len(task_ids), "complete_tasks": len(complete), "samples": sum(len(s) for s in per_task.values())}
    if complete:
        for kk in sorted({1, k}):
            out[f"pass@{kk}"] = sum(pass_at_k(k, sum(s), kk) for s in complete.values()) / len(complete)
    return out
