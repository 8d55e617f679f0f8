"""The trainer's side of the agent scaffold: `lm.LMAgentPolicy`, the in-process policy (the rollout engine's
tokens, log-probs and routing kept per turn) behind `envfarm.agent`'s episode loop.

The scaffold itself (tools, tool-call protocol, episodes, chat policies, trajectories, `envfarm rollout`) is
the package `envfarm.agent` (folder `agent/`), so integrations and external agents use it without importing
the trainer (DESIGN.md: nothing imports `trainer` except the CLI)."""
