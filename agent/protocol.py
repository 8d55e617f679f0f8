"""The text protocol between the policy and the scaffold.

Chat turns are delimited by `<|system|>`, `<|user|>`, `<|assistant|>`, `<|tool|>` markers so a byte-level
model sees one flat string. The policy calls a tool by emitting one JSON object between `<tool_call>` and
`</tool_call>` (the Hermes/Qwen convention, so an instruction-tuned model needs no new habits):

    <tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>

Anything malformed becomes a `ToolCallError` whose message is shown to the policy as the observation:
a bad call costs a step, it never crashes the episode.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
STOP = CALL_CLOSE  # generation stops after a complete call

TOOLS: dict[str, dict[str, type]] = {
    "bash": {"command": str},
    "str_replace": {"path": str, "old": str, "new": str},
    "finish": {},
}

SYSTEM_PROMPT = (
    "You fix bugs in the repository at {workdir}. Call one tool per turn as "
    '<tool_call>{{"name": ..., "arguments": {{...}}}}</tool_call>. Tools: '
    "bash(command) runs a shell command; "
    "str_replace(path, old, new) replaces the unique exact occurrence of old in path with new; "
    "finish() submits your changes."
)


class ToolCallError(ValueError):
    """The policy's text is not a valid tool call; the message tells the policy how to fix it."""


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        return CALL_OPEN + json.dumps({"name": self.name, "arguments": self.arguments}) + CALL_CLOSE


_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.S)


def parse_tool_call(text: str) -> ToolCall:
    """The first complete tool call in `text`, validated against the tool table."""
    match = _CALL_RE.search(text)
    if match is None:
        raise ToolCallError(f"no tool call found: wrap one JSON object in {CALL_OPEN}...{CALL_CLOSE}")
    try:
        raw = json.loads(match.group(1))
    except json.JSONDecodeError as exc:
        raise ToolCallError(f"tool call is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ToolCallError('tool call must be an object with a string "name"')
    return validate_call(raw["name"], raw.get("arguments", {}))


def validate_call(name: str, args: object) -> ToolCall:
    """A call by name and arguments checked against the tool table: the one check for text and native calls."""
    if name not in TOOLS:
        raise ToolCallError(f"unknown tool {name!r}: use one of {sorted(TOOLS)}")
    if not isinstance(args, dict):
        raise ToolCallError('"arguments" must be an object')
    args = dict(args)
    spec = TOOLS[name]
    missing = [k for k in spec if k not in args]
    extra = [k for k in args if k not in spec]
    if missing or extra:
        raise ToolCallError(f"{name} takes arguments {sorted(spec)}; missing {missing}, unexpected {extra}")
    wrong = [k for k, t in spec.items() if not isinstance(args[k], t)]
    if wrong:
        raise ToolCallError(f"{name}: arguments {wrong} must be strings")
    return ToolCall(name, args)


def call_from(name: str, arguments: object) -> ToolCall:
    """A function call as a model or a client sent it: arguments a dict, or their JSON text (OpenAI's
    `function.arguments`); empty or None means none. Checked with `validate_call`."""
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments.strip() or "{}")
        except json.JSONDecodeError as exc:
            raise ToolCallError(f"arguments of {name!r} are not valid JSON ({exc.msg} at char {exc.pos})") from None
    return validate_call(name, arguments)


def render_prompt(messages: list[dict[str, str]]) -> str:
    """Flatten chat messages into the policy's input, ending with the assistant marker."""
    parts = [f"<|{m['role']}|>\n{m['content']}\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"


_DESCRIPTIONS = {
    "bash": ("Run a shell command in the repository and return its output and exit code.",
             {"command": "the shell command"}),
    "str_replace": ("Replace the unique exact occurrence of `old` in the file at `path` with `new`.",
                    {"path": "file path, absolute or relative to the repository", "old": "exact text to replace (must occur once)",
                     "new": "replacement text"}),
    "finish": ("Submit your changes and end the episode.", {}),
}


def tool_schemas() -> list[dict[str, Any]]:
    """The tool table as OpenAI function-calling definitions (`tools=` of /v1/chat/completions)."""
    return [{"type": "function", "function": {
        "name": name, "description": _DESCRIPTIONS[name][0],
        "parameters": {"type": "object", "additionalProperties": False, "required": sorted(spec),
                       "properties": {k: {"type": "string", "description": _DESCRIPTIONS[name][1][k]} for k in spec}}}}
        for name, spec in TOOLS.items()]
