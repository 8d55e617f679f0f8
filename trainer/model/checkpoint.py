"""Save and load the policy as safetensors + config.json (Hugging Face layout and names)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from envfarm.errors import EnvfarmError
from envfarm.trainer.model.config import PolicyConfig
from envfarm.trainer.model.policy_model import PolicyModel

WEIGHTS = "model.safetensors"


def save_checkpoint(model: PolicyModel, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write config.json and model.safetensors atomically (tmp file + rename) so a crash leaves the old one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # tied to model.embed_tokens.weight; safetensors refuses shared storage
        t = tensor.detach().contiguous()
        state[name] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    model.config.save_json(folder / "config.json")
    tmp.replace(folder / WEIGHTS)
    return folder


def load_checkpoint(folder: str | Path, dtype: torch.dtype = torch.float32) -> PolicyModel:
    folder = Path(folder)
    weights = folder / WEIGHTS
    if not weights.exists():
        raise EnvfarmError(f"no {WEIGHTS} in {folder}",
                           "run `make pretrain-tiny` or point at a folder written by save_checkpoint")
    config = PolicyConfig.from_json(folder)
    model = PolicyModel(config)
    state = load_file(str(weights))
    expected = {k for k in model.state_dict() if not (k == "lm_head.weight" and config.tie_word_embeddings)}
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing or unexpected:
        raise EnvfarmError(
            f"checkpoint {folder} does not match its config.json: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}", "re-export the checkpoint with save_checkpoint")
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    return model.to(dtype).eval()
