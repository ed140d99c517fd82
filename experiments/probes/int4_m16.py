"""The sweep behind kernels.wo_matmul.pick_mma_config at M = 9..16: the int4 mma GEMV in one
launch (each dequantized word times both halves of x) against two launches of 8 rows, and the
tilings for M > 8. Stream timing, median of 3 rounds. Needs a CUDA GPU:

    python experiments/probes/int4_m16.py
"""
import math, os, sys, time, statistics
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import torch.nn.functional as F

from int4_pick import compile_all, int4_weight  # beside this file

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (49152, 576), (576, 1536), (1536, 576)]
TILES = [(1, 8, 4), (1, 8, 2), (1, 4, 4), (1, 4, 8), (1, 16, 2), (1, 4, 2), (1, 1, 9), (1, 4, 3)]


def configs(N, K):
    from kernels.wo_matmul import MmaConfig
    chunks = -(-K // 64)
    out = []
    for r, k, u in TILES:
        if (chunks <= 16) != ((r, k, u) in ((1, 1, 9), (1, 4, 3), (1, 4, 2), (1, 8, 2))):
            continue
        for reg in (None, 128, 168):
            out.append(MmaConfig(r, k, u, maxnreg=reg))
    return out


def main():
    from kernels.wo_matmul import wo_matmul, pick_mma_config
    from lab.benchmarks._common import stream_us
    T0 = time.perf_counter()
    compile_all([(N, K, (8, 16), c) for N, K in SHAPES for c in configs(N, K)])
    print(f"compiled in {time.perf_counter() - T0:.0f}s", flush=True)
    dev = torch.device("cuda")
    for N, K in SHAPES:
        w, qm, qms, dq = int4_weight(N, K, dev)
        for M in (16, 12):
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            dense = [w.to(torch.bfloat16) for _ in range(max(2, math.ceil(100e6 / (N * K * 2))))]
            cub = stream_us([lambda d=d: F.linear(x, d) for d in dense])
            del dense
            ref = x.double() @ dq.T
            two = stream_us([lambda q=q: (wo_matmul(x[:8], q), wo_matmul(x[8:], q)) for q in qms])
            ts = {}
            for c in configs(N, K) + [None]:
                y = wo_matmul(x, qms[0], c)
                err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
                if err > 2e-2:
                    print("  WRONG", M, c, err, flush=True)
                    continue
                ts[c] = []
            for _ in range(3):
                for c in ts:
                    ts[c].append(stream_us([lambda q=q: wo_matmul(x, q, c) for q in qms]))
            med = sorted(((statistics.median(v), c) for c, v in ts.items()), key=lambda t: t[0])
            heur = statistics.median(ts[None]) if None in ts else float("nan")
            print(f"N={N} K={K} M={M}: cublas {cub:.2f}  two launches (heuristic) {two:.2f} ({cub / two:.2f}x)  one launch heuristic {heur:.2f} ({cub / heur:.2f}x) {pick_mma_config(M, N, K)}", flush=True)
            print("   " + " | ".join(f"{us:.2f} {c.row_tiles},{c.k_warps},{c.unroll},r{c.maxnreg}" for us, c in med[:8] if c is not None), flush=True)
        del qms
        torch.cuda.empty_cache()
    print(f"done t={time.perf_counter() - T0:.0f}s")


if __name__ == "__main__":
    main()
