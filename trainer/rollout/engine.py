"""In-process batched generation with a KV cache, optional MTP self-speculative drafting, per-token log-probs,
the routed experts of every token (for routing replay in training), a prefix cache across the turns of an
episode, and continuous batching.

The batch is a set of slots (`Decoder`). A request is admitted into a free slot: the part of its prompt that
its prefix-cache entry does not already hold is prefilled (prefix_cache.py: per episode, and a GRPO group's
shared prompt), its cache rows copied into the slot, and its first token sampled. Each step the main model
verifies [x_n, d_1..d_K] for every occupied slot in one forward pass (K = 0 without drafting), the
speculative rule accepts a prefix, and every cache crops the rejected tail. Rows advance independently
(positions are per row); a finished row hands its completion back, leaves its cache to its episode's prefix
entry, and its slot takes the next request at once (`ContinuousBatcher`, batcher.py) without waiting for
the slowest row. `generate` is the same machinery with every request admitted up front.

MTP head k at position i reads (h^{k-1}_i, x_{i+k}); its cache entry is final only once x_{i+k} is
committed. Heads keep, per slot, the first position whose entry is not final; a step with k heads recomputes
from there (a steady step: at most 2k positions per head), through a ring of main hidden states, but no
earlier than their sliding windows can still reach (window + k per head: the first pass over a 16K-token
prompt costs the heads a few hundred positions, not 16K each). A new request's heads start empty and catch
up the same way, from hidden states kept by the prefix entry and the prefill.

draft="mtp" uses K heads every step; draft="adaptive" asks `DraftPolicy` (draft_policy.py) before each step
how many heads (0..K) to use, from measured step costs and acceptance. The speculative rule is lossless for
any number of drafts, and the choice depends only on earlier steps, so the output distribution is unchanged;
a seeded sampled run repeats exactly only where the choices (and, batched continuously, the admissions)
repeat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

from envfarm.errors import EnvfarmError
from envfarm.trainer.model.attention import AttentionMasks
from envfarm.trainer.model.kv_cache import ModelKVCache
from envfarm.trainer.model.logprobs import gather_logprobs
from envfarm.trainer.model.policy_model import PolicyModel
from envfarm.trainer.rollout.draft_policy import DraftPolicy
from envfarm.trainer.rollout.prefix_cache import PrefixCache, PrefixEntry
from envfarm.trainer.rollout.result import Completion, RolloutBatch
from envfarm.trainer.rollout.sampling import SamplingParams, sample, warp
from envfarm.trainer.rollout.speculative import accept_drafts, accept_greedy


@dataclass
class Request:
    """One completion to generate. `key` names the episode whose prefix-cache entry it starts from and
    updates (None: no prefix cache); `done` receives the completion when it finishes."""

    prompt: list[int]
    key: Hashable | None = None
    max_new_tokens: int | None = None
    done: Callable[[Completion], None] | None = None
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Row:
    request: Request
    max_new: int
    gen: list[int]
    logps: list[float]
    routing: list[torch.Tensor]
    hidden_from: int  # first position whose main hidden state the slot's ring holds
    top_written: int  # highest position ever written to the slot's main cache (bounds how far a prefix can crop)
    reused: int
    prefilled: int
    first_token_s: float


class RolloutEngine:
    def __init__(self, model: PolicyModel, pad_id: int | None = None, trim_prompt_pass: bool = True,
                 prefill_chunk: int = 512, prefix_cache: PrefixCache | None = None) -> None:
        if prefill_chunk < 1:
            raise EnvfarmError(f"prefill_chunk={prefill_chunk}", "use a prefill chunk of at least 1 token (default 512)")
        self.model = model.eval()
        self.pad_id = model.config.pad_token_id if pad_id is None else pad_id
        self.trim_prompt_pass = trim_prompt_pass  # False: the MTP heads' first pass covers the whole prompt
        self.prefill_chunk = prefill_chunk
        # Requests with a key keep their processed tokens here between calls (one engine per thread).
        self.prefix_cache = prefix_cache if prefix_cache is not None else PrefixCache()
        # draft="adaptive": chooses the heads per step from costs measured by this engine's own steps, kept
        # across generate calls (a worker's calls share shapes, so the first calls calibrate the rest).
        self.draft_policy = DraftPolicy(model.num_mtp)

    @staticmethod
    def _prompt_pass_skips(shortest: int, k: int, window: int) -> list[int]:
        """Leading prompt positions each MTP head may leave out of its first pass (its caches start
        empty). Head h's later queries start at n - k + 1 and see `window` keys back, so the last
        head needs its keys from about n - window - k on; every head before it must also cover the
        window its successor's inputs were attended over. Earlier positions are never read again.
        (The decoder applies the same rule from the catch-up's first position: `Decoder.step`.)"""
        reach = window + k
        return [max(0, shortest - (k - h) * reach) for h in range(k)]

    def _prefill(self, tokens: torch.Tensor, positions: torch.Tensor, last: torch.Tensor, cache
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """New prompt tokens through the main model in chunks of `prefill_chunk` tokens, so attention
        scores stay [chunk x context] rather than [prompt x prompt] (a 16K-token prompt would need
        gigabytes per layer at once). `last[i]`: the column of row i's last token. Returns the hidden
        states, the routing of every token and the logits at each row's last token."""
        rows = torch.arange(tokens.shape[0])
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

    def check(self, prompts: list[list[int]], draft: str | None, num_draft: int | None) -> int:
        """The number of heads a call may use, after refusing bad requests with one clear line each."""
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
                 num_draft: int | None = None, keys: list[Hashable | None] | None = None) -> RolloutBatch:
        """Complete every prompt. `keys[i]`: the episode prompt i belongs to; its prefix-cache entry serves
        the tokens it already holds and is updated with prompt + completion (None: no prefix cache)."""
        k = self.check(prompts, draft, num_draft)
        if keys is not None and len(keys) != len(prompts):
            raise EnvfarmError(f"{len(keys)} keys for {len(prompts)} prompts", "give one key (or None) per prompt")
        started = time.perf_counter()
        full = not self.trim_prompt_pass and k > 0
        ring = max(len(p) for p in prompts) + sampling.max_new_tokens + 2 * k + 2 if full else None
        decoder = Decoder(self, sampling, draft, k, len(prompts), full_prompt_pass=full, ring=ring)
        out: list[Completion | None] = [None] * len(prompts)

        def keep(i: int) -> Callable[[Completion], None]:
            return lambda c: out.__setitem__(i, c)

        decoder.admit(list(range(len(prompts))),
                      [Request(list(p), None if keys is None else keys[i], done=keep(i)) for i, p in enumerate(prompts)])
        first_token_at = time.perf_counter()  # prefill + first token: identical with and without drafts
        while decoder.busy:
            decoder.step()
        finished = time.perf_counter()
        stats = decoder.stats()
        stats.update({"prefill_seconds": first_token_at - started, "decode_seconds": finished - first_token_at})
        return RolloutBatch(out, stats)  # type: ignore[arg-type]  # every slot finished

    @staticmethod
    def stopped(tokens: list[int], logps: list[float], stops: list[list[int]], stop_ids: list[int], max_new: int,
                new: int = 1) -> tuple[bool, str]:
        """Truncate in place after the first stop (token or sequence) or at max_new tokens."""
        first_new = len(tokens) - new
        for end in range(max(0, first_new), len(tokens)):
            hit = tokens[end] in stop_ids or any(end + 1 >= len(s) and tokens[end + 1 - len(s):end + 1] == s for s in stops)
            if hit or end + 1 >= max_new:
                del tokens[end + 1:], logps[end + 1:]
                return True, "stop" if hit else "length"
        return False, "length"


class Decoder:
    """The slots of one batch and their decoding state; requests come and go per slot.

    Caches have slack = MTP heads + 1 whatever the call drafts, so a slot's rows copy slot for slot between
    the batch and the prefix entries."""

    def __init__(self, engine: RolloutEngine, sampling: SamplingParams, draft: str | None, k: int, slots: int,
                 full_prompt_pass: bool = False, ring: int | None = None) -> None:
        model = engine.model
        self.engine, self.model, self.sampling = engine, model, sampling
        self.k, self.b = k, slots
        self.policy = engine.draft_policy if draft == "adaptive" else None
        self.kmax = model.num_mtp
        window = model.config.sliding_window
        self.reach = window + k  # see RolloutEngine._prompt_pass_skips
        self.full = full_prompt_pass  # heads recompute from their oldest non-final entry, however far back
        self.tail = self.kmax * (window + self.kmax)  # hidden states a prefix entry keeps: any k's reach
        self.ring = ring if ring is not None else self.tail + 2 * self.kmax + 2
        self.slack = self.kmax + 1
        self.stops = sampling.stop_sequences()
        self.cache = model.new_cache(slots, slack=self.slack)
        self.seq = torch.full((slots, 64), engine.pad_id, dtype=torch.long)  # committed tokens (+ drafts past n)
        self.n = torch.zeros(slots, dtype=torch.long)  # the main cache holds positions < n; x_new sits at n
        self.x_new = torch.zeros(slots, dtype=torch.long)
        self.active = torch.zeros(slots, dtype=torch.bool)
        dtype = model.lm_head.weight.dtype
        self.hidden_ring = torch.zeros(slots, self.ring, model.config.hidden_size, dtype=dtype) if self.kmax else None
        self.starts = [[0] * slots for _ in range(k)]  # per head, per slot: first position not final
        self.rows: list[_Row | None] = [None] * slots
        self.gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        self._rows = torch.arange(slots)
        self._rows_col = self._rows[:, None]
        self._slots = torch.arange(k + 1)
        self.steps = self.accepted_total = self.accept_sum = self.accept_count = 0
        self.decode_tokens = self.reused_tokens = self.prefilled_tokens = 0
        self.heads_used = [0] * (k + 1)
        if self.policy is not None:
            self.policy.start(slots)

    # -- slots ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return any(r is not None for r in self.rows)

    def free_slots(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r is None]

    @staticmethod
    def _prefill_groups(lengths: list[int], short: int = 128) -> list[list[int]]:
        """Which prefill rows go through the model together: short ones in one batch (a few tokens each: the
        pass costs kernel launches, so batching them pays), each long one alone. Long rows batched together
        are padded to the longest and gain nothing on a CPU (measured with 7 agent turns of 200-2,000 new
        tokens admitted at once: twice the CPU time of prefilling them one by one)."""
        shorts = [u for u, n in enumerate(lengths) if n <= short]
        return ([shorts] if shorts else []) + [[u] for u, n in enumerate(lengths) if n > short]

    def _ensure_capacity(self, needed: int) -> None:
        have = self.seq.shape[1]
        if needed > have:
            grow = max(needed, 2 * have) - have
            self.seq = torch.cat([self.seq, torch.full((self.b, grow), self.engine.pad_id, dtype=torch.long)], dim=1)

    def admit(self, slots: list[int], requests: list[Request]) -> None:
        """Start `requests` in the free `slots`: prefill what their prefix entries do not hold (prompts
        without an entry that are identical are prefilled once), copy the caches in, sample first tokens."""
        engine, model, sampling = self.engine, self.model, self.sampling
        store = engine.prefix_cache
        start_from: list[tuple[PrefixEntry | None, int]] = []
        for r in requests:
            entry, m = store.take(r.key, r.prompt) if r.key is not None else (None, 0)
            if entry is not None:
                entry.crop(m)
            start_from.append((entry, m))
        unique: list[int] = []  # the request whose prefill serves each prefill row
        src: list[int] = []
        seen: dict[tuple[int, ...], int] = {}
        for j, (r, (entry, _)) in enumerate(zip(requests, start_from)):
            if entry is None:
                same = seen.get(tuple(r.prompt))
                if same is not None:
                    src.append(same)
                    continue
                seen[tuple(r.prompt)] = len(unique)
            src.append(len(unique))
            unique.append(j)
        new_len = [len(requests[j].prompt) - start_from[j][1] for j in unique]
        hidden_rows: list[torch.Tensor] = [torch.empty(0)] * len(unique)
        routing_rows: list[torch.Tensor | None] = [None] * len(unique)
        logit_rows: list[torch.Tensor] = [torch.empty(0)] * len(unique)
        row_of: dict[int, tuple[ModelKVCache, int]] = {}  # prefill row u -> (its group's cache, row there)
        src_t, dst = torch.tensor(src), torch.tensor(slots)
        for part in self._prefill_groups(new_len):
            group = model.new_cache(len(part), slack=self.slack)
            width = max(new_len[u] for u in part)
            tokens = torch.full((len(part), width), engine.pad_id, dtype=torch.long)
            positions = torch.full((len(part), width), -1, dtype=torch.long)
            for g, u in enumerate(part):
                entry, m = start_from[unique[u]]
                if entry is not None:
                    group.copy_rows(entry.cache, torch.tensor([0]), torch.tensor([g]))
                prompt = requests[unique[u]].prompt
                tokens[g, :new_len[u]] = torch.tensor(prompt[m:])
                positions[g, :new_len[u]] = torch.arange(m, len(prompt))
            hidden, routing, last_logits = engine._prefill(tokens, positions, torch.tensor([new_len[u] for u in part]) - 1, group)
            local = {u: g for g, u in enumerate(part)}
            mine = [j for j, u in enumerate(src) if u in local]
            self.cache.copy_rows(group, torch.tensor([local[src[j]] for j in mine]), dst[mine])
            for g, u in enumerate(part):
                hidden_rows[u], logit_rows[u] = hidden[g], last_logits[g]
                routing_rows[u] = None if routing is None else routing[g]
                row_of[u] = (group, g)
        last_logits = torch.stack(logit_rows)
        logits = last_logits[src_t]
        x = logits.argmax(-1) if sampling.greedy else sample(warp(logits, sampling), self.gen)
        logps = gather_logprobs(logits, x).tolist()
        first_token = time.perf_counter()
        x_l = x.tolist()
        for u, j in enumerate(unique):  # a prompt seen first here: kept for the rest of its group
            prompt = requests[j].prompt
            if start_from[j][0] is None and requests[j].key is not None and store.share_prompts and not store.has_prompt(prompt):
                size = len(prompt)
                h = hidden_rows[u][max(0, size - self.tail):size].clone() if self.hidden_ring is not None else None
                group, g = row_of[u]
                routed_u = routing_rows[u]
                store.put(store.prompt_key(prompt), PrefixEntry(list(prompt), group.row_copy(g, size),
                                                                 None if routed_u is None else routed_u[:size].clone(), h,
                                                                 min_reuse=size - 1 - self.slack))
        for j, (s, r) in enumerate(zip(slots, requests)):
            entry, m = start_from[j]
            u, size = src[j], len(r.prompt)
            max_new = r.max_new_tokens or sampling.max_new_tokens
            self._ensure_capacity(size + max_new + 2 * self.k + 2)
            self.seq[s].fill_(engine.pad_id)
            self.seq[s, :size] = torch.tensor(r.prompt)
            self.seq[s, size] = x_l[j]
            self.n[s], self.x_new[s] = size, x_l[j]
            routed = []
            if routing_rows[u] is not None:
                if entry is not None and entry.routing is not None:
                    routed.append(entry.routing[:m])
                routed.append(routing_rows[u][:size - m])
            hidden_from = size
            if self.hidden_ring is not None:
                parts = ([entry.hidden] if entry is not None and entry.hidden is not None else []) + [hidden_rows[u][:size - m]]
                known = torch.cat(parts) if len(parts) > 1 else parts[0]  # positions size - len .. size - 1
                count = min(known.shape[0], self.ring)
                hidden_from = size - count
                self.hidden_ring[s, (hidden_from + torch.arange(count)) % self.ring] = known[known.shape[0] - count:]
            for st in self.starts:
                st[s] = 0 if self.full else hidden_from
            row = _Row(r, max_new, [x_l[j]], [logps[j]], routed, hidden_from, size - 1, m, size - m,
                       first_token - r.submitted)
            self.rows[s] = row
            self.active[s] = True
            self.reused_tokens += m
            self.prefilled_tokens += size - m
            if self.policy is not None:
                self.policy.acceptance.reset_row(s)
            done, reason = RolloutEngine.stopped(row.gen, row.logps, self.stops, sampling.stop_token_ids, max_new)
            if done:
                self._finish(s, reason)
        store.stats.reused_tokens += sum(m for _, m in start_from)
        store.stats.prefilled_tokens += sum(len(r.prompt) - m for r, (_, m) in zip(requests, start_from))
        store.stats.hits += sum(1 for e, _ in start_from if e is not None)
        store.stats.misses += sum(1 for e, _ in start_from if e is None)

    def _finish(self, s: int, reason: str) -> None:
        """Hand the completion back and leave the slot's cache to the request's prefix entry."""
        row = self.rows[s]
        assert row is not None
        prompt, gen = row.request.prompt, row.gen
        total = len(prompt) + len(gen)
        routing = None
        if row.routing:
            fed = torch.cat(row.routing)[:total]
            routing = torch.full((total, self.model.n_moe_layers, self.model.config.num_experts_per_tok), -1, dtype=torch.int32)
            routing[:len(fed)] = fed
        if row.request.key is not None:
            kept = total - 1  # every token but the last was fed (positions < kept are in the cache)
            hidden = None
            if self.hidden_ring is not None:
                lo = max(row.hidden_from, kept - self.tail)
                hidden = self.hidden_ring[s, torch.arange(lo, kept) % self.ring].clone()
            entry = PrefixEntry(prompt + gen[:-1], self.cache.row_copy(s, kept),
                                None if routing is None else routing[:kept].clone(), hidden,
                                min_reuse=row.top_written - self.slack)
            self.engine.prefix_cache.put(row.request.key, entry)
        self.rows[s] = None
        self.active[s] = False
        self.n[s] = 0
        self.decode_tokens += len(gen) - 1
        stats = {"ttft_s": row.first_token_s, "reused_tokens": row.reused, "prefilled_tokens": row.prefilled,
                 "seconds": time.perf_counter() - row.request.submitted}
        completion = Completion(list(prompt), gen, row.logps, routing, reason, stats)
        if row.request.done is not None:
            row.request.done(completion)

    # -- decoding ---------------------------------------------------------------------------------
    def _catch_up(self, n: int, starts: list[int], k: int) -> tuple[int, int]:
        """One row: where k heads start recomputing (their oldest non-final entry, but no earlier than their
        windows can still reach) and how many positions that is beyond a steady step's 2k."""
        begin = min(starts) if self.full else max(min(starts), n - k * self.reach, 0)
        return begin, max(0, n - begin - 2 * k)

    def step(self) -> None:
        """One decoding step of every occupied slot."""
        step_started = time.perf_counter()
        model, cache, sampling, b, k = self.model, self.cache, self.sampling, self.b, self.k
        greedy, gen, rows, rows_col, slots = sampling.greedy, self.gen, self._rows, self._rows_col, self._slots
        live = [i for i in range(b) if self.rows[i] is not None]
        everyone = len(live) == b
        active = None if everyone else self.active.clone()
        n, starts, ring = self.n, self.starts, self.ring
        n_l = n.tolist()
        drafts = torch.zeros(b, 0, dtype=torch.long)
        q = None
        ks, caught_up = k, 0
        context = max(n_l[i] for i in live)
        if k:
            def catch(h: int) -> int:
                return sum(self._catch_up(n_l[i], [st[i] for st in starts[:h]], h)[1] for i in live) if h else 0

            if self.policy is not None:
                ks = self.policy.choose(live, [self.rows[i].max_new - len(self.rows[i].gen) for i in live],  # type: ignore[union-attr]
                                        context, catch, limit=k)
            caught_up = catch(ks)
        self.heads_used[ks] += 1
        if ks:
            # From each row's oldest non-final head entry (or the reach of the heads' windows, if that is
            # nearer), through the ring; each head skips what its successors cannot reach.
            begin = [0] * b
            for i in live:
                begin[i] = self._catch_up(n_l[i], [st[i] for st in starts[:ks]], ks)[0]
            head_start = torch.tensor(begin)
            span = torch.where(active, n - head_start, 0) if active is not None else n - head_start
            width = int(span.max())
            j = torch.arange(width)
            hpos = torch.where(j < span[:, None], head_start[:, None] + j, -1)
            skip = [0] * ks if self.full else [min(max(0, n_l[i] - (ks - h) * self.reach - begin[i]) for i in live)
                                               for h in range(ks)]
            prev = self.hidden_ring[rows_col, hpos % ring]  # padding (-1) reads a slot nobody uses
            rope = model.mtp_rope(hpos, prev.dtype)
            # The heads' caches agree on what a query sees only in a steady step (see AttentionMasks).
            shared = caught_up == 0 and all(starts[h][i] == starts[0][i] for h in range(ks) for i in live)
            masks = AttentionMasks()
            last = (span - 1).clamp(min=0)
            tok_at = hpos + 1  # head h reads token i + h + 1 at position i (padding reads slot 0)
            # Drafts go into seq as they come: head h reads tokens up to n + h. Free slots get writes
            # past their end too, which nothing reads.
            draft_at = n[:, None] + slots[1:ks + 1]
            heads, q_heads = [], []
            for head in range(ks):
                cache.crop_mtp(head, head_start)
                s, before = skip[head], (skip[head - 1] if head else 0)
                if s:
                    prev = prev[:, s - before:]
                    h_pos, h_tok, h_last = hpos[:, s:], tok_at[:, s:], (last - s).clamp(min=0)  # free slots: span 0
                    h_rope = (rope[0][:, s:], rope[1][:, s:], rope[2])
                else:
                    h_pos, h_tok, h_last, h_rope = hpos, tok_at, last, rope
                prev, logits = model.mtp_step(head, prev, self.seq.gather(1, h_tok + head), h_pos, cache, h_rope,
                                              masks if shared else AttentionMasks(), logits_at=h_last)
                if greedy:
                    d = logits.argmax(-1)
                else:
                    q_heads.append(warp(logits, sampling))
                    d = sample(q_heads[-1], gen)
                heads.append(d)
                self.seq[rows, draft_at[:, head]] = d
            drafts = torch.stack(heads, dim=1)
            q = None if greedy else torch.stack(q_heads, dim=1)
            for i in live:
                settled = max(0, n_l[i] - ks + 1)
                for h in range(ks):
                    starts[h][i] = settled

        verify = torch.cat([self.x_new[:, None], drafts], dim=1)
        vpos = n[:, None] + slots[:ks + 1]
        if active is not None:
            vpos = torch.where(active[:, None], vpos, -1)
        out = model(verify, positions=vpos, cache=cache)
        if greedy:
            accepted, nxt = accept_greedy(out.logits.argmax(-1), drafts)
        else:
            accepted, nxt = accept_drafts(warp(out.logits, sampling), q, drafts, gen)
        # The tokens committed at slots 0..a: the accepted drafts, then the target's own token.
        chosen = torch.cat([drafts, nxt[:, None]], dim=1).scatter_(1, accepted[:, None], nxt[:, None])
        chosen_logps = gather_logprobs(out.logits, chosen)  # [B, K+1]
        self.steps += 1
        if self.hidden_ring is not None:  # keep the main hidden states for the heads (and prefix entries)
            self.hidden_ring[rows_col, vpos % ring] = out.hidden
        acc_l, chosen_l, logps_l = accepted.tolist(), chosen.tolist(), chosen_logps.tolist()
        finished: list[tuple[int, str]] = []
        for i in live:
            row = self.rows[i]
            assert row is not None
            a = acc_l[i]
            self.accept_sum += a + 1
            self.accept_count += 1
            self.accepted_total += a
            if out.routing is not None:
                row.routing.append(out.routing[i, :a + 1])
            row.gen.extend(chosen_l[i][:a + 1])
            row.logps.extend(logps_l[i][:a + 1])
            row.top_written = n_l[i] + ks
            done, reason = RolloutEngine.stopped(row.gen, row.logps, self.stops, sampling.stop_token_ids, row.max_new, a + 1)
            if done:
                finished.append((i, reason))
        if active is None:
            n = n + accepted + 1
            self.x_new = nxt
        else:
            n = torch.where(active, n + accepted + 1, n)
            self.x_new = torch.where(active, nxt, self.x_new)
        self.n = n
        ending = {i for i, _ in finished}
        if ks and any(acc_l[i] < ks for i in live if i not in ending):
            cache.crop(n)  # forget rejected drafts (rows that just finished keep only what they committed)
        self.seq[rows, n] = self.x_new  # free slots rewrite the token already there
        if self.policy is not None:
            for i in live if ks else ():
                self.policy.acceptance.observe(i, ks, acc_l[i])
            self.policy.record(len(live), context, ks, time.perf_counter() - step_started, caught_up)
        for i, reason in finished:
            self._finish(i, reason)

    def stats(self) -> dict:
        stats = {"steps": self.steps, "draft_heads": self.k, "steps_by_draft_heads": list(self.heads_used),
                 "decode_tokens": self.decode_tokens,
                 "mean_acceptance_length": self.accept_sum / max(1, self.accept_count),
                 "accepted_drafts": self.accepted_total, "kv_cache_bytes": self.cache.nbytes(),
                 "prefix_reused_tokens": self.reused_tokens, "prefilled_tokens": self.prefilled_tokens}
        if self.policy is not None:
            stats.update(self.policy.stats())
        return stats
