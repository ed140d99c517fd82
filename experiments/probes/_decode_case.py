"""What the decode probes time: one shape's bf16 query and contiguous cache (32 query heads get
D = 128, others D = 64; or, with block_size, the same keys in shuffled blocks of a paged cache), copied until the copies exceed 2× L2 so that stream timing reads a cold
cache on every call, with its float64 reference and the stream time of the size-matched copy."""
from dataclasses import dataclass

import torch

from kernels.attention_decode import PagedKV, bytes_moved, decode_plan, decode_reference, paged_decode_attention, paged_from_contiguous
from lab.benchmarks._common import copy_same_bytes, input_copies, stream_us


@dataclass
class DecodeCase:
    q: torch.Tensor  # [B, H, D]
    out: torch.Tensor  # written by every timed call
    caches: list[PagedKV]  # the copies, each a zero-copy paged view or shuffled blocks
    ref: torch.Tensor  # float64 [B, H, D]
    copy_us: float  # a device copy of the same bytes, stream

    def time(self, fn=paged_decode_attention, **kw) -> float:
        """Stream µs of one fn(q, cache, **kw) call (fn: paged_decode_attention, or another
        version of it), over the copies."""
        return stream_us([lambda c=c: fn(self.q, **c.kwargs(), out=self.out, **kw) for c in self.caches])

    def plan(self):
        """(splits, tile config) the launcher takes here by default (decode_plan)."""
        B, H, D = self.q.shape
        c = self.caches[0]
        capacity = c.block_table.shape[1] * c.block_size
        return decode_plan(B, c.k_cache.shape[1], capacity, D, c.k_cache.element_size(), self.q.device, paged=c.block_table.shape[1] > 1)

    def default_splits(self) -> int:
        return self.plan()[0]

    def rel_err(self, fn=paged_decode_attention, **kw) -> float:
        o = fn(self.q, **self.caches[0].kwargs(), **kw)
        return ((o.double() - self.ref).abs().max() / self.ref.abs().max()).item()


def decode_case(B: int, H: int, H_kv: int, L: int, seed: int = 0, block_size: int | None = None) -> DecodeCase:
    D = 128 if H == 32 else 64
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(seed)
    q = torch.randn(B, H, D, device=dev, dtype=torch.bfloat16, generator=g)
    k = torch.randn(B, H_kv, L, D, device=dev, dtype=torch.bfloat16, generator=g)
    v = torch.randn_like(k)
    lens = torch.full((B,), L, dtype=torch.int32, device=dev)
    kvs = input_copies(lambda i: (k, v) if i == 0 else (k.clone(), v.clone()), 2 * k.numel() * 2, dev)
    caches = [paged_from_contiguous(kc, vc, lens, block_size=block_size, shuffle=block_size is not None,
                                    generator=torch.Generator().manual_seed(seed + i)) for i, (kc, vc) in enumerate(kvs)]
    ref = decode_reference(q, **caches[0].kwargs())
    copy_us = stream_us(copy_same_bytes(bytes_moved(B, H, H_kv, D, B * L), dev))
    return DecodeCase(q, torch.empty_like(q), caches, ref, copy_us)
