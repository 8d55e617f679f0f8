"""Grade many completions with one `exec` in a sandbox: each program runs in its own `python3 -I`
subprocess with a time limit, inside a container with no network and capped resources.

One exec per batch (not per completion) because a container exec costs ~0.1 s on this machine, which
would dominate a step of 32 two-millisecond programs; isolation between programs is a subprocess each.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from envfarm.errors import SandboxError
from envfarm.sandbox.protocol import Sandbox

_RUNNER = r"""
import json, subprocess, sys, time
items = json.load(open(sys.argv[1]))
out = []
for it in items:
    t = time.monotonic()
    try:  # the program goes in on stdin: a policy's output may hold bytes (NUL) no argv can carry
        r = subprocess.run([sys.executable, "-I", "-"], input=it["program"].encode("utf-8", "surrogateescape"),
                           capture_output=True, timeout=it["timeout"], cwd="/tmp")
        out.append({"exit": r.returncode, "err": r.stderr.decode(errors="replace")[-300:], "s": time.monotonic() - t})
    except subprocess.TimeoutExpired:
        out.append({"exit": 124, "err": "timeout", "s": time.monotonic() - t})
    except Exception as e:  # one odd program must not cost the batch its results
        out.append({"exit": 125, "err": f"grader: {type(e).__name__}: {e}", "s": time.monotonic() - t})
print("ENVFARM-RESULTS " + json.dumps(out))
"""


@dataclass
class FuncGrade:
    passed: bool
    exit_code: int
    error: str
    seconds: float


def grade_batch(sandbox: Sandbox, programs: list[str], per_program_timeout: float = 5.0,
                batch_timeout: float | None = None) -> list[FuncGrade]:
    """Run each program; pass = exit code 0. Raises SandboxError if the sandbox or the batch fails
    (the caller retries on a fresh sandbox or records the rollouts as failed)."""
    if not programs:
        return []
    tag = secrets.token_hex(6)
    runner, data = f"/tmp/envfarm-grade-{tag}.py", f"/tmp/envfarm-grade-{tag}.json"
    sandbox.write_file(runner, _RUNNER)
    sandbox.write_file(data, json.dumps([{"program": p, "timeout": per_program_timeout} for p in programs]))
    limit = batch_timeout or (per_program_timeout * len(programs) + 30)
    r = sandbox.exec(f"python3 {runner} {data}; rm -f {runner} {data}", timeout=limit, output_limit=1 << 22)
    if r.timed_out:
        raise SandboxError(f"grading {len(programs)} programs timed out after {limit:.0f}s", "raise sandbox.grade_timeout or lower the batch size")
    line = next((ln for ln in r.output.splitlines() if ln.startswith("ENVFARM-RESULTS ")), None)
    if line is None:
        raise SandboxError(f"the grader printed no results (exit {r.exit_code}): {r.output[-300:]}", "check that the image has python3")
    results = json.loads(line[len("ENVFARM-RESULTS "):])
    return [FuncGrade(x["exit"] == 0, x["exit"], x["err"], x["s"]) for x in results]
