"""Benchmark suite: weight-only quantized GEMV/GEMM at decode batch sizes (M = 1, 4, 16).

Implementations, on the same bf16 x [M, K] and weight W [N, K] (nn.Linear layout):
  impl=triton-int4     kernels.wo_matmul, int4 group 128 (64 where K = 576 is no multiple of
                       128), symmetric (quant=int4-gG-sym) and asymmetric with zero-points
                       (quant=int4-gG-asym)
  impl=triton-int4-mma the same codes in the tensor-core layout (quantize_int4(layout="mma"):
                       mma.sync with the weight as A, x as B, one launch per 8 rows of x)
  impl=triton-int8     kernels.wo_matmul, int8 per output channel
  impl=copy-same-bytes a device copy moving as many bytes as the int4 weight (+ x, y), timed the
                       same way: the floor any kernel of this size meets (launch, ramp, drain);
                       `speedup_bound_vs_cublas` = cuBLAS / this is the most an int4 kernel of
                       these bytes could gain (below 3x on the small shapes)
  impl=cublas-bf16     F.linear(x, W) in bf16: the dense baseline (cuBLAS)
  impl=tinygemm-int4   torch._weight_int4pack_mm (gpt-fast / torchao's int4 kernel) on the same
                       int4 codes and scales, when this torch has it on CUDA
  impl=torch-int8      torch._weight_int8pack_mm on the same int8 codes, when available
Bytes: the weight as stored (codes + scales + zero-points, or bf16) plus x and y
(kernels.wo_matmul.bytes_moved): at M <= 16 the weight dominates, so GB/s against the copy
bandwidth is the figure of merit and `speedup_vs_cublas` (median latency ratio) the headline; the
goal is >= 3x for int4 at M = 1. Errors: max|y - y64| / max|y64| against x @ dequantize(qw).T in
float64 (the kernel's exact task), and separately against x @ W.T (what quantization costs).
Full (GPU): (N, K) = 4096×4096, 14336×4096, 4096×14336 (Llama-3-8B) and 1536×576, 576×1536,
49152×576 (SmolLM2: up/gate, down, lm_head). Small (CPU, interpreter): one tiny shape.

`tune(...)` sweeps tile configs with CUDA-graph replays over enough weight copies to defeat L2,
and prints the best per shape: how kernels.wo_matmul.pick_config's table was set.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
import triton

from kernels.wo_matmul import (
    MmaConfig,
    QuantizedWeight,
    WoConfig,
    bytes_moved,
    dequantize,
    flops,
    int4_codes,
    pick_mma_config,
    quantize_int4,
    quantize_int8,
    wo_matmul,
)
from lab.benchmarks._common import WAYS, bench_dtype, bench_measure, copy_same_bytes, input_copies, rel_err, stream_us, time_ways
from lab.records import PointFailed, Recorder

GROUP = 128


def group_for(K: int) -> int:
    """128, or 64 where K is no multiple of 128 (SmolLM2's K = 576 = 9·64)."""
    return GROUP if K % GROUP == 0 else 64


def shapes(size: str) -> list[tuple[int, int]]:
    """(N, K)."""
    if size == "small":
        return [(40, 256)]
    return [(4096, 4096), (14336, 4096), (4096, 14336), (1536, 576), (576, 1536), (49152, 576)]


def batches(size: str) -> list[int]:
    return [1, 3] if size == "small" else [1, 4, 16]


# ---- peers from torch (private ops: present or not depending on the build) --------------------
def tinygemm_pack(qw: QuantizedWeight) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Our int4 codes in tinygemm's layout: uint8 with the EVEN k in the high nibble, packed by
    torch._convert_weight_to_int4pack; scales_and_zeros [K/G, N, 2] bf16 with
    w = (code - 8)·scale + zero, so zero = (8 - zero_point)·scale (0 when symmetric)."""
    N, K = qw.shape
    codes = int4_codes(qw)  # [N, K] 0..15
    w_uint8 = (codes[:, 0::2] << 4 | codes[:, 1::2]).to(torch.uint8)
    inner = next(t for t in (8, 4, 2) if K % (t * 32) == 0)
    packed = torch._convert_weight_to_int4pack(w_uint8, inner)
    scale = qw.scale.float()
    zp = qw.zero.float() if qw.zero is not None else torch.full_like(scale, 8.0)
    sz = torch.stack([scale, (8.0 - zp) * scale], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return packed, sz, qw.group_size



def _time(rec: Recorder, fns: list, measure, cost: dict, base: dict, key: str) -> None:
    """fns[i] runs the same call on weight copy i, timed three ways (_common.time_ways; the goal's
    comparison is `_stream`), and `speedup_vs_cublas[_graph|_stream]` from each. `base` collects
    cublas-bf16's medians under `key` (it is timed first at every point)."""
    for suffix, ms in time_ways(rec, fns, measure, cost).items():
        if key == "cublas":
            base[suffix] = ms
        elif key == "copy" and suffix in base:
            rec.metric(f"speedup_bound_vs_cublas{suffix}", base[suffix] / ms, "x",
                       method=f"median latency ({WAYS[suffix]}), cublas-bf16 / a copy of the int4 weight's bytes")
        elif suffix in base:
            rec.metric(f"speedup_vs_cublas{suffix}", base[suffix] / ms, "x", method=f"median latency ({WAYS[suffix]}), cublas-bf16 / this")


def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    dtype = bench_dtype(device)
    measure = bench_measure(rec, device)
    gen = torch.Generator(device=device).manual_seed(0)
    for N, K in shapes(size):
        w = (torch.randn(N, K, device=device, generator=gen) * 0.02).to(dtype)
        G = group_for(K)
        int4 = {f"int4-g{G}-sym": quantize_int4(w, G, symmetric=True), f"int4-g{G}-asym": quantize_int4(w, G, symmetric=False)}
        schemes = {**{("triton-int4", q): qw for q, qw in int4.items()},
                   **{("triton-int4-mma", q): quantize_int4(w, G, q.endswith("-sym"), layout="mma") for q in int4},
                   ("triton-int8", "int8"): quantize_int8(w)}
        for M in batches(size):
            cols = dict(kernel="wo_matmul", M=M, N=N, K=K, dtype=str(dtype).removeprefix("torch."))
            with rec.point(**cols):
                x = torch.randn(M, K, device=device, dtype=dtype, generator=gen)
                truth = x.double() @ w.double().T  # unquantized
                method = "max|y-y64|/max|y64| vs x @ dequantize(qw).T in float64 on the benchmark inputs"
                method_w = "max|y-y64|/max|y64| vs x @ W.T in float64 (the unquantized weight)"
                latency = {}  # cublas-bf16's median ms: "" eager, "_graph" CUDA-graph replay

                with rec.point(impl="cublas-bf16", quant="none"):
                    ws = input_copies(lambda i: w if i == 0 else w.clone(), w.numel() * w.element_size(), device)
                    fns = [lambda wi=wi: F.linear(x, wi) for wi in ws]
                    rec.metric("max_rel_err", rel_err(fns[0](), truth), "", method=method_w)
                    _time(rec, fns, measure, dict(flops=flops(M, N, K), bytes_moved=bytes_moved(M, N, K, x_bytes=x.element_size())), latency, "cublas")
                    del ws, fns

                with rec.point(impl="copy-same-bytes", quant=f"int4-g{G}-sym", group_size=G):
                    nbytes = bytes_moved(M, N, K, int4[f"int4-g{G}-sym"], x_bytes=x.element_size())
                    fns = copy_same_bytes(nbytes, device)
                    _time(rec, fns, measure, dict(bytes_moved=nbytes), latency, "copy")
                    del fns

                for (impl, quant), qw in schemes.items():
                    with rec.point(impl=impl, quant=quant, group_size=qw.group_size):
                        y = wo_matmul(x, qw)
                        rec.metric("max_rel_err", rel_err(y, x.double() @ dequantize(qw, torch.float64).T), "", method=method)
                        rec.metric("max_rel_err_vs_unquantized", rel_err(y, truth), "", method=method_w)
                        qws = input_copies(lambda i: qw if i == 0 else qw.clone(), qw.nbytes, device)
                        fns = [lambda q=q: wo_matmul(x, q) for q in qws]
                        _time(rec, fns, measure, dict(flops=flops(M, N, K), bytes_moved=bytes_moved(M, N, K, qw, x_bytes=x.element_size())), latency, impl)
                        del qws, fns

                for quant in int4:
                    with rec.point(impl="tinygemm-int4", quant=quant, group_size=G):
                        if device.type != "cuda" or not hasattr(torch, "_weight_int4pack_mm"):
                            rec.skipped("torch._weight_int4pack_mm needs CUDA and a torch that has it")
                            continue
                        qw = int4[quant]
                        try:
                            packed, sz, g = tinygemm_pack(qw)
                            y = torch._weight_int4pack_mm(x, packed, g, sz)
                        except (RuntimeError, TypeError, StopIteration) as e:
                            rec.skipped(f"torch._weight_int4pack_mm failed here: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                            continue
                        err = rel_err(y, x.double() @ dequantize(qw, torch.float64).T)
                        rec.metric("max_rel_err", err, "", method=method + " (scales rounded to bf16)")
                        if err > 5e-2:
                            raise PointFailed(f"tinygemm output does not match the dequantized weight (rel err {err:.2g}): layout mismatch")
                        packs = input_copies(lambda i: (packed, sz) if i == 0 else (packed.clone(), sz.clone()), qw.nbytes, device)
                        fns = [lambda p=p, z=z: torch._weight_int4pack_mm(x, p, g, z) for p, z in packs]
                        _time(rec, fns, measure, dict(flops=flops(M, N, K), bytes_moved=bytes_moved(M, N, K, qw, x_bytes=x.element_size())), latency, impl)
                        del packs, fns

                with rec.point(impl="torch-int8", quant="int8"):
                    qw = schemes[("triton-int8", "int8")]
                    if device.type != "cuda" or not hasattr(torch, "_weight_int8pack_mm"):
                        rec.skipped("torch._weight_int8pack_mm needs CUDA and a torch that has it")
                    else:
                        scales = qw.scale.to(dtype)
                        try:
                            y = torch._weight_int8pack_mm(x, qw.qweight, scales)
                        except (RuntimeError, NotImplementedError) as e:
                            rec.skipped(f"torch._weight_int8pack_mm failed here: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                        else:
                            rec.metric("max_rel_err", rel_err(y, x.double() @ dequantize(qw, torch.float64).T), "", method=method + " (scales rounded to bf16)")
                            packs = input_copies(lambda i: qw.qweight if i == 0 else qw.qweight.clone(), qw.nbytes, device)
                            fns = [lambda q=q: torch._weight_int8pack_mm(x, q, scales) for q in packs]
                            _time(rec, fns, measure, dict(flops=flops(M, N, K), bytes_moved=bytes_moved(M, N, K, qw, x_bytes=x.element_size())), latency, "torch-int8")
                            del packs, fns
                del x, truth
        del w, schemes
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ---- tuning -----------------------------------------------------------------------------------
FMA_TILES = [(8, 512, 4), (16, 256, 4), (16, 512, 4), (16, 1024, 8), (32, 512, 8)]  # int8, M = 1: (block_n, block_k, warps)
DOT_TILES = [(16, 256, 4), (32, 128, 4), (64, 128, 4), (64, 256, 8), (128, 128, 8)]
# int4, M = 1 (_int4_gemv_kernel): (block_n, block_k, warps, unroll, x_vec). With block_k =
# 1024·warps one tile row spans every thread (4 words each), so the block_n rows sit in each
# thread's registers and share its x values; narrower tiles spread rows over threads.
INT4_GEMV_TILES = [(16, 512, 8, 16, True), (8, 1024, 8, 16, True), (4, 64, 1, 16, True), (2, 1024, 1, 16, True),
                   (16, 512, 4, 16, True), (8, 512, 4, 16, True), (32, 512, 4, 16, True), (32, 256, 2, 16, True),
                   (64, 512, 8, 16, True), (64, 256, 4, 16, True), (32, 1024, 8, 16, True), (16, 256, 2, 16, True),
                   (32, 512, 4, 8, True), (64, 512, 4, 8, True), (16, 128, 1, 16, True), (8, 256, 1, 16, True)]


# int4 in the mma layout: (row_tiles, k_warps, unroll, maxnreg)
MMA_TILES = list(itertools.product((1, 2, 4), (2, 4, 8), (4, 8), (None, 128, 168)))


def tune_configs(M: int, bits: int, group: int, K: int = 4096, layout: str = "rows", N: int | None = None) -> list:
    """int4 at M = 1: the GEMV kernel's tiles (block_k at most K rounded up to a power of two);
    otherwise at M = 1 both the FMA and the tl.dot path, at M > 1 the tl.dot path. The mma
    layout: MmaConfig tilings, led by pick_mma_config's choice for (M, N, K) when N is given, so
    that the sweep always measures the default it would replace."""
    if layout == "mma":
        out = [pick_mma_config(M, N, K)] if N else []
        return list(dict.fromkeys(out + [MmaConfig(r, k, u, maxnreg=n) for r, k, u, n in MMA_TILES]))
    if bits == 4 and M == 1:
        out = [WoConfig(n, max(group, min(k, triton.next_power_of_2(K))), 1, w, 1, False, u, xv) for n, k, w, u, xv in INT4_GEMV_TILES]
        return list(dict.fromkeys(out))
    tiles = [(t, False) for t in FMA_TILES] * (M == 1) + [(t, True) for t in DOT_TILES]
    out = []
    for ((n, k, w), dot), s in itertools.product(tiles, (1, 2, 4, 8)):
        if bits == 4:
            k = max(group, k // group * group)
        out.append(WoConfig(n, k, s, w, 3, dot))
    return list(dict.fromkeys(out))


def tune(shape_list=None, Ms=(1, 4, 16), schemes=("int4", "int4-mma", "int8"), l2_bytes: float = 100e6, top: int = 5) -> list[dict]:
    """Sweep tune_configs on the current GPU (each config also checked against the dequantized
    reference); prints the best per shape and returns one row per (N, K, M, scheme, config).
    Schemes: int4 (rows layout), int4-mma (the tensor-core layout), int8."""
    dev = torch.device("cuda")
    rows = []
    for N, K in shape_list or shapes("full"):
        w = torch.randn(N, K, device=dev) * 0.02
        G = group_for(K)
        for scheme in schemes:
            qw = quantize_int8(w) if scheme == "int8" else quantize_int4(w, G, True, layout="mma" if scheme == "int4-mma" else "rows")
            copies = int(min(64, max(2, math.ceil(l2_bytes / qw.nbytes))))
            qws = [qw.clone() for _ in range(copies)]
            wd = dequantize(qw, torch.float64)
            for M in Ms:
                x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
                ref = x.double() @ wd.T
                dense = [w.to(torch.bfloat16).clone() for _ in range(min(copies, max(2, math.ceil(l2_bytes / (N * K * 2)))))]
                base = stream_us([lambda d=d: F.linear(x, d) for d in dense])
                results = []
                for cfg in tune_configs(M, qw.bits, G, K, qw.layout, N):
                    try:
                        err = rel_err(wo_matmul(x, qws[0], cfg), ref)
                        us = stream_us([lambda q=q: wo_matmul(x, q, cfg) for q in qws])
                    except Exception as e:  # a config that does not compile or fit: skip it
                        print(f"  skip {cfg}: {type(e).__name__}: {str(e)[:120]}")
                        continue
                    if err > 2e-2:
                        print(f"  WRONG {cfg}: rel err {err:.3g}")
                        continue
                    results.append((us, cfg))
                    rows.append(dict(N=N, K=K, M=M, scheme=scheme, cfg=cfg, us=us, cublas_us=base))
                results.sort(key=lambda r: r[0])
                heur = stream_us([lambda q=q: wo_matmul(x, q) for q in qws])
                peer = ""
                if scheme.startswith("int4") and hasattr(torch, "_weight_int4pack_mm"):
                    try:
                        packs = [tinygemm_pack(q) for q in qws]
                        peer = f" tinygemm {stream_us([lambda p=p: torch._weight_int4pack_mm(x, p[0], p[2], p[1]) for p in packs]):.1f}us"
                    except (RuntimeError, TypeError, StopIteration) as e:
                        peer = f" tinygemm failed ({type(e).__name__})"
                best = " | ".join(f"{us:.1f}us {c}" for us, c in results[:top])
                print(f"N={N} K={K} M={M} {scheme}: cublas {base:.1f}us{peer} heuristic {heur:.1f}us best {best}", flush=True)
            del qws
        del w
        torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    tune()
