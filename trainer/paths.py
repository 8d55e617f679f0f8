"""Where the trainer's shipped files live, defined once: everything that defaults to the pretrained tiny
checkpoint (the run config, `Policy.from_checkpoint`, the completion server, `make pretrain-tiny`) reads
it from here. Torch-free, so validating a config does not import the model."""

from __future__ import annotations

from pathlib import Path

TRAINER_DIR = Path(__file__).resolve().parent
TINY_CHECKPOINT = TRAINER_DIR / "checkpoints" / "tiny"
