"""attention_layer: one attention layer of the chosen variant, timed at real model shapes.

For each head shape (a preset's width and heads: SmolLM2-135M, Llama-3-8B) a one-layer model with
random weights is built, the run's position/attention/quant variants are applied to it, and its
attention module (projections + attention + output projection) is timed:

  prefill  T = context tokens into an empty cache (start 0 each call: a fresh sequence)
  decode   one token at slot `context`, the cache filled first by an untimed chunked prefill
           (the step is repeated at the same slot: variants that keep their own state replay it)

with the analytic costs of the checkpoint's layer: FLOPs = projections + 4·H·D per visible
(query, key) pair (window-bounded for sliding windows; MLA, Performer and Linformer do other
work, so for them it is the work they stand in for), bytes = the layer's weights + the cache
this variant reads (decode: its KV bytes at that context) and writes. Prefill is compute-bound,
decode memory-bound: the intensity column shows where each sits on the roofline.

Memory by component: weights, kv_cache (the model cache's buffers plus what compact-cache
variants keep beside it), activations (the call's allocator peak above what existed before,
minus cache growth). A variant that runs out of memory at a size (eager attention materializes
B·H·T·S float32 scores) is recorded as not run with that reason.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from lab.context import MODEL_TRANSFORMS, RunContext
from lab.errors import LabError
from lab.registry import VariantConfig, register
from variants.attention._common import model_kv_bytes, state_nbytes

MODES = ("prefill", "decode")


@dataclass(frozen=True)
class AttentionLayerConfig(VariantConfig):
    shapes: tuple[str, ...] = ()  # model presets whose layer shape is used; () = by size: small (smollm2_135m,), full (+ llama3_8b)
    contexts: tuple[int, ...] = ()  # () = by size: small (32, 128), full (512, 2048, 8192, 16384)
    modes: tuple[str, ...] = MODES
    batch: int = 1
    memory: bool = True

    def validate(self, args=None) -> None:
        from lab.model.presets import PRESETS

        bad = [s for s in self.shapes if s not in PRESETS or PRESETS[s].args is None]
        if bad:
            raise LabError(f"scenario.shapes: {bad} are not presets with a fixed shape; valid: {', '.join(k for k, p in PRESETS.items() if p.args)}")
        if any(m not in MODES for m in self.modes):
            raise LabError(f"scenario.modes: {list(self.modes)}; valid: {', '.join(MODES)}")


def one_layer_model(ctx: RunContext, preset: str):
    """A one-layer model of the preset's shape, random weights, with the run's transforms applied."""
    from lab.model.presets import PRESETS
    from lab.model.weights import empty_model, init_random_

    args = replace(PRESETS[preset].args, n_layers=1)
    for group in MODEL_TRANSFORMS:  # variant checks against this shape, not the run's model
        _, cfg = ctx.variant(group)
        if hasattr(cfg, "validate"):
            cfg.validate(args)
    torch.manual_seed(ctx.seed)
    model = init_random_(empty_model(args, device=ctx.device, dtype=ctx.dtype))
    for group in MODEL_TRANSFORMS:
        entry, cfg = ctx.variant(group)
        entry.fn(model, cfg)
    return model.eval(), args


def layer_cost(args, attn, B: int, T: int, S: int, kv_bytes_read: int, kv_bytes_written: int, weight_bytes: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one attention layer call: T new tokens per row, S keys (cached + new)."""
    from kernels.attention_prefill import visible_pairs

    C, H, H_kv, D = args.dim, args.n_heads, args.n_kv_heads, args.head_dim
    proj = 2 * B * T * C * D * (2 * H + 2 * H_kv)  # q, o ; k, v
    pairs = visible_pairs(T, S, causal=True, window=getattr(attn, "window", None))
    return proj + 4.0 * B * H * D * pairs, float(weight_bytes + kv_bytes_read + kv_bytes_written)


