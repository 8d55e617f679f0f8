"""In-process batched generation with a KV cache, optional MTP self-speculative drafting,
per-token log-probs and the routed experts of every token (for routing replay in training).

One loop serves both modes: each step the main model verifies [x_n, d_1..d_K] in a single forward
pass (K = 0 without drafting), the speculative rule accepts a prefix, and every cache crops the
rejected tail. Rows of a batch advance independently (positions are per row).

MTP head k at position i reads (h^{k-1}_i, x_{i+k}); its cache entry is final only once x_{i+k} is
committed, i.e. for i <= n - k where x_n is the newest committed token. So each step all heads crop
back to s = n_prev - K + 1 and recompute from there: at most 2K positions per head per step. Their
first pass, over the prompt, covers only the positions their sliding windows can still reach.

draft="adaptive" asks `DraftPolicy` (draft_policy.py) before each step how many heads (0..K) to use, from
measured step costs and acceptance. Heads a step leaves out fall behind; when next used they catch up from
their oldest non-final entry, through a ring of main hidden states wide enough for the windows they can
still reach (the deferred prompt pass is the same catch-up). The speculative rule is lossless for any
number of drafts, and the choice depends only on earlier steps, so the output distribution is unchanged;
a seeded sampled run repeats exactly only where the choices repeat (they follow measured times).
"""

from __future__ import annotations

import time

import torch

from envfarm.errors import EnvfarmError
from envfarm.trainer.model.attention import AttentionMasks
from envfarm.trainer.model.logprobs import gather_logprobs
from envfarm.trainer.model.policy_model import PolicyModel
from envfarm.trainer.rollout.draft_policy import DraftPolicy
from envfarm.trainer.rollout.result import Completion, RolloutBatch
from envfarm.trainer.rollout.sampling import SamplingParams, sample, warp
from envfarm.trainer.rollout.speculative import accept_drafts, accept_greedy


