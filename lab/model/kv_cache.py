"""The reference KV-cache layout: one contiguous [B, H_kv, S_max, D] buffer per layer for K and V.

The KV-layout axis adds others (paged …) behind the same two calls: `update` and `nbytes`.
Buffers are allocated lazily from the first update's shapes, so a variant that caches something
else (MLA's latent) uses the same class with its own "heads" and "dim".
"""
from __future__ import annotations

import torch


class ContiguousKVCache:
    def __init__(self, n_layers: int, batch: int, max_len: int, dtype: torch.dtype | None = None, device=None):
        self.n_layers, self.batch, self.max_len = n_layers, batch, max_len
        self.dtype, self.device = dtype, device
        self.k: list[torch.Tensor | None] = [None] * n_layers  # [B, H_kv, S_max, D]
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0  # slots filled (after the last layer's update)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v: [B, H_kv, T, D] at slots start..start+T-1; return slots 0..start+T-1."""
        B, _, T, _ = k.shape
        if start + T > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} slots; writing {T} at slot {start} overflows it")
        if B != self.batch:
            raise ValueError(f"KV cache was made for batch {self.batch}, got batch {B}")
        if self.k[layer] is None:
            dtype = self.dtype or k.dtype
            self.k[layer] = torch.empty(B, k.shape[1], self.max_len, k.shape[3], dtype=dtype, device=k.device)
            self.v[layer] = torch.empty(B, v.shape[1], self.max_len, v.shape[3], dtype=dtype, device=v.device)
        self.k[layer][:, :, start : start + T] = k
        self.v[layer][:, :, start : start + T] = v
        if layer == self.n_layers - 1:
            self.length = start + T
        return self.k[layer][:, :, : start + T], self.v[layer][:, :, : start + T]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)

    def reset(self) -> None:
        self.length = 0
