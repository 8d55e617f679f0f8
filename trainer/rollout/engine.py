"""In-process batched generation with a KV cache, optional MTP self-speculative drafting,
per-token log-probs and the routed experts of every token (for routing replay in training).

One loop serves both modes: each step the main model verifies [x_n, d_1..d_K] in a single forward
pass (K = 0 without drafting), the speculative rule accepts a prefix, and every cache crops the
rejected tail. Rows of a batch advance independently (positions are per row).

MTP head k at position i reads (h^{k-1}_i, x_{i+k}); its cache entry is final only once x_{i+k} is
committed, i.e. for i <= n - k where x_n is the newest committed token. So each step all heads crop
back to s = n_prev - K + 1 and recompute from there: at most 2K positions per head per step.
"""

from __future__ import annotations

import torch

from envfarm.errors import EnvfarmError
from trainer.model.attention import AttentionMasks
from trainer.model.logprobs import gather_logprobs
from trainer.model.policy_model import PolicyModel
from trainer.rollout.result import Completion, RolloutBatch
from trainer.rollout.sampling import SamplingParams, sample, warp
from trainer.rollout.speculative import accept_drafts, accept_greedy


class RolloutEngine:
    def __init__(self, model: PolicyModel, pad_id: int | None = None) -> None:
        self.model = model.eval()
        self.pad_id = model.config.pad_token_id if pad_id is None else pad_id

    def _check(self, prompts: list[list[int]], sampling: SamplingParams, draft: str | None,
               num_draft: int | None) -> int:
        if draft not in (None, "mtp"):
            raise EnvfarmError(f"unknown draft mode {draft!r}", "use draft='mtp' or draft=None")
        k = 0 if draft is None else (self.model.num_mtp if num_draft is None else num_draft)
        if not 0 <= k <= self.model.num_mtp:
            raise EnvfarmError(f"num_draft={k} but the model has {self.model.num_mtp} MTP heads",
                               f"use num_draft between 1 and {self.model.num_mtp}")
        if draft == "mtp" and k == 0:
            raise EnvfarmError("draft='mtp' needs at least one MTP head", "load a checkpoint with MTP heads or use draft=None")
        if not prompts or any(len(p) == 0 for p in prompts):
            raise EnvfarmError("empty prompt in the batch", "give every prompt at least one token (e.g. BOS)")
        vocab = self.model.config.vocab_size
        for i, p in enumerate(prompts):
            if min(p) < 0 or max(p) >= vocab:
                raise EnvfarmError(f"prompt {i} holds token ids outside [0, {vocab})", "encode prompts with the model's tokenizer")
        return k

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: SamplingParams, draft: str | None = None,
                 num_draft: int | None = None) -> RolloutBatch:
        k = self._check(prompts, sampling, draft, num_draft)
        model = self.model
        greedy = sampling.greedy
        gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        b = len(prompts)
        rows = torch.arange(b)
        lengths = torch.tensor([len(p) for p in prompts])
        t_max = int(lengths.max())
        capacity = t_max + sampling.max_new_tokens + k + 2
        seq = torch.full((b, capacity), self.pad_id, dtype=torch.long)  # committed tokens (+ drafts past n)
        for i, p in enumerate(prompts):
            seq[i, :len(p)] = torch.tensor(p)
        cache = model.new_cache(b, slack=k + 1)

        # Prefill the prompts (right-padded; padding has position -1 and touches no cache).
        pos = torch.arange(t_max).expand(b, t_max)
        pos = torch.where(pos < lengths[:, None], pos, torch.full_like(pos, -1))
        out = model(seq[:, :t_max], positions=pos, cache=cache)
        routing_chunks = [[out.routing[i, :lengths[i]]] if out.routing is not None else [] for i in range(b)]
        last_logits = out.logits[rows, lengths - 1]
        x_new = last_logits.argmax(-1) if greedy else sample(warp(last_logits, sampling), gen)
        gen_tokens = [[int(x_new[i])] for i in range(b)]
        gen_logps = [[float(v)] for v in gather_logprobs(last_logits, x_new)]
        n = lengths.clone()  # the main cache holds positions < n; x_new sits at position n
        seq[rows, n] = x_new
        ring = 2 * k + 2  # main hidden states the MTP heads may still need
        hidden_ring = torch.zeros(b, ring, model.config.hidden_size, dtype=out.hidden.dtype)
        prefill_hidden = out.hidden if k else None
        if k:
            for i in range(b):
                tail = torch.arange(max(0, int(lengths[i]) - ring), int(lengths[i]))
                hidden_ring[i, tail % ring] = out.hidden[i, tail]
        head_start = torch.zeros(b, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        finish = ["length"] * b
        for i in range(b):
            done[i], finish[i] = self._stopped(gen_tokens[i], gen_logps[i], sampling)
        steps = accepted_total = 0
        accept_lengths: list[int] = []
        slots = torch.arange(k + 1)

        while not bool(done.all()):
            active = ~done
            drafts = torch.zeros(b, k, dtype=torch.long)
            q = None if greedy else torch.zeros(b, k, model.config.vocab_size)
            if k:
                span = torch.where(active, n - head_start, torch.zeros_like(n))
                width = int(span.max())
                j = torch.arange(width)
                hpos = head_start[:, None] + j
                hpos = torch.where(j < span[:, None], hpos, torch.full_like(hpos, -1))
                if prefill_hidden is not None:
                    prev = prefill_hidden[:, :width].clone()
                    prefill_hidden = None
                else:
                    prev = hidden_ring[rows[:, None], hpos.clamp(min=0) % ring]
                rope, masks = model.mtp_rope(hpos, prev.dtype), AttentionMasks()
                last = (span - 1).clamp(min=0)
                # Drafts go into seq as they come: head h reads tokens up to n + h. Rows that are done
                # get writes past their end too, which nothing reads.
                draft_at = (n[:, None] + 1 + slots[:k]).clamp(max=capacity - 1)
                for head in range(k):
                    cache.crop_mtp(head, head_start)
                    toks = seq.gather(1, (hpos + head + 1).clamp(min=0, max=capacity - 1))
                    prev, logits = model.mtp_step(head, prev, toks, hpos, cache, rope, masks)
                    if greedy:
                        d = logits[rows, last].argmax(-1)
                    else:
                        q[:, head] = warp(logits[rows, last], sampling)
                        d = sample(q[:, head], gen)
                    drafts[:, head] = d
                    seq[rows, draft_at[:, head]] = d
                head_start = torch.where(active, (n - k + 1).clamp(min=0), head_start)

            verify = torch.cat([x_new[:, None], drafts], dim=1)
            vpos = torch.where(active[:, None], n[:, None] + slots, -1)
            out = model(verify, positions=vpos, cache=cache)
            if greedy:
                accepted, nxt = accept_greedy(out.logits.argmax(-1), drafts)
            else:
                accepted, nxt = accept_drafts(warp(out.logits, sampling), q, drafts, gen)
            # The tokens committed at slots 0..a: the accepted drafts, then the target's own token.
            chosen = torch.cat([drafts, nxt[:, None]], dim=1).scatter_(1, accepted[:, None], nxt[:, None])
            chosen_logps = gather_logprobs(out.logits, chosen)  # [B, K+1]
            steps += 1
            if k:  # keep the main hidden states for the MTP heads; rejected slots are never read
                hidden_ring[rows[:, None], vpos % ring] = out.hidden
            acc_l, chosen_l, logps_l = accepted.tolist(), chosen.tolist(), chosen_logps.tolist()
            for i in torch.nonzero(active).flatten().tolist():
                a = acc_l[i]
                accept_lengths.append(a + 1)
                accepted_total += a
                if out.routing is not None:
                    routing_chunks[i].append(out.routing[i, :a + 1])
                gen_tokens[i].extend(chosen_l[i][:a + 1])
                gen_logps[i].extend(logps_l[i][:a + 1])
                done[i], finish[i] = self._stopped(gen_tokens[i], gen_logps[i], sampling, a + 1)
            n = torch.where(active, n + accepted + 1, n)
            if k and any(acc_l[i] < k for i in range(b) if not done[i]):
                cache.crop(n)  # forget rejected drafts (rows that just finished are never read again)
            x_new = torch.where(active, nxt, x_new)
            seq[rows, n.clamp(max=capacity - 1)] = x_new  # done rows rewrite the token already there

        completions = []
        n_moe, top_k = model.n_moe_layers, model.config.num_experts_per_tok
        for i, prompt in enumerate(prompts):
            total = len(prompt) + len(gen_tokens[i])
            routing = None
            if routing_chunks[i]:
                fed = torch.cat(routing_chunks[i])[:total]
                routing = torch.full((total, n_moe, top_k), -1, dtype=torch.int32)
                routing[:len(fed)] = fed
            completions.append(Completion(list(prompt), gen_tokens[i], gen_logps[i], routing, finish[i]))
        stats = {"steps": steps, "draft_heads": k,
                 "mean_acceptance_length": sum(accept_lengths) / max(1, len(accept_lengths)),
                 "accepted_drafts": accepted_total, "kv_cache_bytes": cache.nbytes()}
        return RolloutBatch(completions, stats)

    @staticmethod
    def _stopped(tokens: list[int], logps: list[float], sampling: SamplingParams, new: int = 1) -> tuple[bool, str]:
        """Truncate in place after the first stop (token or sequence) or at max_new_tokens."""
        first_new = len(tokens) - new
        stops = sampling.stop_sequences()
        for end in range(max(0, first_new), len(tokens)):
            hit = tokens[end] in sampling.stop_token_ids or any(
                end + 1 >= len(s) and tokens[end + 1 - len(s):end + 1] == s for s in stops)
            if hit or end + 1 >= sampling.max_new_tokens:
                del tokens[end + 1:], logps[end + 1:]
                return True, "stop" if hit else "length"
        return False, "length"
