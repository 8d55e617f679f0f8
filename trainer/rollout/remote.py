"""Rollouts from an OpenAI-compatible server (SGLang, vLLM) with the in-process engine's return type.

Prompts go as token ids and tokens come back as ids (`return_tokens_as_token_ids`, a vLLM extension;
otherwise each returned token string is re-encoded with the byte tokenizer). Routed experts are read
when the server returns them (`routed_experts` per choice); otherwise `routing` is None and the
trainer routes freshly. Speculative decoding is the server's business (e.g. SGLang's
`--speculative-algorithm EAGLE --enable-mtp`), so `draft` is only forwarded as a hint.
"""

from __future__ import annotations

import httpx
import torch

from envfarm.errors import EnvfarmError
from envfarm.trainer.rollout.result import Completion, RolloutBatch
from envfarm.trainer.rollout.sampling import SamplingParams
from envfarm.trainer.tokenizer import ByteTokenizer


class RemoteRolloutEngine:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 600.0,
                 client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout, headers=headers)

    def generate(self, prompts: list[list[int]], sampling: SamplingParams, draft: str | None = None,
                 num_draft: int | None = None) -> RolloutBatch:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise EnvfarmError("empty prompt in the batch", "give every prompt at least one token (e.g. BOS)")
        body = {"model": self.model, "prompt": [list(p) for p in prompts], "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "logprobs": 1,
                "return_tokens_as_token_ids": True, "return_routed_experts": True,
                "stop": [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in sampling.stop],
                "stop_token_ids": sampling.stop_token_ids}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if draft:
            body["speculative"] = draft
        url = f"{self.base_url}/completions"
        try:
            response = self.client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise EnvfarmError(f"cannot reach the rollout server at {url} ({exc.__class__.__name__})",
                               "start SGLang/vLLM there or fix rollout.base_url") from exc
        if response.status_code != 200:
            raise EnvfarmError(f"rollout server answered {response.status_code}: {response.text[:200]}",
                               "check the model name and request fields the server accepts")
        choices = sorted(response.json().get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise EnvfarmError(f"rollout server returned {len(choices)} choices for {len(prompts)} prompts",
                               "use a server that accepts a list of token-id prompts (vLLM, SGLang)")
        return RolloutBatch([self._completion(p, c) for p, c in zip(prompts, choices)], {"backend": "remote"})

    @staticmethod
    def _completion(prompt: list[int], choice: dict) -> Completion:
        lp = choice.get("logprobs") or {}
        tokens: list[int] = []
        for t in lp.get("tokens") or []:
            tokens.extend([int(t.split(":", 1)[1])] if t.startswith("token_id:") else ByteTokenizer().encode(t, bos=False))
        if not tokens and choice.get("text"):
            tokens = ByteTokenizer().encode(choice["text"], bos=False)
        logprobs = [float(x) for x in lp.get("token_logprobs") or []]
        if len(logprobs) != len(tokens):
            raise EnvfarmError(f"server returned {len(tokens)} tokens but {len(logprobs)} log-probs",
                               "ask the server for logprobs=1 with token ids (vLLM: return_tokens_as_token_ids)")
        routing = None
        if choice.get("routed_experts") is not None:
            routing = torch.tensor(choice["routed_experts"], dtype=torch.int32)
        finish = "stop" if choice.get("finish_reason") == "stop" else "length"
        return Completion(list(prompt), tokens, logprobs, routing, finish)
