"""Benchmark suite: prefill attention, ours (Triton FlashAttention-2) beside torch SDPA's FLASH and
cuDNN backends, on the same bf16 inputs.

Full (GPU): B·S = 16K tokens, S = 1K…16K, H = 32, D = 64 and 128, causal and not, plus GQA 32/8
at S = 4K. FLOPs 4·B·H·T·S·D (halved when causal), bytes q, k, v read + o written
(kernels.attention_prefill.flops / bytes_moved). Every implementation's output is compared with a
float64 reference on a slice (batch 0, heads 0 and H-1, the last 128 queries, all keys: with
bottom-right causal alignment those rows see exactly what they see in the full problem).
Small (CPU, interpreter): two tiny shapes in float32, SDPA peers recorded as not run.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from kernels.attention_prefill import attention_reference, bytes_moved, flash_attention, flops
from lab.benchmarks._common import bench_dtype, bench_measure, rel_err
from lab.records import Recorder

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    HAS_SDPA_KERNEL = True
except ImportError:  # torch < 2.3
    HAS_SDPA_KERNEL = False

REF_ROWS = 128


def shapes(size: str) -> list[tuple[int, int, int, int, int, int, bool]]:
    """(B, H, H_kv, T, S, D, causal)."""
    if size == "small":
        return [(1, 2, 1, 40, 40, 32, True), (1, 2, 2, 24, 33, 32, False)]
    out = []
    for D in (64, 128):
        for S in (1024, 2048, 4096, 8192, 16384):
            for causal in (True, False):
                out.append((16384 // S, 32, 32, S, S, D, causal))
    out += [(4, 32, 8, 4096, 4096, 128, True), (4, 32, 8, 4096, 4096, 128, False)]
    return out


def _peers(device: torch.device, gqa: bool):
    """name -> (backend or None, reason it cannot run here or None)."""
    peers = {}
    for name, attr in (("sdpa-flash", "FLASH_ATTENTION"), ("sdpa-cudnn", "CUDNN_ATTENTION")):
        if device.type != "cuda":
            peers[name] = (None, f"{name} needs CUDA")
        elif not HAS_SDPA_KERNEL or not hasattr(SDPBackend, attr):
            peers[name] = (None, f"this torch has no SDPBackend.{attr}")
        else:
            peers[name] = (getattr(SDPBackend, attr), None)
    return peers


def _rel_err(o: torch.Tensor, ref: torch.Tensor, heads: list[int]) -> float:
    return rel_err(o[:1, heads, -ref.shape[2]:], ref)  # the reference covers a slice


def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    dtype = bench_dtype(device)
    measure = bench_measure(rec, device)
    gen = torch.Generator(device=device).manual_seed(0)
    for B, H, H_kv, T, S, D, causal in shapes(size):
        cols = dict(kernel="attention_prefill", B=B, H=H, H_kv=H_kv, T=T, S=S, D=D, causal=causal, dtype=str(dtype).removeprefix("torch."))
        with rec.point(**cols):
            q = torch.randn(B, H, T, D, device=device, dtype=dtype, generator=gen)
            k = torch.randn(B, H_kv, S, D, device=device, dtype=dtype, generator=gen)
            v = torch.randn(B, H_kv, S, D, device=device, dtype=dtype, generator=gen)
            heads = sorted({0, H - 1})
            r = min(REF_ROWS, T)
            ref = attention_reference(q[:1, heads, T - r:], k[:1, [h // (H // H_kv) for h in heads]], v[:1, [h // (H // H_kv) for h in heads]], causal=causal)
            cost = dict(flops=flops(B, H, T, S, D, causal=causal), bytes_moved=bytes_moved(B, H, H_kv, T, S, D, q.element_size()))
            method = f"max|out-ref|/max|ref| vs float64 reference on the benchmark inputs (batch 0, heads {heads}, last {r} queries)"

            with rec.point(impl="triton"):
                out = torch.empty_like(q)
                fn = lambda: flash_attention(q, k, v, causal=causal, out=out)
                o = fn()
                rec.metric("max_rel_err", _rel_err(o, ref, heads), "", method=method)
                rec.time(fn, measure=measure, **cost)

            for name, (backend, reason) in _peers(device, H != H_kv).items():
                with rec.point(impl=name):
                    if backend is None:
                        rec.skipped(reason)
                        continue
                    fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=H != H_kv)
                    with sdpa_kernel(backend):
                        try:
                            o = fn()
                        except RuntimeError as e:  # backend refuses this shape/dtype/GPU
                            rec.skipped(f"{name} cannot run B={B} H={H}/{H_kv} S={S} D={D}: {str(e).splitlines()[0][:200]}")
                            continue
                        rec.metric("max_rel_err", _rel_err(o, ref, heads), "", method=method)
                        rec.time(fn, measure=measure, **cost)
            del q, k, v


# ---- tuning -----------------------------------------------------------------------------------
TUNE_TILES = [(128, 64, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4), (128, 64, 8, 5), (128, 128, 8, 2),
              (128, 128, 8, 3), (128, 32, 8, 4), (64, 64, 4, 3), (64, 128, 4, 2), (64, 128, 4, 3)]  # (BLOCK_M, BLOCK_N, warps, stages)


def tune(shape_list=((4, 32, 32, 4096, 4096, 128, False), (4, 32, 8, 4096, 4096, 128, False)),
         tiles=TUNE_TILES) -> list[dict]:
    """Time each tile config alone (the autotuner given one config at a time) against SDPA-cuDNN
    and -flash on the same inputs; prints one line per shape, best first. GPU only."""
    import triton
    from triton.testing import do_bench

    import kernels.attention_prefill as ap

    dev, rows = torch.device("cuda"), []
    saved = ap._gpu_configs
    try:
        for B, H, H_kv, T, S, D, causal in shape_list:
            q = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
            k = torch.randn(B, H_kv, S, D, device=dev, dtype=torch.bfloat16)
            v = torch.randn(B, H_kv, S, D, device=dev, dtype=torch.bfloat16)
            tf = lambda ms: flops(B, H, T, S, D, causal=causal) / ms / 1e9
            peers = {}
            for name, (backend, _) in _peers(dev, H != H_kv).items():
                if backend is not None:
                    with sdpa_kernel(backend):
                        peers[name] = tf(do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=H != H_kv), return_mode="median"))
            res = []
            for m, n, w, s in tiles:
                ap._gpu_configs = lambda c=(m, n, w, s): [triton.Config({"BLOCK_M": c[0], "BLOCK_N": c[1]}, num_warps=c[2], num_stages=c[3])]
                ap._tuned = None
                try:
                    t = tf(do_bench(lambda: flash_attention(q, k, v, causal=causal), return_mode="median"))
                except Exception as e:  # out of shared memory, registers …: skip it
                    print(f"  skip {(m, n, w, s)}: {type(e).__name__}: {str(e)[:100]}")
                    continue
                res.append((t, (m, n, w, s)))
                rows.append(dict(B=B, H=H, H_kv=H_kv, S=S, D=D, causal=causal, tile=(m, n, w, s), tflops=t, **{f"{p}_tflops": x for p, x in peers.items()}))
            res.sort(reverse=True)
            cud = peers.get("sdpa-cudnn", float("nan"))
            print(f"B={B} H={H}/{H_kv} S={S} D={D} causal={causal}: " + " ".join(f"{p} {x:.0f}" for p, x in peers.items())
                  + " | " + " ".join(f"{c}:{t:.0f}({t / cud:.3f})" for t, c in res[:4]), flush=True)
            del q, k, v
    finally:
        ap._gpu_configs, ap._tuned = saved, None
    return rows
