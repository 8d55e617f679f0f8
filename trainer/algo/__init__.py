"""RL algorithms, one file each (cleanrl style): GRPO group advantages + PPO clipping, MOPD, routing replay batches."""