class RolloutEngine:
    def __init__(self, model: PolicyModel, pad_id: int | None = None, trim_prompt_pass: bool = True,
                 prefill_chunk: int = 512) -> None:
        if prefill_chunk < 1:
            raise EnvfarmError(f"prefill_chunk={prefill_chunk}", "use a prefill chunk of at least 1 token (default 512)")
        self.model = model.eval()
        self.pad_id = model.config.pad_token_id if pad_id is None else pad_id
        self.trim_prompt_pass = trim_prompt_pass  # False: the MTP heads' first pass covers the whole prompt
        self.prefill_chunk = prefill_chunk
        # draft="adaptive": chooses the heads per step from costs measured by this engine's own steps, kept
        # across generate calls (a worker's calls share shapes, so the first calls calibrate the rest).
        self.draft_policy = DraftPolicy(model.num_mtp)

    @staticmethod
    def _prompt_pass_skips(shortest: int, k: int, window: int) -> list[int]:
        """Leading prompt positions each MTP head may leave out of its first pass (its caches start
        empty). Head h's later queries start at n - k + 1 and see `window` keys back, so the last
        head needs its keys from about n - window - k on; every head before it must also cover the
        window its successor's inputs were attended over. Earlier positions are never read again, so
        a 16K-token prompt costs the heads a few hundred positions, not 16K each."""
        reach = window + k
        return [max(0, shortest - (k - h) * reach) for h in range(k)]

    @staticmethod
    def _catch_up(n: int, starts: list[int], k: int, reach: int) -> tuple[int, int]:
        """Adaptive mode, one row: where k heads start recomputing (their oldest non-final entry, but no
        earlier than their windows can still reach, as in the prompt pass) and how many positions that
        is beyond a steady step's 2k (0 when the heads kept up)."""
        begin = max(min(starts), n - k * reach, 0)
        return begin, max(0, n - begin - 2 * k)

    def _prefill(self, tokens: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor, cache
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The prompts through the main model in chunks of `prefill_chunk` tokens, so attention
        scores stay [chunk x context] rather than [prompt x prompt] (a 16K-token prompt would need
        gigabytes per layer at once). Returns the hidden states, the routing of every prompt token
        and the logits at each row's last prompt token."""
        rows = torch.arange(tokens.shape[0])
        last = lengths - 1
        last_logits = None
        hidden, routing = [], []
        for start in range(0, tokens.shape[1], self.prefill_chunk):
            end = start + self.prefill_chunk
            out = self.model(tokens[:, start:end], positions=positions[:, start:end], cache=cache)
            hidden.append(out.hidden)
            routing.append(out.routing)
            here = (last >= start) & (last < end)  # rows whose prompt ends in this chunk
            logits = out.logits[rows, (last - start).clamp(0, out.logits.shape[1] - 1)]
            last_logits = logits if last_logits is None else torch.where(here[:, None], logits, last_logits)
        routing_all = torch.cat(routing, dim=1) if routing[0] is not None else None
        return torch.cat(hidden, dim=1), routing_all, last_logits

    def _check(self, prompts: list[list[int]], sampling: SamplingParams, draft: str | None,
               num_draft: int | None) -> int:
        if draft not in (None, "mtp", "adaptive"):
            raise EnvfarmError(f"unknown draft mode {draft!r}", "use draft='mtp', 'adaptive' or None")
        k = 0 if draft is None else (self.model.num_mtp if num_draft is None else num_draft)
        if not 0 <= k <= self.model.num_mtp:
            raise EnvfarmError(f"num_draft={k} but the model has {self.model.num_mtp} MTP heads",
                               f"use num_draft between 1 and {self.model.num_mtp}")
        if draft is not None and k == 0:
            raise EnvfarmError(f"draft={draft!r} needs at least one MTP head", "load a checkpoint with MTP heads or use draft=None")
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
        adaptive = draft == "adaptive"  # k is then the most heads a step may use
        started = time.perf_counter()
        model = self.model
        greedy = sampling.greedy
        gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        b = len(prompts)
        rows = torch.arange(b)
        lengths = torch.tensor([len(p) for p in prompts])
        t_max = int(lengths.max())
        # Room for every committed token plus a finished row's overshoot (a + 1 <= K + 1 past the
        # limit) and the K drafts written after it, so no index below needs clamping.
        capacity = t_max + sampling.max_new_tokens + 2 * k + 2
        seq = torch.full((b, capacity), self.pad_id, dtype=torch.long)  # committed tokens (+ drafts past n)
        for i, p in enumerate(prompts):
            seq[i, :len(p)] = torch.tensor(p)
        cache = model.new_cache(b, slack=k + 1)

        # Prefill the prompts (right-padded; padding has position -1 and touches no cache).
        pos = torch.arange(t_max).expand(b, t_max)
        pos = torch.where(pos < lengths[:, None], pos, torch.full_like(pos, -1))
        hidden, routing_all, last_logits = self._prefill(seq[:, :t_max], pos, lengths, cache)
        routing_chunks = [[routing_all[i, :lengths[i]]] if routing_all is not None else [] for i in range(b)]
        x_new = last_logits.argmax(-1) if greedy else sample(warp(last_logits, sampling), gen)
        gen_tokens = [[int(x_new[i])] for i in range(b)]
        gen_logps = [[float(v)] for v in gather_logprobs(last_logits, x_new)]
        first_token_at = time.perf_counter()  # prefill + first token: identical with and without drafts
        n = lengths.clone()  # the main cache holds positions < n; x_new sits at position n
        seq[rows, n] = x_new
        reach = model.config.sliding_window + k  # see _prompt_pass_skips
        # Main hidden states the MTP heads may still need: a steady step recomputes at most 2K positions;
        # an adaptive catch-up (after plain steps, or the deferred prompt pass) at most K * reach.
        ring = k * reach + 2 * k + 2 if adaptive else 2 * k + 2
        hidden_ring = torch.zeros(b, ring, model.config.hidden_size, dtype=hidden.dtype)
        prefill_hidden = hidden if k and not adaptive else None
        policy = self.draft_policy if adaptive else None
        if policy is not None:
            policy.start(b)
        heads_used = [0] * (k + 1)  # steps per number of heads, this call
        # adaptive: per head, per row, the first position whose cache entry is not final (heads a step
        # leaves out fall behind, and catch up from here when next used)
        starts = [[0] * b for _ in range(k)] if adaptive else []
        if adaptive:  # the last `ring` prompt positions of every row in one copy (earlier ones: slots
            # of positions >= the prompt's end, which steps write before anything reads them)
            tail = lengths[:, None] - ring + torch.arange(ring)
            hidden_ring[rows[:, None], tail % ring] = hidden[rows[:, None], tail.clamp(min=0)]
        elif k:
            for i in range(b):
                tail = torch.arange(max(0, int(lengths[i]) - ring), int(lengths[i]))
                hidden_ring[i, tail % ring] = hidden[i, tail]
        head_start = torch.zeros(b, dtype=torch.long)
        finish = ["length"] * b
        done = [False] * b
        for i in range(b):
            done[i], finish[i] = self._stopped(gen_tokens[i], gen_logps[i], sampling)
        steps = accepted_total = 0
        accept_lengths: list[int] = []
        slots = torch.arange(k + 1)
        rows_col = rows[:, None]

        # Each step costs kernels, not arithmetic, at these sizes: the loop keeps its own bookkeeping
        # to a few tensor ops, and skips the done-row masking while every row is still running.
        while not all(done):
            step_started = time.perf_counter()
            everyone = not any(done)
            active = None if everyone else torch.tensor([not d for d in done])
            drafts = torch.zeros(b, 0, dtype=torch.long)
            q = None
            ks, caught_up, live = k, 0, []
            if policy is not None:
                n_l = n.tolist()
                live = [i for i in range(b) if not done[i]]
                def catch(h: int) -> int:
                    return sum(self._catch_up(n_l[i], [st[i] for st in starts[:h]], h, reach)[1] for i in live) if h else 0

                ks = policy.choose(live, [sampling.max_new_tokens - len(gen_tokens[i]) for i in live],
                                   max(n_l[i] for i in live), catch, limit=k)
                caught_up = catch(ks)
            heads_used[ks] += 1
            if ks and policy is not None:
                # From each row's oldest non-final head entry (or the reach of the heads' windows, if
                # that is nearer), through the ring; each head skips what its successors cannot reach.
                begin = [0] * b
                for i in live:
                    begin[i] = self._catch_up(n_l[i], [st[i] for st in starts[:ks]], ks, reach)[0]
                head_start = torch.tensor(begin)
                span = torch.where(active, n - head_start, 0) if active is not None else n - head_start
                width = int(span.max())
                j = torch.arange(width)
                hpos = torch.where(j < span[:, None], head_start[:, None] + j, -1)
                skip = [min(max(0, n_l[i] - (ks - h) * reach - begin[i]) for i in live) for h in range(ks)]
                prev = hidden_ring[rows_col, hpos % ring]
                rope = model.mtp_rope(hpos, prev.dtype)
                # The heads' caches agree on what a query sees only in a steady step (see AttentionMasks).
                shared = caught_up == 0 and all(starts[h][i] == starts[0][i] for h in range(ks) for i in live)
                masks = AttentionMasks()
                last = (span - 1).clamp(min=0)
                tok_at = hpos + 1
                draft_at = n[:, None] + slots[1:ks + 1]
                heads, q_heads = [], []
                for head in range(ks):
                    cache.crop_mtp(head, head_start)
                    s, before = skip[head], (skip[head - 1] if head else 0)
                    if s:
                        prev = prev[:, s - before:]
                        h_pos, h_tok, h_last = hpos[:, s:], tok_at[:, s:], last - s
                        h_rope = (rope[0][:, s:], rope[1][:, s:], rope[2])
                    else:
                        h_pos, h_tok, h_last, h_rope = hpos, tok_at, last, rope
                    prev, logits = model.mtp_step(head, prev, seq.gather(1, h_tok + head), h_pos, cache, h_rope,
                                                  masks if shared else AttentionMasks(), logits_at=h_last)
                    if greedy:
                        d = logits.argmax(-1)
                    else:
                        q_heads.append(warp(logits, sampling))
                        d = sample(q_heads[-1], gen)
                    heads.append(d)
                    seq[rows, draft_at[:, head]] = d
                drafts = torch.stack(heads, dim=1)
                q = None if greedy else torch.stack(q_heads, dim=1)
                for i in live:
                    settled = max(0, n_l[i] - ks + 1)
                    for h in range(ks):
                        starts[h][i] = settled
            elif ks:
                span = n - head_start if everyone else torch.where(active, n - head_start, 0)
                width = int(span.max())
                j = torch.arange(width)
                hpos = head_start[:, None] + j
                if b > 1:  # ragged spans: positions past a row's span are padding
                    hpos = torch.where(j < span[:, None], hpos, -1)
                skip = [0] * k  # leading columns each head leaves out (only in the prompt pass)
                if prefill_hidden is not None:
                    prev = prefill_hidden[:, :width]
                    prefill_hidden = None
                    if self.trim_prompt_pass:
                        skip = self._prompt_pass_skips(int(span.min()), k, model.config.sliding_window)
                        prev = prev[:, skip[0]:]
                else:
                    prev = hidden_ring[rows_col, hpos % ring]  # padding (-1) reads a slot nobody uses
                rope, masks = model.mtp_rope(hpos, prev.dtype), AttentionMasks()
                last = (span - 1).clamp(min=0)
                tok_at = hpos + 1  # head h reads token i + h + 1 at position i (padding reads slot 0)
                # Drafts go into seq as they come: head h reads tokens up to n + h. Rows that are done
                # get writes past their end too, which nothing reads.
                draft_at = n[:, None] + slots[1:]
                heads, q_heads = [], []
                for head in range(k):
                    cache.crop_mtp(head, head_start)
                    s = skip[head]
                    if s:  # prompt pass: each head starts later in the prompt than the one before
                        prev = prev[:, s - skip[head - 1]:] if head else prev
                        h_pos, h_tok, h_last = hpos[:, s:], tok_at[:, s:], last - s
                        h_rope = (rope[0][:, s:], rope[1][:, s:], rope[2])
                    else:
                        h_pos, h_tok, h_last, h_rope = hpos, tok_at, last, rope
                    prev, logits = model.mtp_step(head, prev, seq.gather(1, h_tok + head), h_pos, cache, h_rope, masks,
                                                  logits_at=h_last)
                    if greedy:
                        d = logits.argmax(-1)
                    else:
                        q_heads.append(warp(logits, sampling))
                        d = sample(q_heads[-1], gen)
                    heads.append(d)
                    seq[rows, draft_at[:, head]] = d
                drafts = torch.stack(heads, dim=1)
                q = None if greedy else torch.stack(q_heads, dim=1)
                next_start = (n - k + 1).clamp(min=0)
                head_start = next_start if everyone else torch.where(active, next_start, head_start)

            verify = torch.cat([x_new[:, None], drafts], dim=1)
            vpos = n[:, None] + slots[:ks + 1]
            if not everyone:
                vpos = torch.where(active[:, None], vpos, -1)
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
                hidden_ring[rows_col, vpos % ring] = out.hidden
            acc_l, chosen_l, logps_l = accepted.tolist(), chosen.tolist(), chosen_logps.tolist()
            was_done = list(done)
            for i in range(b):
                if was_done[i]:
                    continue
                a = acc_l[i]
                accept_lengths.append(a + 1)
                accepted_total += a
                if out.routing is not None:
                    routing_chunks[i].append(out.routing[i, :a + 1])
                gen_tokens[i].extend(chosen_l[i][:a + 1])
                gen_logps[i].extend(logps_l[i][:a + 1])
                done[i], finish[i] = self._stopped(gen_tokens[i], gen_logps[i], sampling, a + 1)
            if everyone:
                n = n + accepted + 1
                x_new = nxt
            else:
                n = torch.where(active, n + accepted + 1, n)
                x_new = torch.where(active, nxt, x_new)
            if ks and any(acc_l[i] < ks for i in range(b) if not done[i]):
                cache.crop(n)  # forget rejected drafts (rows that just finished are never read again)
            seq[rows, n] = x_new  # done rows rewrite the token already there
            if policy is not None:
                for i in live if ks else ():
                    policy.acceptance.observe(i, ks, acc_l[i])
                policy.record(len(live), max(n_l[i] for i in live), ks, time.perf_counter() - step_started, caught_up)

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
        finished = time.perf_counter()
        stats = {"steps": steps, "draft_heads": k, "steps_by_draft_heads": heads_used,
                 # Time to first token and the decoding after it, which is what drafting speeds up.
                 "prefill_seconds": first_token_at - started, "decode_seconds": finished - first_token_at,
                 "decode_tokens": sum(len(t) - 1 for t in gen_tokens),
                 "mean_acceptance_length": sum(accept_lengths) / max(1, len(accept_lengths)),
                 "accepted_drafts": accepted_total, "kv_cache_bytes": cache.nbytes()}
        if policy is not None:
            stats.update(policy.stats())
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
