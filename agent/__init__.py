"""The minimal agent scaffold of the reference: three tools (bash, str_replace, finish), all carried out
through shell commands on any `Sandbox` backend, a chat-style text protocol, per-episode limits and a
transcript per rollout.

Chat-completions models drive the same tools through `chat` (native tool calls, tool messages) and
`openai_chat.OpenAIChatPolicy` (any OpenAI-compatible server); `rollout_cli` is `envfarm rollout`, which
writes graded episodes with `trajectories`. Those are imported where used, so this package stays light.

The folder `agent/` installs as `envfarm.agent`: a package of its own so the integrations and external agents
use the scaffold without importing the trainer (DESIGN.md). The trainer's in-process policy behind the same
episode loop is `envfarm.trainer.agent.lm.LMAgentPolicy`."""

from envfarm.agent.episode import AgentPolicy, EpisodeLimits, Transcript, run_episode
from envfarm.agent.protocol import ToolCall, ToolCallError, parse_tool_call, render_prompt
from envfarm.agent.scripted import ScriptedPolicy

__all__ = ["AgentPolicy", "EpisodeLimits", "Transcript", "run_episode", "ToolCall", "ToolCallError",
           "parse_tool_call", "render_prompt", "ScriptedPolicy"]
