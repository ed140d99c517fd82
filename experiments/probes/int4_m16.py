"""The sweep behind kernels.wo_matmul.pick_mma_config at M = 9..16: the int4 mma GEMV in one
launch (each dequantized word times both halves of x) against two launches of 8 rows, and the
tilings for M > 8. Stream timing, median of 3 rounds. Needs a CUDA GPU:

    python experiments/probes/int4_m16.py
"""
import math, os, sys, time, statistics
import multiprocessing as mp
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import torch.nn.functional as F

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


def warm(job):
    from kernels.wo_matmul import quantize_int4, wo_matmul
    from lab.benchmarks.wo_matmul import group_for
    for N, K, cfg in job:
        qm = quantize_int4(torch.randn(N, K, device="cuda") * 0.02, group_for(K), True, layout="mma")
        for m in (8, 16):
            try:
                wo_matmul(torch.randn(m, K, device="cuda", dtype=torch.bfloat16), qm, cfg)
            except Exception as e:
                print("  compile fail", cfg, type(e).__name__, str(e)[:200], flush=True)
    torch.cuda.synchronize()
    return 0


def main():
    from kernels.wo_matmul import quantize_int4, wo_matmul, dequantize, pick_mma_config
    from lab.benchmarks._common import stream_us
    from lab.benchmarks.wo_matmul import group_for
    T0 = time.perf_counter()
    jobs = [(N, K, c) for N, K in SHAPES for c in configs(N, K)]
    with mp.get_context("spawn").Pool(14) as pool:
        pool.map(warm, [jobs[i::14] for i in range(14)])
    print(f"compiled in {time.perf_counter() - T0:.0f}s", flush=True)
    dev = torch.device("cuda")
    for N, K in SHAPES:
        torch.manual_seed(0)
        w = torch.randn(N, K, device=dev) * 0.02
        qm = quantize_int4(w, group_for(K), True, layout="mma")
        qms = [qm.clone() for _ in range(int(min(64, max(2, math.ceil(100e6 / qm.nbytes)))))]
        dq = dequantize(qm, torch.float64)
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
