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

    def nbytes(self) -> dict[str, int]:
        return {"layers": sum(c.nbytes() for c in self.layers), "mtp": sum(c.nbytes() for c in self.mtp)}
