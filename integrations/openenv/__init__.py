"""envfarm as an OpenEnv environment: `server` (openenv-core's `create_app` around `EnvfarmEnvironment`),
`client` (a typed `EnvClient`), `models` (the action, observation and state types). Needs
`pip install 'envfarm[openenv]'`; importing this package checks for it with one clear error."""

from envfarm.integrations.extras import require

require("openenv")
