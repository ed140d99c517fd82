"""prefill: time to first token over prompt lengths × batches.

One timed call runs B prompts of T random tokens through the model into an empty KV cache and
returns the last position's logits — what a server does before the first token can be sampled —
end to end on CUDA (from an idle GPU, the host's launches inside: what the caller waits).
FLOPs = B·Σ_{t<T} flops_per_token(t+1) (matmuls plus causal attention), bytes = weights read once
plus the K/V written, B·model.kv_bytes(T) (a rolling window keeps at most its window, a Performer
a fixed-size state); long prompts are compute-bound, so TFLOP/s is against the matmul peak.
Memory rows: weights, kv_cache (B·model.kv_bytes(T)), activations (the call's peak above the
allocations before it, less the cache buffers the first call allocates).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from lab.context import RunContext
from lab.model.generate import prefill, prefill_cost
from lab.model.weights import weight_bytes
from lab.registry import VariantConfig, register


@dataclass(frozen=True)
class PrefillConfig(VariantConfig):
    seq_lens: tuple[int, ...] = ()  # () = by size: small (16, 64), full (128, 512, 2048, 8192)
    batches: tuple[int, ...] = ()  # () = by size: small (1, 2), full (1, 8)
    memory: bool = True  # record memory by component


@register("scenario", "prefill", config=PrefillConfig)
def run(ctx: RunContext, cfg: PrefillConfig) -> None:
    """time to first token (prefill) over prompt lengths and batches"""
    full = ctx.size == "full"
    seq_lens = tuple(cfg.seq_lens) or ((128, 512, 2048, 8192) if full else (16, 64))
    batches = tuple(cfg.batches) or ((1, 8) if full else (1, 2))
    model = ctx.model()
    args, rec = ctx.args, ctx.rec
    wbytes = weight_bytes(model)
    dtype_bytes = torch.finfo(ctx.dtype).bits // 8
    gen = torch.Generator(ctx.device).manual_seed(ctx.seed)
    for T in seq_lens:
        for B in batches:
            with rec.point(seq_len=T, batch=B, impl="lab"):
                tokens = torch.randint(0, args.vocab_size, (B, T), device=ctx.device, generator=gen)
                cache = ctx.make_cache(B, T)
                fn = lambda: prefill(model, tokens, cache)  # start=0 each call: a fresh sequence
                flops, _ = prefill_cost(args, batch=B, seq_len=T, weight_bytes=0, kv_bytes_per_token=0)
                kv = B * model.kv_bytes(T, dtype_bytes)  # [B] sequences of T tokens, as the attention keeps them
                nbytes = float(wbytes + kv)
                if cfg.memory:
                    from lab.measure.memory import measure_peak

                    peak = measure_peak(fn, ctx.device)  # the first call also allocates the cache: not activations
                    extra = int(peak["peak_allocated_bytes"]) - (int(peak["baseline_bytes"]) if ctx.device.type == "cuda" else 0)  # CPU: already a difference
                    act = extra - int(cache.nbytes())
                    rec.memory({"weights": wbytes, "kv_cache": kv, "activations": max(0, act)}, peak,
                               method=f"weights: parameters; kv_cache: B·model.kv_bytes(T) (the buffers allocated: {int(cache.nbytes())} B); activations: the call's peak above the allocations before it, less those buffers")
                # end to end: time to first token is what a caller waits, host launches included
                rec.time(fn, metric="ttft", flops=flops, bytes_moved=nbytes, tokens=B * T, measure=replace(rec.measure, end_to_end=True))
                del cache
