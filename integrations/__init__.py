"""Adapters that expose envfarm's tasks, sandboxes and verifier to the stacks labs already run.

- `openenv`: an OpenEnv server (`envfarm serve openenv`), built on openenv-core's own server helpers, and a
  typed client on openenv-core's `EnvClient`.
- `miniswe`: mini-swe-agent's environment protocol on an envfarm sandbox, and a runner that grades its patch.

Each needs its optional extra (`pip install 'envfarm[openenv]'`, `'envfarm[mini-swe-agent]'`); the
core never imports this package, and importing an adapter without its extra is one `EnvfarmError` naming the
install line. The adapters drive the agent scaffold (`envfarm.agent`, its `ToolSession`) and never the trainer.
"""
