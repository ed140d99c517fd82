"""What the decode probes time: one shape's bf16 query and contiguous cache (32 query heads get
D = 128, others D = 64; with block_size, the same keys in shuffled blocks of a paged cache; with
kv, quantized), copied until the copies exceed 2× L2 so that stream timing reads a cold cache on
every call, with its float64 reference and the stream time of the size-matched copy."""
from dataclasses import dataclass

import torch

import kernels.attention_decode
from kernels.attention_decode import PagedKV, bytes_moved, decode_reference, paged_decode_attention, paged_from_contiguous, quantize_kv
from lab.benchmarks._common import copy_same_bytes, input_copies, rel_err, stream_us

QUANT = {"fp8": (torch.float8_e4m3fn, "head"), "int8": (torch.int8, "token")}  # as the decode suite stores them


@dataclass
class DecodeCase:
    q: torch.Tensor  # [B, H, D]
    out: torch.Tensor  # written by every timed call
    caches: list[PagedKV]  # the copies, each a zero-copy paged view or shuffled blocks
    ref: torch.Tensor  # float64 [B, H, D]
    copy_us: float  # a device copy of the same bytes, stream
    scales: list[dict] | None = None  # per copy, k_scale/v_scale of a quantized cache

    def time(self, fn=paged_decode_attention, **kw) -> float:
        """Stream µs of one fn(q, cache, **kw) call (fn: paged_decode_attention, or another
        version of it), over the copies."""
        return stream_us([lambda c=c, sc=sc: fn(self.q, **c.kwargs(), **sc, out=self.out, **kw)
                          for c, sc in zip(self.caches, self.scales or [{}] * len(self.caches))])

    def plan(self, attention=kernels.attention_decode):
        """(splits, tile config) the launcher takes here by default (the decode_plan of
        `attention`: the module, or an earlier version of it loaded from a file)."""
        B, H, D = self.q.shape
        c = self.caches[0]
        capacity = c.capacity
        return attention.decode_plan(B, c.k_cache.shape[1], capacity, D, c.k_cache.element_size(), self.q.device,
                                     paged=kernels.attention_decode.table_columns(c.block_table) > 1, block_size=c.block_size)

    def default_splits(self) -> int:
        return self.plan()[0]

    def rel_err(self, fn=paged_decode_attention, **kw) -> float:
        o = fn(self.q, **self.caches[0].kwargs(), **(self.scales[0] if self.scales else {}), **kw)
        return rel_err(o, self.ref)


def decode_case(B: int, H: int, H_kv: int, L: int, seed: int = 0, block_size: int | None = None, kv: str = "bf16") -> DecodeCase:
    """kv: "bf16", or "fp8" / "int8" (quantized as the decode suite does; the reference is on the
    dequantized values, the copy moves the bf16 bytes, as the suite's fraction does)."""
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
    scales = None
    if kv != "bf16":
        qdtype, per = QUANT[kv]
        quantized, scales = [], []
        for c in caches:
            kq, ks = quantize_kv(c.k_cache, qdtype, per, c.layout)
            vq, vs = quantize_kv(c.v_cache, qdtype, per, c.layout)
            quantized.append(PagedKV(kq, vq, c.block_table, c.seq_lens, c.layout))
            scales.append(dict(k_scale=ks, v_scale=vs))
        caches = quantized
    ref = decode_reference(q, **caches[0].kwargs(), **(scales[0] if scales else {}))
    copy_us = stream_us(copy_same_bytes(bytes_moved(B, H, H_kv, D, B * L), dev))
    return DecodeCase(q, torch.empty_like(q), caches, ref, copy_us, scales)
