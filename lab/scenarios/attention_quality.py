"""attention_quality: what an attention variant costs in quality against what it saves in KV cache.

Runs the `perplexity` scenario (perplexity, and KL(reference || variant) with top-1 agreement on
the same windows) and adds what the attention caches, so quality can be plotted against KV bytes:

  kv_bytes_per_token     cache bytes for one sequence at the context the quality was measured at
                         (the perplexity window), divided by that context: per-token K/V for
                         plain layouts, the latent (+ rope key) for MLA, window-bounded for a
                         rolling window, a fixed state spread over the context for Performer
  kv_bytes_vs_reference  the same, over the unconverted model's
  kv_cache_bytes         cache bytes for one sequence at each of `contexts` (column `context`):
                         where bounded caches pull away from per-token ones
  kl_to_reference = 0 and top1_agreement = 1 for the reference itself (so every variant, the
  reference included, has a point on the quality axis)
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from lab.context import RunContext
from lab.registry import register
from lab.scenarios import perplexity as ppl
from variants.attention._common import model_kv_bytes


@dataclass(frozen=True)
class AttentionQualityConfig(ppl.PerplexityConfig):
    contexts: tuple[int, ...] = ()  # kv_cache_bytes at these contexts; () = by size: small (128, 1024), full (512 … 16384)


@register("scenario", "attention_quality", config=AttentionQualityConfig)
def run(ctx: RunContext, cfg: AttentionQualityConfig) -> None:
    """perplexity and KL to the unconverted model, beside the KV bytes the attention variant caches"""
    full = ctx.size == "full"
    base = {f.name: getattr(cfg, f.name) for f in fields(ppl.PerplexityConfig) if f.name != "name"}
    ppl.run(ctx, ppl.PerplexityConfig(name="perplexity", **base))
    window = cfg.window or (2048 if full else 128)
    contexts = tuple(cfg.contexts) or ((512, 2048, 8192, 16384) if full else (128, 1024))
    rec = ctx.rec
    dtype_bytes = torch.finfo(ctx.dtype).bits // 8
    dname = str(ctx.dtype).replace("torch.", "")
    with rec.point(window=window):
        if not ppl.transformed(ctx):
            rec.metric("kl_to_reference", 0.0, "nats/token", method="the reference itself")
            rec.metric("top1_agreement", 1.0, "fraction", method="the reference itself")
        model, reference = ctx.model(), ctx.model(reference=True)
        ours, theirs = model_kv_bytes(model, window, dtype_bytes), model_kv_bytes(reference, window, dtype_bytes)
        how = f"cache bytes of one sequence at context {window} (the perplexity window) / {window}, {dname} cache, all layers"
        rec.metric("kv_bytes_per_token", ours / window, "B/token", method=how)
        rec.metric("kv_bytes_vs_reference", ours / theirs, "fraction", method=f"{how}, over the unconverted model's")
        for n in contexts:
            rec.metric("kv_cache_bytes", model_kv_bytes(model, n, dtype_bytes), "B", method=f"one sequence, all layers, {dname} cache", context=n)
        rank = getattr(model.layers[0].self_attn, "rank", None)
        if rank is not None:
            rec.metric("mla_rank", rank, "", method="latent width r per token per layer")
