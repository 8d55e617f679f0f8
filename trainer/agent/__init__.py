"""The minimal agent scaffold of the reference: three tools (bash, str_replace, finish), all carried out
through shell commands on any `Sandbox` backend, a chat-style text protocol, per-episode limits and a
transcript per rollout.

Chat-completions models drive the same tools through `chat` (native tool calls, tool messages) and
`openai_chat.OpenAIChatPolicy` (any OpenAI-compatible server); `rollout_cli` is `envfarm rollout`, which
writes graded episodes with `trajectories`. Those are imported where used, so this package stays light."""

from envfarm.trainer.agent.episode import AgentPolicy, EpisodeLimits, Transcript, run_episode
from envfarm.trainer.agent.protocol import ToolCall, ToolCallError, parse_tool_call, render_prompt
from envfarm.trainer.agent.scripted import ScriptedPolicy

__all__ = ["AgentPolicy", "EpisodeLimits", "Transcript", "run_episode", "ToolCall", "ToolCallError",
           "parse_tool_call", "render_prompt", "ScriptedPolicy"]
