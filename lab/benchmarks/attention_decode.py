"""Benchmark suite: decode attention (one query per sequence), ours over a paged and over a
contiguous cache, beside torch SDPA's FLASH and cuDNN backends on the same KV held contiguously.

Full (GPU): KV length 1K…128K × batch 1…64 (combinations whose bf16 KV exceeds 8 GB are left
out), heads 32/8 (D = 128, Llama-3-8B-like) and 9/3 (D = 64, SmolLM2). Rows:
  impl=triton  kv=paged     bf16, blocks of P = 16 in shuffled physical order (a real allocator)
  impl=triton  kv=contiguous bf16, the [B, H_kv, S, D] cache viewed as one block per sequence
  impl=triton  kv=contiguous fp8 e4m3 (per-head scales) and int8 (per-token scales)
  impl=sdpa-flash / sdpa-cudnn  kv=contiguous bf16
Bytes = K and V read + q read + o written (kernels.attention_decode.bytes_moved): achieved GB/s
against the measured copy bandwidth is the figure of merit. `paged_vs_contiguous` records the
latency ratio of our kernel on the two layouts. On CUDA every implementation is timed twice:
as called (`latency_*`) and replayed from a CUDA graph (`latency_graph_*`). Errors: vs a float64 reference for sequence 0
(quantized rows: on the dequantized values, and separately vs the unquantized cache).
Small (CPU, interpreter): one tiny float32 shape.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from kernels.attention_decode import (
    KVLayout,
    bytes_moved,
    decode_reference,
    flops,
    paged_decode_attention,
    paged_from_contiguous,
    quantize_kv,
)
from lab.benchmarks._common import bench_dtype, bench_measure, rel_err
from lab.records import Recorder

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    HAS_SDPA_KERNEL = True
except ImportError:
    HAS_SDPA_KERNEL = False

KV_CAP_BYTES = 8e9
PAGE = 16
QUANT = {"fp8": (torch.float8_e4m3fn, "head"), "int8": (torch.int8, "token")}


def shapes(size: str) -> list[tuple[int, int, int, int, int]]:
    """(B, H, H_kv, L, D)."""
    if size == "small":
        return [(2, 4, 2, 40, 32)]
    out = []
    for H, H_kv, D in ((32, 8, 128), (9, 3, 64)):
        for L in (1024, 8192, 32768, 131072):
            for B in (1, 16, 64):
                if 2 * B * L * H_kv * D * 2 <= KV_CAP_BYTES:
                    out.append((B, H, H_kv, L, D))
    return out


def _time(rec: Recorder, fn, measure, cost: dict) -> float:
    """Median ms of fn timed as called (host launch overhead included), plus, on CUDA, of fn
    replayed from a CUDA graph (`latency_graph_*` rows: the kernels alone, as a graph-captured
    decode step would run them; at small B·L the two differ by the launcher's host time)."""
    t = rec.time(fn, measure=measure, **cost).median_ms
    if rec.device.type == "cuda":
        try:  # the kernels' own time: what the paged-vs-contiguous ratio compares
            t = rec.time(fn, metric="latency_graph", measure=replace(measure, cuda_graph=True), **cost).median_ms
        except RuntimeError as e:
            rec.failed(e, metric="latency_graph_ms")
    return t


def _rel_err(o: torch.Tensor, ref: torch.Tensor) -> float:
    return rel_err(o[:1], ref)  # the reference covers sequence 0


def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    dtype = bench_dtype(device)
    measure = bench_measure(rec, device)
    gen = torch.Generator(device=device).manual_seed(0)
    for B, H, H_kv, L, D in shapes(size):
        cols = dict(kernel="attention_decode", B=B, H=H, H_kv=H_kv, L=L, D=D, dtype=str(dtype).removeprefix("torch."))
        with rec.point(**cols):
            q = torch.randn(B, H, D, device=device, dtype=dtype, generator=gen)
            k = torch.randn(B, H_kv, L, D, device=device, dtype=dtype, generator=gen)
            v = torch.randn(B, H_kv, L, D, device=device, dtype=dtype, generator=gen)
            lens = torch.full((B,), L, dtype=torch.int32, device=device)
            contiguous = paged_from_contiguous(k, v, lens)  # zero-copy: one block of P = L per sequence
            ref = decode_reference(q[:1], k[:1], v[:1], contiguous.block_table[:1], lens[:1])  # [1, H, D] float64
            method = "max|out-ref|/max|ref| vs float64 reference on the benchmark inputs (sequence 0)"
            cost = lambda kv_bytes, scale_bytes=0: dict(
                flops=flops(H, D, B * L),
                bytes_moved=bytes_moved(B, H, H_kv, D, B * L, kv_bytes, q.element_size(), scale_bytes))
            out = torch.empty_like(q)
            latency = {}

            with rec.point(impl="triton", kv="paged", page_size=PAGE, kv_dtype=cols["dtype"]):
                paged = paged_from_contiguous(k, v, lens, block_size=PAGE, shuffle=True,
                                              generator=torch.Generator().manual_seed(B * L))
                fn = lambda: paged_decode_attention(q, **paged.kwargs(), out=out)
                rec.metric("max_rel_err", _rel_err(fn(), ref), "", method=method)
                latency["paged"] = _time(rec, fn, measure, cost(k.element_size()))
                del paged, fn

            with rec.point(impl="triton", kv="contiguous", page_size=L, kv_dtype=cols["dtype"]):
                fn = lambda: paged_decode_attention(q, **contiguous.kwargs(), out=out)
                rec.metric("max_rel_err", _rel_err(fn(), ref), "", method=method)
                latency["contiguous"] = _time(rec, fn, measure, cost(k.element_size()))
                rec.metric("paged_vs_contiguous", latency["paged"] / latency["contiguous"], "x",
                           method=f"median latency (CUDA-graph replay on GPU), paged P={PAGE} shuffled / contiguous view, same kernel")

            for name, (qdtype, per) in QUANT.items():
                with rec.point(impl="triton", kv="contiguous", page_size=L, kv_dtype=name, scale=f"per {per}"):
                    kq, ks = quantize_kv(k, qdtype, per, KVLayout.HND)  # [B, H_kv, L, D] is HND with P = L
                    vq, vs = quantize_kv(v, qdtype, per, KVLayout.HND)
                    table = contiguous.block_table
                    fn = lambda: paged_decode_attention(q, kq, vq, table, lens, k_scale=ks, v_scale=vs, out=out)
                    o = fn()
                    sl = (lambda s: s[:1]) if per == "token" else (lambda s: s)
                    ref_q = decode_reference(q[:1], kq[:1], vq[:1], table[:1], lens[:1], k_scale=sl(ks), v_scale=sl(vs))
                    rec.metric("max_rel_err", _rel_err(o, ref_q), "", method=method + ", dequantized values")
                    rec.metric("max_rel_err_vs_unquantized_kv", _rel_err(o, ref), "", method=method + ", vs the unquantized cache")
                    _time(rec, fn, measure, cost(kq.element_size(), 4 if per == "token" else 0))
                    del kq, vq, ks, vs, fn

            for name, attr in (("sdpa-flash", "FLASH_ATTENTION"), ("sdpa-cudnn", "CUDNN_ATTENTION")):
                with rec.point(impl=name, kv="contiguous", page_size=L, kv_dtype=cols["dtype"]):
                    if device.type != "cuda" or not HAS_SDPA_KERNEL or not hasattr(SDPBackend, attr):
                        rec.skipped(f"{name} needs CUDA and torch.nn.attention.SDPBackend.{attr}")
                        continue
                    q4 = q[:, :, None]  # [B, H, 1, D]
                    fn = lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=H != H_kv)
                    with sdpa_kernel(getattr(SDPBackend, attr)):
                        try:
                            o = fn()
                        except RuntimeError as e:
                            rec.skipped(f"{name} cannot run B={B} H={H}/{H_kv} L={L} D={D}: {str(e).splitlines()[0][:200]}")
                            continue
                        rec.metric("max_rel_err", _rel_err(o[:, :, 0], ref), "", method=method)
                        _time(rec, fn, measure, cost(k.element_size()))
            del q, k, v, contiguous
            if device.type == "cuda":
                torch.cuda.empty_cache()
