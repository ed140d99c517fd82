"""decode: per-token latency and tokens/s of one decode step, at given context lengths and batches.

For each (context, batch) the cache is pre-filled with `context` random tokens (chunked prefill,
untimed), then one step — model call on one token per row, then the sampler — is timed:

  impl=lab            eager steps, end to end (the host's launches inside), each at the next
                      slot (so variants that keep their own state, like a rolling window, see a
                      real continuing sequence); the cache holds context + the timed steps, and
                      the costs use the mean context timed
  impl=lab-cudagraph  (CUDA) the step at slot `context` captured once and replayed
  impl=transformers-static / transformers-dynamic   (peers: [transformers]) batch-1 decode of
                      transformers' LlamaForCausalLM with the same weights: generate(N) minus
                      generate(1), over N-1 tokens

A decode step reads every weight once for the whole batch and each row's K/V, so at small batch it
is memory-bound: bytes = weights + B·model.kv_bytes(context+1) (the K/V of context+1 tokens; a
rolling window's is bounded by the window, a Performer's fixed-size state does not grow); GB/s is
against the copy bandwidth. Memory rows: weights, kv_cache (B·model.kv_bytes(tokens held) after
the measured step), activations (peak of one step above what was allocated before it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from lab.context import RunContext
from lab.records import PointFailed
from lab.measure.timing import Timing, time_fn
from lab.model.generate import chunk_for, decode_cost, prefill_chunked
from lab.model.weights import weight_bytes
from lab.registry import VariantConfig, register

WARMUP_STEPS = 3


@dataclass(frozen=True)
class DecodeConfig(VariantConfig):
    contexts: tuple[int, ...] = ()  # () = by size: small (32, 128), full (512, 2048, 8192)
    batches: tuple[int, ...] = ()  # () = by size: small (1, 4), full (1, 8, 32)
    cuda_graph: bool = True  # on CUDA, also time the step as a CUDA-graph replay
    peers: tuple[str, ...] = ()  # "transformers": its generate() at batch 1, static and dynamic cache
    peer_new_tokens: int = 0  # tokens per peer generate(); 0 = by size: 32 small, 128 full
    memory: bool = True  # record memory by component


PEERS = ("transformers",)


@register("scenario", "decode", config=DecodeConfig)
def run(ctx: RunContext, cfg: DecodeConfig) -> None:
    """per-token decode latency and tokens/s at given contexts and batches"""
    full = ctx.size == "full"
    contexts = tuple(cfg.contexts) or ((512, 2048, 8192) if full else (32, 128))
    batches = tuple(cfg.batches) or ((1, 8, 32) if full else (1, 4))
    unknown = [p for p in cfg.peers if p not in PEERS]
    if unknown:
        from lab.errors import LabError

        raise LabError(f"scenario.peers: unknown peer(s) {unknown}; known: {list(PEERS)}")
    model = ctx.model()
    args, rec = ctx.args, ctx.rec
    wbytes = weight_bytes(model)
    dtype_bytes = torch.finfo(ctx.dtype).bits // 8
    sampler, gen = ctx.sampler(), torch.Generator(ctx.device).manual_seed(ctx.seed)
    measure = rec.measure
    if ctx.device.type != "cuda":
        rec.energy(lambda: None, tokens=1, metric="decode_energy")  # one skipped row saying why: no counter
    for context in contexts:
        for B in batches:
            tokens = torch.randint(0, args.vocab_size, (B, context), device=ctx.device, generator=gen)
            with rec.point(context=context, batch=B, impl="lab"):
                _time_eager(ctx, model, tokens, sampler, gen, wbytes, dtype_bytes, cfg.memory)
            if cfg.cuda_graph and ctx.device.type == "cuda":
                with rec.point(context=context, batch=B, impl="lab-cudagraph"):
                    cache = ctx.make_cache(B, context + 1)
                    prefill_chunked(model, tokens, cache, chunk=chunk_for(B, args.n_heads, context))
                    step = _step(model, cache, tokens[:, -1:], sampler, gen)
                    flops, nbytes = step_cost(model, args, B, context, wbytes, dtype_bytes)
                    rec.time(lambda: step(context), metric="decode", flops=flops, bytes_moved=nbytes, tokens=B,
                             measure=replace(measure, cuda_graph=True))
                    rec.energy(_graphed(lambda: step(context)), tokens=B, metric="decode_energy", min_time_s=0.5)
                    del cache

        if "transformers" in cfg.peers:
            _peer_transformers(ctx, context, cfg.peer_new_tokens or (128 if full else 32), dtype_bytes)


def step_cost(model, args, B: int, context: int, wbytes: int, dtype_bytes: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step with `context` tokens cached: decode_cost's FLOPs; bytes =
    weights + each row's K/V at context+1 tokens as the model's attention keeps them."""
    flops, _ = decode_cost(args, batch=B, context=context, weight_bytes=0, kv_bytes_per_token=0)
    return flops, float(wbytes + B * model.kv_bytes(context + 1, dtype_bytes))


