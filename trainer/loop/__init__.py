"""The agentic RL loop on Ray, one role per module: `family` (what a task family must provide, and the
registry of families), `worker` (a Ray actor lending a family the policy, a sandbox and the stream),
`dispatcher` (keeps the workers busy, restarts dead ones, parks partial groups), `learner` (GRPO / MOPD
with routing replay), `run` (the Trainer: generate, update, publish weights, checkpoint, commit, evaluate).
The families themselves live in trainer/families/."""
