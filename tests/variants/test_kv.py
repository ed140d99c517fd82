"""KV caches behind build(cfg, n_layers, batch, max_len, dtype, device): update/nbytes contract."""
from __future__ import annotations

import pytest
import torch

from lab import registry
from lab.model.kv_cache import ContiguousKVCache


def test_reference_is_contiguous_and_registry_builds_it():
    assert registry.reference("kv").name == "contiguous"
    e = registry.get("kv", "contiguous")
    cache = e.fn(e.default_config(), n_layers=3, batch=2, max_len=10, dtype=torch.float16, device="cpu")
    assert isinstance(cache, ContiguousKVCache) and cache.nbytes() == 0  # allocated on first write


def test_update_returns_all_slots_so_far_and_keeps_them():
    torch.manual_seed(0)
    cache = ContiguousKVCache(2, batch=2, max_len=9, dtype=torch.float64)
    k1, v1 = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 3, 4, 5, dtype=torch.float64)
    k, v = cache.update(0, k1, v1, 0)
    assert k.shape == (2, 3, 4, 5) and torch.equal(k, k1) and torch.equal(v, v1)
    k2, v2 = torch.randn(2, 3, 1, 5, dtype=torch.float64), torch.randn(2, 3, 1, 5, dtype=torch.float64)
    k, v = cache.update(0, k2, v2, 4)
    assert k.shape == (2, 3, 5, 5) and torch.equal(k[:, :, :4], k1) and torch.equal(v[:, :, 4:], v2)
    assert cache.length == 0  # only the last layer's write advances the length
    cache.update(1, k1, v1, 0)
    assert cache.length == 4
    assert cache.nbytes() == 2 * 2 * (2 * 3 * 9 * 5) * 8  # two layers written, K and V, full S_max
    cache.reset()
    assert cache.length == 0


def test_cache_dtype_casts_and_errors():
    cache = ContiguousKVCache(1, batch=1, max_len=4, dtype=torch.float16)
    k, _ = cache.update(0, torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8), 0)
    assert k.dtype == torch.float16
    with pytest.raises(ValueError, match="overflows"):
        cache.update(0, torch.randn(1, 2, 2, 8), torch.randn(1, 2, 2, 8), 3)
    with pytest.raises(ValueError, match="batch"):
        cache.update(0, torch.randn(2, 2, 1, 8), torch.randn(2, 2, 1, 8), 0)