@register("scenario", "attention_layer", config=AttentionLayerConfig)
def run(ctx: RunContext, cfg: AttentionLayerConfig) -> None:
    """one attention layer of the chosen variant: prefill and decode latency, memory, roofline, at model shapes"""
    cfg.validate()
    full = ctx.size == "full"
    contexts = tuple(cfg.contexts) or ((512, 2048, 8192, 16384) if full else (32, 128))
    shapes = tuple(cfg.shapes) or (("smollm2_135m", "llama3_8b") if full else ("smollm2_135m",))
    rec = ctx.rec
    if ctx.device.type == "cpu" and cfg.memory:
        from lab.scenarios.attention_op import exact_cpu_rss

        exact_cpu_rss()  # freed tensors leave the RSS, so each call's peak is seen
    for shape in shapes:
        with rec.point(shape=shape):
            try:
                model, args = one_layer_model(ctx, shape)
            except LabError as e:
                rec.skipped(str(e))
                continue
            for mode in cfg.modes:
                for n in contexts:
                    with rec.point(mode=mode, context=n, batch=cfg.batch):
                        try:
                            _one(ctx, cfg, model, args, mode, n)
                        except torch.OutOfMemoryError as e:
                            rec.skipped(f"out of memory at context {n} ({str(e).splitlines()[0][:120]})", metric="latency_ms")
                        finally:
                            if ctx.device.type == "cuda":
                                torch.cuda.empty_cache()
            del model


def _one(ctx: RunContext, cfg: AttentionLayerConfig, model, args, mode: str, n: int) -> None:
    from lab.model.generate import chunk_for
    from lab.model.llama import AttnContext
    from lab.model.weights import weight_bytes

    rec, dev, B = ctx.rec, ctx.device, cfg.batch
    attn = model.layers[0].self_attn
    dtype_bytes = torch.finfo(ctx.dtype).bits // 8
    wbytes = weight_bytes(attn)
    gen = torch.Generator(dev).manual_seed(ctx.seed)
    kv_entry, kv_cfg = ctx.variant("kv")
    cache = kv_entry.fn(kv_cfg, n_layers=1, batch=B, max_len=n + 1, dtype=ctx.dtype, device=dev)

    def call(x: torch.Tensor, start: int):
        T = x.shape[1]
        pos = (start + torch.arange(T, device=dev)).expand(B, T)
        cos, sin = model.rotary(pos)
        return attn(x, AttnContext(pos=pos, cos=cos, sin=sin, start=start, cache=cache))

    held = lambda: int(cache.nbytes()) + state_nbytes(cache)
    with torch.inference_mode():
        if mode == "prefill":
            x = torch.randn(B, n, args.dim, device=dev, dtype=ctx.dtype, generator=gen)
            fn = lambda: call(x, 0)
            T, S, written, read = n, n, B * model_kv_bytes(model, n, dtype_bytes), 0
        else:
            x = torch.randn(B, n, args.dim, device=dev, dtype=ctx.dtype, generator=gen)
            step = chunk_for(B, args.n_heads, n)
            for s in range(0, n, step):
                call(x[:, s : s + step], s)
            x1 = torch.randn(B, 1, args.dim, device=dev, dtype=ctx.dtype, generator=gen)
            fn = lambda: call(x1, n)
            T, S = 1, n + 1
            read = B * model_kv_bytes(model, n + 1, dtype_bytes)
            written = B * max(0, model_kv_bytes(model, n + 1, dtype_bytes) - model_kv_bytes(model, n, dtype_bytes))
            del x
        flops, nbytes = layer_cost(args, attn, B, T, S, read, written, wbytes)
        fn()  # allocates the cache (prefill), compiles kernels
        if cfg.memory:
            from lab.measure.memory import measure_peak

            before = held()
            peak = measure_peak(fn, dev)
            extra = peak["peak_allocated_bytes"] - (peak["baseline_bytes"] if dev.type == "cuda" else 0)
            act = max(0, int(extra) - max(0, held() - before))
            rec.memory({"weights": wbytes, "kv_cache": held(), "activations": act}, peak,
                       method="weights: the layer's parameters; kv_cache: the cache's buffers + state kept beside it; activations: call peak above the allocations before it")
        rec.time(fn, metric=mode, flops=flops, bytes_moved=nbytes, tokens=B * T)
