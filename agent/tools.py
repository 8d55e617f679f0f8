"""The three tools, executed only through `Sandbox.exec`, so they work the same on Docker, Podman
and Kubernetes pods. str_replace ships a few lines of Python to the sandbox with its arguments
base64-encoded: no quoting problems, and the match check happens where the file lives."""

from __future__ import annotations

import base64
import json
import shlex

from envfarm.errors import SandboxError
from envfarm.sandbox.protocol import Sandbox
from envfarm.agent.protocol import ToolCall

_STR_REPLACE = r"""
import base64, json, os, sys
a = json.loads(base64.b64decode(sys.argv[1]))
p = a["path"] if os.path.isabs(a["path"]) else os.path.join(a["workdir"], a["path"])
try:
    text = open(p, encoding="utf-8").read()
except FileNotFoundError:
    print(f"error: {a['path']} does not exist"); sys.exit(3)
except (IsADirectoryError, UnicodeDecodeError) as e:
    print(f"error: cannot edit {a['path']}: {type(e).__name__}"); sys.exit(3)
n = text.count(a["old"]) if a["old"] else 0
if n != 1:
    what = "old is empty" if not a["old"] else ("old was not found" if n == 0 else f"old occurs {n} times")
    print(f"error: {what} in {a['path']}; give an exact, unique snippet (include surrounding lines)"); sys.exit(4)
open(p, "w", encoding="utf-8").write(text.replace(a["old"], a["new"], 1))
print(f"edited {a['path']}")
"""


def run_tool(sandbox: Sandbox, call: ToolCall, workdir: str, timeout: float, output_limit: int) -> tuple[str, bool]:
    """Carry out a tool call; returns (observation, error?). Infrastructure failures raise SandboxError."""
    if call.name == "bash":
        r = sandbox.exec(call.arguments["command"], timeout=timeout, workdir=workdir, output_limit=output_limit)
        note = f"[timed out after {timeout:.0f}s]\n" if r.timed_out else ""
        return f"{note}{r.output}[exit code {r.exit_code}]", r.exit_code != 0
    if call.name == "str_replace":
        payload = base64.b64encode(json.dumps({**call.arguments, "workdir": workdir}).encode()).decode()
        r = sandbox.exec(f"python3 -c {shlex.quote(_STR_REPLACE)} {payload}", timeout=timeout, workdir=workdir,
                         output_limit=output_limit)
        if r.exit_code not in (0, 3, 4):
            raise SandboxError(f"str_replace helper failed in the sandbox (exit {r.exit_code}): {r.output[-300:]}",
                               "check that the image has python3")
        return r.output.strip(), r.exit_code != 0
    if call.name == "finish":
        return "submitted", False
    raise ValueError(call.name)  # parse_tool_call only admits known tools


def collect_patch(sandbox: Sandbox, workdir: str, timeout: float = 60) -> str:
    """The agent's change as a unified diff against HEAD, new files included (intent-to-add)."""
    r = sandbox.exec("git add -A -N . && git -c core.quotepath=off diff --no-color --no-ext-diff HEAD",
                     timeout=timeout, workdir=workdir)
    if r.exit_code != 0:
        raise SandboxError(f"cannot diff the repository at {workdir}: {r.output[-300:]}", "the task's workdir must be a git repository")
    return r.output
