"""Per-layer KV cache addressed by absolute position, so rows of a batch may sit at different lengths.

Sliding-window layers keep a ring of `window + slack` slots (slot = position mod capacity): memory
stays flat however long the context grows. `slack` is the most tokens one step may append and then
take back (speculative verification), so cropping a rejected draft never loses a key the next query
still needs. Global layers grow by doubling. Slot positions are stored explicitly (-1 = empty); the
attention mask is computed from them, which makes ragged batches, padding and rollback one mechanism.

Global layers, and rings in a call of at most `slack` tokens (a decoding step), write the new keys
into the cache first and attend over the cache itself: it still holds every key those queries can
see, and no copy of it is made. Longer calls on a ring (prefill chunks) attend over the old slots
plus the new keys, since the ring write may overwrite keys that their earliest queries still need.
"""

from __future__ import annotations

import torch


class LayerKVCache:
    def __init__(self, batch: int, kv_heads: int, k_dim: int, v_dim: int, window: int | None,
                 slack: int = 8, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 initial_capacity: int = 256) -> None:
        self.window = window
        self.slack = slack
        self.top = 0  # global layers: 1 + the highest position ever written (attention stops there)
        self.capacity = window + slack if window is not None else initial_capacity
        self._alloc(batch, kv_heads, k_dim, v_dim, dtype, device)

    def _alloc(self, batch: int, kv_heads: int, k_dim: int, v_dim: int, dtype: torch.dtype, device) -> None:
        # One spare slot at the end absorbs the writes of padding (position -1 indexes it: slot = pos
        # on global layers, pos.fmod(capacity) on rings), so a write needs no branch and no mask.
        self._rows = torch.arange(batch, device=device)[:, None]
        self.k = torch.zeros(batch, kv_heads, self.capacity + 1, k_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, kv_heads, self.capacity + 1, v_dim, dtype=dtype, device=device)
        self.pos = torch.full((batch, self.capacity + 1), -1, dtype=torch.long, device=device)

    def _grow(self, needed: int) -> None:
        new_capacity = self.capacity
        while new_capacity < needed:
            new_capacity *= 2
        b, h, _, dk = self.k.shape
        k, v, pos = self.k, self.v, self.pos
        old = self.capacity
        self.capacity = new_capacity
        self._alloc(b, h, dk, v.shape[-1], k.dtype, k.device)
        self.k[:, :, :old] = k[:, :, :old]
        self.v[:, :, :old] = v[:, :, :old]
        self.pos[:, :old] = pos[:, :old]

    def extend(self, k_new: torch.Tensor, v_new: torch.Tensor, pos_new: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store the new keys and values ([B, T, Hkv, D], token-major as projected); return the keys
        and values ([B, Hkv, S, D]) and their positions ([B, S]) that the new queries attend over."""
        t = pos_new.shape[1]
        rows = self._rows
        if self.window is None:
            top = int(pos_new.max()) + 1
            if top > self.top:
                self.top = top
                if top > self.capacity:
                    self._grow(top)
            self._write(rows, pos_new, k_new, v_new, pos_new)
            return self.k[:, :, :self.top], self.v[:, :, :self.top], self.pos[:, :self.top]
        cap = self.capacity
        if t <= self.slack:
            self._write(rows, pos_new.fmod(cap), k_new, v_new, pos_new)
            return self.k[:, :, :cap], self.v[:, :, :cap], self.pos[:, :cap]
        k_all = torch.cat([self.k[:, :, :cap], k_new.transpose(1, 2).to(self.k.dtype)], dim=2)
        v_all = torch.cat([self.v[:, :, :cap], v_new.transpose(1, 2).to(self.v.dtype)], dim=2)
        pos_all = torch.cat([self.pos[:, :cap], pos_new], dim=1)
        # Within one call only the last `cap` positions of each row survive a ring write; the rest
        # (and padding) go to the spare slot, so no two kept writes share a slot.
        keep = (pos_new >= 0) & (pos_new > pos_new.max(dim=1, keepdim=True).values - cap)
        self._write(rows, torch.where(keep, pos_new.fmod(cap), -1), k_new, v_new, torch.where(keep, pos_new, -1))
        return k_all, v_all, pos_all

    def _write(self, rows: torch.Tensor, slot: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
               pos_new: torch.Tensor) -> None:
        self.k[rows, :, slot] = k_new.to(self.k.dtype)
        self.v[rows, :, slot] = v_new.to(self.v.dtype)
        self.pos[rows, slot] = pos_new

    def crop(self, lengths: torch.Tensor) -> None:
        """Forget every position >= lengths[row] (rejected draft tokens)."""
        self.pos.masked_fill_(self.pos >= lengths[:, None], -1)

    def empty_like(self, batch: int, capacity: int | None = None) -> "LayerKVCache":
        """A new cache of this layer's shape and kind (global layers: `capacity` slots to start with)."""
        return LayerKVCache(batch, self.k.shape[1], self.k.shape[-1], self.v.shape[-1], self.window, self.slack,
                            self.k.dtype, self.k.device, max(1, capacity or 256))

    def copy_rows(self, src: "LayerKVCache", src_rows: torch.Tensor, dst_rows: torch.Tensor,
                  limit: torch.Tensor | None = None) -> None:
        """Rows `dst_rows` become copies of `src`'s rows `src_rows` (the prefix cache moving an episode in and
        out of a batch), keeping only positions < limit[i] when given. Rings copy slot for slot, so both must
        have the same window and slack (every cache the engine makes has slack = MTP heads + 1)."""
        if self.window is None:
            top = src.top if limit is None else min(src.top, int(limit.max()))
            if top > self.capacity:
                self._grow(top)
            self.top = max(self.top, top)
            self.pos[dst_rows] = -1
            self.k[dst_rows, :, :top] = src.k[src_rows, :, :top]
            self.v[dst_rows, :, :top] = src.v[src_rows, :, :top]
            self.pos[dst_rows, :top] = src.pos[src_rows, :top]
        else:
            if src.capacity != self.capacity:
                raise ValueError(f"ring of {src.capacity} slots copied into one of {self.capacity}")
            self.k[dst_rows] = src.k[src_rows]
            self.v[dst_rows] = src.v[src_rows]
            self.pos[dst_rows] = src.pos[src_rows]
        if limit is not None:
            rows = self.pos[dst_rows]
            self.pos[dst_rows] = rows.masked_fill(rows >= limit[:, None], -1)

    def clear_rows(self, rows: torch.Tensor) -> None:
        self.pos[rows] = -1

    def max_position(self, row: int) -> int:
        """The highest position row `row` holds (-1 when empty)."""
        return int(self.pos[row].max())

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def filled_positions(self) -> int:
        return int((self.pos >= 0).sum())


class ModelKVCache:
    """Caches of the main layers and of each MTP block, created by `PolicyModel.new_cache`."""

    def __init__(self, layers: list[LayerKVCache], mtp: list[LayerKVCache]) -> None:
        self.layers = layers
        self.mtp = mtp

    def crop(self, lengths: torch.Tensor) -> None:
        for cache in self.layers:
            cache.crop(lengths)

    def crop_mtp(self, head: int, lengths: torch.Tensor) -> None:
        self.mtp[head].crop(lengths)

    def copy_rows(self, src: "ModelKVCache", src_rows: torch.Tensor, dst_rows: torch.Tensor,
                  limit: torch.Tensor | None = None) -> None:
        """The main layers' rows from `src` (see LayerKVCache.copy_rows); the MTP heads' rows are emptied:
        a prefix keeps only the main model's cache (the heads rebuild theirs from kept hidden states)."""
        for mine, theirs in zip(self.layers, src.layers):
            mine.copy_rows(theirs, src_rows, dst_rows, limit)
        for head in self.mtp:
            head.clear_rows(dst_rows)

    def row_copy(self, row: int, limit: int) -> "ModelKVCache":
        """Row `row`'s main layers, positions < limit, as a batch-1 cache sized to hold just those (no MTP)."""
        out = ModelKVCache([c.empty_like(1, limit) for c in self.layers], [])
        out.copy_rows(self, torch.tensor([row]), torch.tensor([0]), torch.tensor([limit]))
        return out

    def nbytes(self) -> dict[str, int]:
        return {"layers": sum(c.nbytes() for c in self.layers), "mtp": sum(c.nbytes() for c in self.mtp)}
