"""The reference KV layout: one contiguous [B, H_kv, S_max, D] buffer per layer for K and for V,
allocated on first write. Memory: 2 · L · B · H_kv · S_max · D · bytes, reserved up front for
S_max = prompt + new tokens whether or not a row uses it (paged layouts reclaim that)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.model.kv_cache import ContiguousKVCache
from lab.registry import VariantConfig, register


@dataclass(frozen=True)
class ContiguousConfig(VariantConfig):
    pass


@register("kv", "contiguous", config=ContiguousConfig, reference=True)
def build(cfg: ContiguousConfig, *, n_layers: int, batch: int, max_len: int, dtype: torch.dtype, device) -> ContiguousKVCache:
    """one contiguous [B, H_kv, S_max, D] buffer per layer"""
    return ContiguousKVCache(n_layers, batch, max_len, dtype=dtype, device=device)
