"""Optional, off by default: a model repairs a recipe the rule-based repair loop gave up on.

As RepoLaunch and SWE-rebench do, a model reads the failed build (the recipe and the log's explanation)
and proposes shell steps through the agent scaffold's tool protocol (`envfarm.agent`: `bash` calls,
`finish`; any policy with `act` or with `chat`, such as `OpenAIChatPolicy` against an OpenAI-compatible
server). The steps are never run on the host or in a sandbox with network: envfarm appends them to the
recipe and builds the env image for real (network only inside the build, as for every env build), and the
build's outcome is the model's next observation. A bounded number of rounds; the steps of the round that
built are kept in the recipe (`install`, and `notes` as `agent: <step>`), so the env rebuilds without the
model. Enable it with `BuildOptions(agent_policy=<factory>)`; `envfarm mine` leaves it off.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from envfarm.agent.protocol import ToolCallError, call_from, parse_tool_call, render_prompt
from envfarm.tasks.envsetup.base import Strategy
from envfarm.tasks.envsetup.failures import excerpt

SYSTEM = (
    "You repair the install recipe of a Python repository's test environment. The recipe's shell steps run as root in "
    "/testbed (the repository) during an image build with network access; the venv is /opt/venv (install with "
    "`uv pip install --python /opt/venv/bin/python ...`). The build must install the project so that its tests collect "
    "and run. Propose extra steps with bash(command): each call adds one step, run after the recipe's own steps. "
    'Call finish() when your steps are complete; they are then built and you see the result. Call one tool per turn as '
    '<tool_call>{"name": ..., "arguments": {...}}</tool_call>.'
)


@dataclass
class AgentRepair:
    """What the stage did: the strategy that built (or None), and every round's steps and outcome."""

    strategy: Strategy | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0


def _next_call(policy: Any, messages: list[dict[str, Any]], max_tokens: int) -> tuple[Any, str]:
    """(parsed call or ToolCallError, assistant text) from a text (`act`) or chat (`chat`) policy."""
    if hasattr(policy, "chat"):
        turn = policy.chat(messages, max_tokens)
        text = str(turn.message.get("content") or "")
        messages.append(turn.message)
        if turn.calls:
            try:
                return call_from(turn.calls[0].name, turn.calls[0].arguments), text
            except ToolCallError as exc:
                return exc, text
    else:
        text, _used = policy.act(render_prompt(messages))
        messages.append({"role": "assistant", "content": text})
    try:
        return parse_tool_call(text), text
    except ToolCallError as exc:
        return exc, text


def agent_repair(policy: Any, strategy: Strategy, log: str, build: Callable[[Strategy], tuple[bool, str]],
                 rounds: int = 3, turns_per_round: int = 8, max_tokens: int = 2048) -> AgentRepair:
    """Up to `rounds` proposals of extra steps, each built with `build` -> (built?, log)."""
    out = AgentRepair()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Recipe steps:\n" + "\n".join(strategy.install) + f"\n\nThe build failed:\n{excerpt(log, 30)}"},
    ]
    steps: list[str] = []
    for _round in range(rounds):
        proposed: list[str] = []
        for _turn in range(turns_per_round):
            call, _text = _next_call(policy, messages, max_tokens)
            out.turns += 1
            if isinstance(call, ToolCallError):
                messages.append({"role": "user", "content": f"error: {call}"})
                continue
            if call.name == "finish":
                break
            if call.name != "bash":
                messages.append({"role": "user", "content": "only bash(command) steps and finish() are accepted here"})
                continue
            proposed.append(call.arguments["command"])
            messages.append({"role": "user", "content": "queued as a recipe step; it runs when you call finish()"})
        if not proposed:
            out.rounds.append({"steps": [], "built": False, "why": "no step proposed"})
            break
        steps += proposed
        candidate = replace(strategy, name=f"{strategy.name.split('+agent')[0]}+agent{len(out.rounds) + 1}",
                            install=(*strategy.install, *steps), notes=(*strategy.notes, *(f"agent: {s}" for s in steps)), plan=None)
        built, build_log = build(candidate)
        out.rounds.append({"steps": list(proposed), "built": built, "log": "" if built else excerpt(build_log)})
        if built:
            out.strategy = candidate
            break
        messages.append({"role": "user", "content": f"The build with your steps failed:\n{excerpt(build_log, 30)}\nPropose more steps, then finish()."})
    return out
