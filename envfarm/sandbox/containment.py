"""Shell that runs one exec so that nothing it started outlives it, and the sweep that makes sure.

Issue #13 measured the old scheme failing: it relied on `timeout` killing a process group (a forkbomb's
top shell exits at once, and `setsid`/`nohup`/double forks leave the group) and on a marker in the
environment (`env -i` drops it), and its fallback killer forked `grep` inside a full pids cgroup.

Now every exec ends with a *sweep* of the sandbox user's processes, and the sweep never forks:
- `kill -s KILL -- -1` (a dash builtin) signals every process the user may signal except pid 1 and the
  caller, in one pass the kernel makes under the task-list lock: a fork racing it fails or its child
  gets the signal too, so one call ends a forkbomb. Measured here on Podman 4.3 + runc: `runc exec` still
  attaches a process to a pids cgroup that is at its limit (the limit applies to fork, not to attach),
  so the engine can always start the sweep; it took 0.15 s with a 64-pid forkbomb running.
- The container's main process and its init run as uid 65534, so `kill -1` as the agent (uid 1000) or
  as root (no CAP_KILL) cannot reach them, and the agent cannot write to pid 1's stdout either (the
  engine's container log, 400 MB/s before).
- Processes that must survive (a background server the scaffold asked for with `detach=True`) are
  kept by *session*: the launcher makes a new session and reports its id and the leader's start time.
  A session cannot be joined from outside, so no agent process can move into a kept one. When kept
  sessions exist the sweep stops everything (`kill -STOP -1`, atomic as above), kills each process
  whose session is not kept, and continues the rest. A kept session whose leader is gone (or whose pid
  now belongs to a different process, by start time) is no longer kept.

Every step is a dash builtin (`read`, `kill`, `case`, `set`, `[`), so it works with no free pid.
"""

from __future__ import annotations

import shlex
from typing import Iterable

# "sid:starttime" pairs in, the still-valid ones echoed out as "kept: ..." for the caller to keep.
_VALIDATE = r"""
keep=" "; valid=""
for pair in $KEEP_PAIRS; do
  sid=${pair%%:*}; want=${pair#*:}; line=
  { read -r line; } 2>/dev/null < /proc/$sid/stat || continue
  rest=${line##*) }
  set -- $rest
  shift 19
  [ "$1" = "$want" ] || continue
  keep="$keep$sid "; valid="$valid $pair"
done
"""

# Repeated until a pass finds nothing to kill (at most 10): measured here, 1 bomb in 6 still held the exec's
# output pipe after one pass, and the exec then ran to the host-side backstop (24.7 s for timeout=10).
_WALK = r"""
round=0
while [ $round -lt 10 ]; do
  round=$((round + 1)); killed=0
  kill -s STOP -- -1 2>/dev/null
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$$" ] && continue
    s=
    { while read -r k v _; do if [ "$k" = NSsid: ]; then s=$v; break; fi; done; } 2>/dev/null < $d/status
    [ -n "$s" ] || continue
    case "$keep" in *" $s "*) continue;; esac
    kill -s KILL $p 2>/dev/null && killed=$((killed + 1))
  done
  kill -s CONT -- -1 2>/dev/null
  [ $killed -eq 0 ] && break
done
"""


def _keep_pairs(kept: Iterable[tuple[int, int]]) -> str:
    return " ".join(f"{int(sid)}:{int(start)}" for sid, start in kept)


def sweep_script(kept: Iterable[tuple[int, int]], spare_own_session: bool = False, report: bool = True) -> str:
    """Kill every process of the calling uid except pid 1, the caller, and kept sessions.

    With `report` it prints `kept:` and the pairs still valid. With `spare_own_session` the caller's own
    session is kept too (the exec wrapper sweeping while its output pipeline still runs).
    """
    lines = [f"KEEP_PAIRS={shlex.quote(_keep_pairs(kept))}", _VALIDATE]
    if spare_own_session:
        lines.append(
            '{ while read -r k v _; do if [ "$k" = NSsid: ]; then keep="$keep$v "; break; fi; done; }'
            " 2>/dev/null < /proc/self/status"
        )
    lines += ['if [ "$keep" = " " ]; then kill -s KILL -- -1 2>/dev/null; else', _WALK, "fi"]
    if report:
        lines.append('echo "kept:$valid"')
    return "\n".join(lines)


def exec_script(cmd: str, timeout: float, capture: int, exec_id: str, kept: Iterable[tuple[int, int]]) -> str:
    """The shell one exec runs: the command in a session of its own under `timeout`, output capped in the
    container (`head`, then `cat > /dev/null` drains the rest, so an endless writer costs the caller
    nothing), and, as soon as the command's top process ends, a sweep of everything else it started, so
    orphans holding the output pipe cannot keep the exec open. The exit code travels through a file
    because the pipeline's own status is `head`'s; reading it back is the builtin `read`, not a fork.
    """
    rc_file = f"/tmp/.envfarm-rc-{exec_id}"
    sweep = sweep_script(kept, spare_own_session=True, report=False)
    return (
        f"{{ timeout -k 1 {timeout:.3f} setsid -w sh -c {shlex.quote(cmd)} < /dev/null; echo $? > {rc_file}\n"
        f"{sweep}\n"
        f"}} 2>&1 | {{ head -c {capture}; cat > /dev/null; }}\n"
        f"rc=255; {{ read -r rc; }} 2>/dev/null < {rc_file}\n"
        "exit $rc\n"
    )


def detach_script(cmd: str, token: str) -> str:
    """Start `cmd` in a new session with no stdio and print `sid:starttime` of its leader, then return.

    The leader reports through a file the launcher waits for: an exec's output stream closes when its own
    process exits, so a line printed by the forked leader could be lost (seen in 1 of 3 runs)."""
    leader = (
        "{ read -r line; } < /proc/$$/stat; rest=${line##*) }; set -- $rest; shift 19; echo \"$$:$1\"; "
        "exec sh -c \"$0\" < /dev/null > /dev/null 2>&1"
    )
    report = f"/tmp/.envfarm-detach-{token}"
    return (
        f"setsid -f sh -c {shlex.quote(leader)} {shlex.quote(cmd)} > {report} 2>&1 < /dev/null; "
        f"i=0; while [ ! -s {report} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done; "
        f"cat {report}; rm -f {report}"
    )


def parse_kept(output: str) -> list[tuple[int, int]]:
    """The `kept:` line a sweep prints, as (sid, starttime) pairs."""
    for line in output.splitlines():
        if line.startswith("kept:"):
            return [(int(a), int(b)) for a, b in (pair.split(":") for pair in line[5:].split())]
    return []
