"""Per-layer KV cache addressed by absolute position, so rows of a batch may sit at different lengths.

Sliding-window layers keep a ring of `window + slack` slots (slot = position mod capacity): memory
stays flat however long the context grows. `slack` is the most tokens one step may append and then
take back (speculative verification), so cropping a rejected draft never loses a key the next query
still needs. Global layers grow by doubling. Slot positions are stored explicitly (-1 = empty); the
attention mask is computed from them, which makes ragged batches, padding and rollback one mechanism.

A decoding step (at most `slack` new tokens) writes its keys into the cache first and attends over
the cache itself: the ring still holds every key those queries can see, and no copy of the cache is
made. Longer calls on a ring (prefill) attend over the old slots plus the new keys, since the ring
write may overwrite keys that their earliest queries still need.
"""

from __future__ import annotations

import torch


class LayerKVCache:
    def __init__(self, batch: int, kv_heads: int, k_dim: int, v_dim: int, window: int | None,
                 slack: int = 8, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 initial_capacity: int = 256) -> None:
        self.window = window
        self.slack = slack
        self.capacity = window + slack if window is not None else initial_capacity
        self._alloc(batch, kv_heads, k_dim, v_dim, dtype, device)

    def _alloc(self, batch: int, kv_heads: int, k_dim: int, v_dim: int, dtype: torch.dtype, device) -> None:
        # One extra slot at the end absorbs writes of padding tokens (a branch-free scatter).
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
        """Store the new keys ([B, Hkv, T, D]); return (keys, values, positions) the new queries attend over."""
        t = pos_new.shape[1]
        write_first = self.window is None or t <= self.slack
        if not write_first:
            cap = self.capacity
            k_all = torch.cat([self.k[:, :, :cap], k_new.to(self.k.dtype)], dim=2)
            v_all = torch.cat([self.v[:, :, :cap], v_new.to(self.v.dtype)], dim=2)
            pos_all = torch.cat([self.pos[:, :cap], pos_new], dim=1)
        valid = pos_new >= 0
        if self.window is None:
            top = int(pos_new.max()) + 1
            if top > self.capacity:
                self._grow(top)
            slot = pos_new.clamp(min=0)
        else:
            cap = self.capacity
            if t > cap:  # within one call only the last `cap` positions of each row survive a ring write
                valid = valid & (pos_new > pos_new.max(dim=1, keepdim=True).values - cap)
            slot = pos_new.clamp(min=0) % cap
        cap = self.capacity
        slot = torch.where(valid, slot, cap)
        b, h, _, dk = k_new.shape
        self.k.scatter_(2, slot[:, None, :, None].expand(b, h, t, dk), k_new.to(self.k.dtype))
        self.v.scatter_(2, slot[:, None, :, None].expand(b, h, t, v_new.shape[-1]), v_new.to(self.v.dtype))
        self.pos.scatter_(1, slot, torch.where(valid, pos_new, -1))
        self.pos[:, cap] = -1
        if write_first:
            return self.k[:, :, :cap], self.v[:, :, :cap], self.pos[:, :cap]
        return k_all, v_all, pos_all

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
