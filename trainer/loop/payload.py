"""A rollout as JSON (for the reward event and the ledger): tokens, log-probs and the routed experts."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

from envfarm.trainer.rollout.result import Completion


def encode(c: Completion) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": c.prompt, "tokens": c.tokens, "logprobs": c.logprobs, "finish": c.finish_reason}
    if c.routing is not None:
        r = c.routing.numpy().astype(np.int16)
        out["routing"] = {"shape": list(r.shape), "b64": base64.b64encode(r.tobytes()).decode()}
    return out


def decode(p: dict[str, Any]) -> Completion:
    routing = None
    if p.get("routing"):
        arr = np.frombuffer(base64.b64decode(p["routing"]["b64"]), dtype=np.int16).reshape(p["routing"]["shape"])
        routing = torch.from_numpy(arr.astype(np.int32))
    return Completion(list(p["prompt"]), list(p["tokens"]), list(p["logprobs"]), routing, p.get("finish", "stop"))
