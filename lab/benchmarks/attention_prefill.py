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

from kernels.attention_prefill import TMA_2CTA, WARP_SPECIALIZED, PrefillConfig, attention_reference, bytes_moved, flash_attention, flops
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
# (B, H, H_kv, T, S, D, causal): the three shapes under 0.8x SDPA-cuDNN at S >= 4K, then two controls
TUNE_SHAPES = [(4, 32, 32, 4096, 4096, 128, False), (2, 32, 32, 8192, 8192, 128, False), (4, 32, 8, 4096, 4096, 128, True),
               (4, 32, 32, 4096, 4096, 128, True), (1, 32, 32, 16384, 16384, 128, False)]
TUNE_CONFIGS = [
    PrefillConfig(128, 64, 8, 3),  # the plain FA2 tile (the rule's pick before the Hopper options)
    TMA_2CTA, PrefillConfig(128, 64, 8, 2, tma=True, lazy_rescale=True, maxnreg=128),
    # warp-specialized (non-causal only): a producer warp group and two consumer groups of 4 warps,
    # 64 rows each (3 stages: NaNs with Triton 3.6, refused by PrefillConfig.check)
    PrefillConfig(128, 64, 4, 2, tma=True, warp_specialize=True), WARP_SPECIALIZED,
]


def tune(shape_list=TUNE_SHAPES, configs=TUNE_CONFIGS, rep_ms: int = 150) -> list[dict]:
    """Time each PrefillConfig alone against SDPA-cuDNN and -flash on the same bf16 inputs, and check
    its output against cuDNN's (max|o - o_cudnn| / max|o_cudnn|, bf16 rounding: ~1e-2). Prints one
    line per config: TFLOP/s, then the ratios to cuDNN and flash. GPU only."""
    from triton.testing import do_bench

    dev, rows = torch.device("cuda"), []
    for B, H, H_kv, T, S, D, causal in shape_list:
        q = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(B, H_kv, S, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn(B, H_kv, S, D, device=dev, dtype=torch.bfloat16)
        tf = lambda ms: flops(B, H, T, S, D, causal=causal) / ms / 1e9
        bench = lambda fn: tf(do_bench(fn, rep=rep_ms, return_mode="median"))
        peers, ref = {}, None
        for name, (backend, _) in _peers(dev, H != H_kv).items():
            if backend is not None:
                fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=H != H_kv)
                with sdpa_kernel(backend):
                    o = fn()
                    ref = o.float() if name == "sdpa-cudnn" or ref is None else ref
                    peers[name] = bench(fn)
        cud, fla = peers.get("sdpa-cudnn", float("nan")), peers.get("sdpa-flash", float("nan"))
        print(f"B={B} H={H}/{H_kv} S={S} D={D} causal={causal}: cudnn {cud:.0f} flash {fla:.0f} TFLOP/s", flush=True)
        out = torch.empty_like(q)
        for c in configs:
            if c.warp_specialize and causal:  # the launcher would run it unspecialized (_ws_ok)
                continue
            try:
                o = flash_attention(q, k, v, causal=causal, out=out, config=c)
                err = float((o.float() - ref).abs().max() / ref.abs().max()) if ref is not None else float("nan")
                t = bench(lambda: flash_attention(q, k, v, causal=causal, out=out, config=c))
            except Exception as e:  # out of shared memory, a compiler pass that refuses the loop …
                print(f"  {c!s:30s} skip: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}", flush=True)
                continue
            flag = "" if err < 2e-2 else "  WRONG"
            print(f"  {c!s:30s} {t:5.0f}  {t / cud:.3f}x cudnn  {t / fla:.3f}x flash  err {err:.1e}{flag}", flush=True)
            rows.append(dict(B=B, H=H, H_kv=H_kv, S=S, D=D, causal=causal, config=str(c), tflops=t, max_rel_err_vs_cudnn=err,
                             **{f"{p}_tflops": x for p, x in peers.items()}))
        del q, k, v, out
    return rows