def _graphed(fn):
    """fn captured once in a CUDA graph; returns its replay (energy is then that of the kernels,
    not of idle gaps between Python launches)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # warm-up on a side stream, as capture requires
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _step(model, cache, first: torch.Tensor, sampler, gen):
    """A decode step at a given slot: the model on the last sampled tokens, then the sampler."""
    state = {"tok": first}  # [B, 1]

    @torch.inference_mode()
    def step(slot: int) -> torch.Tensor:
        logits = model(state["tok"], cache=cache, start=slot, last_only=True)[:, -1]  # [B, V]
        state["tok"] = sampler(logits, gen)[:, None]
        return state["tok"]

    return step


def _time_eager(ctx: RunContext, model, tokens, sampler, gen, wbytes: int, dtype_bytes: int, memory: bool) -> None:
    B, context = tokens.shape
    # warm-up is ours (a bounded number of steps); end to end: an eager step's host enqueues ~50
    # launches a layer, for longer than the GPU runs them, and a user waits for both
    measure = replace(ctx.rec.measure, warmup_ms=0.0, cuda_graph=False, end_to_end=True)
    n_steps = WARMUP_STEPS + 1 + measure.reps  # every call writes a new slot (end to end: no retakes)
    cache = ctx.make_cache(B, context + n_steps + 1)
    prefill_chunked(model, tokens, cache, chunk=chunk_for(B, ctx.args.n_heads, context))
    step = _step(model, cache, tokens[:, -1:], sampler, gen)
    slot = [context]

    def advance():
        step(slot[0])
        slot[0] += 1

    for _ in range(WARMUP_STEPS):
        advance()
    ctx.synchronize()
    if memory:
        from lab.measure.memory import measure_peak

        peak = measure_peak(advance, ctx.device)
        extra = int(peak["peak_allocated_bytes"]) - (int(peak["baseline_bytes"]) if ctx.device.type == "cuda" else 0)  # CPU: already a difference
        ctx.rec.memory({"weights": wbytes, "kv_cache": B * model.kv_bytes(slot[0], dtype_bytes), "activations": max(0, extra)}, peak,
                       method=f"weights: parameters; kv_cache: B·model.kv_bytes({slot[0]} tokens held) (the buffers allocated: {int(cache.nbytes())} B); activations: one step's peak above the allocations before it")
    first = slot[0]
    t = time_fn(advance, ctx.device, measure)
    mean_context = (first + slot[0] - 1) / 2  # steps timed ran at contexts first..slot-1
    flops, nbytes = step_cost(model, ctx.args, B, int(round(mean_context)), wbytes, dtype_bytes)
    ctx.rec.add_timing(t, metric="decode", flops=flops, bytes_moved=nbytes, tokens=B, bootstrap=measure.bootstrap,
                       context_timed=mean_context)


def _peer_transformers(ctx: RunContext, context: int, n_new: int, dtype_bytes: int) -> None:
    from lab.model.peers import HAS_TRANSFORMERS, WHY_NOT_TRANSFORMERS

    for impl, cache_impl in (("transformers-static", "static"), ("transformers-dynamic", None)):
        cols = dict(context=context, batch=1, impl=impl)
        if not HAS_TRANSFORMERS:
            ctx.rec.skipped(WHY_NOT_TRANSFORMERS, metric="decode_ms", **cols)
            continue
        with ctx.rec.point(**cols):
            from lab.model.peers import to_transformers

            ref = ctx.model(reference=True)  # the peer runs the unconverted model: its K/V
            hf = ctx._cache.get("peer:transformers")
            if hf is None:
                hf = ctx._cache["peer:transformers"] = to_transformers(ref)
            prompt = torch.randint(0, ctx.args.vocab_size, (1, context), device=ctx.device)
            kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
            if cache_impl:
                kw["cache_implementation"] = cache_impl

            @torch.inference_mode()
            def gen(n):
                return hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, **kw)

            measure = replace(ctx.rec.measure, reps=min(ctx.rec.measure.reps, 5), min_reps=min(ctx.rec.measure.min_reps, 3),
                              warmup_ms=0.0, cuda_graph=False, end_to_end=True)
            gen(n_new)  # compiles (static cache) and warms up
            t1 = time_fn(lambda: gen(1), ctx.device, measure)
            tn = time_fn(lambda: gen(n_new), ctx.device, measure)
            per_token = (tn.samples_ms - np.median(t1.samples_ms)) / (n_new - 1)
            if np.median(per_token) <= 0:  # the difference drowned in timing noise: say so, don't report it
                raise PointFailed(f"generate({n_new}) was not measurably slower than generate(1) "
                                  f"({tn.median_ms:.2f} vs {t1.median_ms:.2f} ms): raise scenario.peer_new_tokens")
            t = Timing(per_token, f"{tn.method}; (generate({n_new}) - median generate(1)) / {n_new - 1}")
            flops, nbytes = step_cost(ref, ctx.args, 1, context + n_new // 2, weight_bytes(hf), dtype_bytes)
            ctx.rec.add_timing(t, metric="decode", flops=flops, bytes_moved=nbytes, tokens=1, bootstrap=measure.bootstrap)
