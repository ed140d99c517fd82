"""Whether the int4 GEMV's second step would rather find its weight in L2 (session 29). The
per-warp timeline (int4_timeline.py) put the last data at 4096² ~0.6 µs after the loads-only
kernel's: a warp issues its next step's loads only after this step's math. Here a copy of
`_int4_mma_kernel` (made from this tree's source at run time) asks L2 for the next PF chunks of
each warp (`prefetch.global.L2`, one a lane a chunk) right after its first loads, so that the
next step's loads hit L2. Session 10's rolling prefetch (int4_prefetch.py at commit c05e8c6)
was never a consistent win, before the stagger and the one-barrier sum. Timed against the
launcher's kernel on the same inputs (stream, interleaved rounds). Needs a CUDA GPU:

    python experiments/probes/int4_prefetch_next.py [--shapes 4096x4096,...] [--rounds 5]
"""
import inspect, os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder: int4_pick

import torch
import triton

import int4_pick  # its weights, cuBLAS timing, interleaved timing and --shapes
from _patched import import_source
import kernels.wo_matmul as wm

SHAPES = int4_pick.SHAPES if "--shapes" in sys.argv else [(4096, 4096), (4096, 14336), (14336, 4096)]
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 5

HEADER = '''
import kernels.wo_matmul as _w
globals().update({k: v for k, v in vars(_w).items() if not k.startswith("__")})


@triton.jit
def _prefetch_l2(p):
    """Asks L2 for the line at p (per element); returns 0."""
    return tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [p], dtype=tl.int32, is_pure=False, pack=1)


'''
EDITS = [
    ("def _int4_mma_kernel(", "def _int4_mma_kernel_pf("),
    ("SUM_ASM: tl.constexpr,\n", "    PF: tl.constexpr,\n"),
    ("    steps = tl.cdiv(n_chunks, K_WARPS)\n", None),  # the prefetches go before it
]


def prefetching_kernel():
    src = inspect.getsource(wm._int4_mma_kernel.fn)
    for anchor, after in EDITS:
        if src.count(anchor) != 1:
            raise SystemExit(f"int4_prefetch_next: {anchor!r} occurs {src.count(anchor)} times in _int4_mma_kernel")
        if anchor.startswith("def "):
            src = src.replace(anchor, after)
        elif after is None:
            src = src.replace(anchor, "    p0, p1, p2, p3 = _columns(wp, NW * 32)\n    for pu in tl.static_range(PF):\n"
                                      "        _prefetch_l2(p0 + (UNROLL + pu) * K_WARPS * 128)\n" + anchor)
        else:
            src = src.replace(anchor, anchor + after)
    return import_source("_int4_mma_pf", HEADER + src)._int4_mma_kernel_pf


def main():
    kernel = prefetching_kernel()
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    for N, K in SHAPES:
        w, qm, qms, dq = int4_pick.int4_weight(N, K, dev)
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
        ref = x.double() @ dq.T
        cfg = wm.pick_mma_config(1, N, K)
        grid, meta = wm._mma_plan(1, N, K, qm.group_size, False, torch.bfloat16, cfg, False)
        steps = -(-triton.cdiv(K, wm.MMA_K) // cfg.k_warps) // cfg.unroll
        assert meta["EVEN"] and steps >= 2, "whole tiles and at least two steps a warp (the prefetch reads the next step)"
        nt, kc = triton.cdiv(N, wm.MMA_ROWS), triton.cdiv(K, wm.MMA_K)
        xk, sxm = x.view(torch.int64), x.stride(0) // 4
        y = torch.empty((1, N), dtype=x.dtype, device=dev)
        args = lambda q: (xk, q.qweight, q.scale, q.scale, y, 1, N, K, nt, kc, sxm, q.scale.stride(0), q.scale.stride(0), y.stride(0))
        runs = {"launcher's": lambda q: wm._int4_mma_kernel[grid](*args(q), **meta)}
        for pf in sorted({1, cfg.unroll}):
            runs[f"prefetch {pf}"] = lambda q, pf=pf: kernel[grid](*args(q), **meta, PF=pf)
        for n, f in runs.items():
            y.zero_()
            f(qms[0])
            torch.cuda.synchronize()
            print(f"  {n}: max rel err {((y.double() - ref).abs().max() / ref.abs().max()).item():.2e}", flush=True)
        cub = int4_pick.cublas_us(x, w)
        us = int4_pick.interleaved_us(runs, qms, ROUNDS)
        print(f"N={N} K={K} ({cfg}, {steps} steps a warp): cublas {cub:.2f} µs; " +
              ", ".join(f"{n} {v:.2f}" for n, v in us.items()), flush=True)
        del qms
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
