"""The agentic RL loop on Ray: rollout workers (policy + sandboxes) publish graded rollouts to the reward
stream; the trainer consumes complete groups, applies GRPO or MOPD with routing replay, checkpoints and
resumes."""
