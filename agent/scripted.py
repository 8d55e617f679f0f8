"""A policy that follows a script: it proves the scaffold and the graders end to end without a model
(gold patch -> reward 1, empty patch -> reward 0), and doubles as a replay tool for transcripts."""

from __future__ import annotations

import base64

from envfarm.agent.protocol import ToolCall


class ScriptedPolicy:
    def __init__(self, calls: list[ToolCall | str]) -> None:
        self.turns = [c.render() if isinstance(c, ToolCall) else c for c in calls]
        self.step = 0

    @classmethod
    def applying(cls, patch: str) -> "ScriptedPolicy":
        """Look around, apply `patch` with git (shipped base64 through bash), check, finish."""
        calls: list[ToolCall | str] = [ToolCall("bash", {"command": "git status --short && ls"})]
        if patch.strip():
            b64 = base64.b64encode(patch.encode()).decode()
            calls.append(ToolCall("bash", {"command": f"echo {b64} | base64 -d > /tmp/agent.patch && git apply /tmp/agent.patch && git diff --stat"}))
        calls.append(ToolCall("finish"))
        return cls(calls)

    def act(self, prompt: str) -> tuple[str, int]:
        text = self.turns[min(self.step, len(self.turns) - 1)]
        self.step += 1
        return text, len(text.encode())
