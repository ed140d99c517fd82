"""MmaConfig.zero_mma on or off: the int4 mma GEMV with the zero taken off by packed FMAs (4 a code
word) or by one more MMA a word (kernels.wo_matmul._mma_asm), at M = 1 and 4 on the benchmark
shapes, over the tilings near pick_mma_config's (zero_mma changes the registers a step needs).
Stream timing, median of 3 rounds interleaved, each config checked against the float64
reference first. Needs a CUDA GPU:

    python experiments/probes/int4_zero_mma.py
"""
import dataclasses, math, os, sys, time, statistics
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import torch.nn.functional as F

from int4_pick import compile_all, int4_weight  # beside this file

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (49152, 576), (576, 1536), (1536, 576)]
GEN = {1: [(1, 8, 4), (1, 8, 8), (1, 4, 8), (1, 8, 2)], 4: [(1, 8, 2), (1, 8, 4), (1, 4, 4)]}
SHORT = {1: [(1, 1, 9), (1, 4, 3), (1, 4, 2), (1, 8, 2)], 4: [(1, 1, 9), (1, 4, 3), (1, 4, 2)]}


def configs(M, N, K):
    from kernels.wo_matmul import MmaConfig, pick_mma_config
    chunks = -(-K // 64)
    out = [pick_mma_config(M, N, K)]
    for r, k, u in (SHORT if chunks <= 16 else GEN)[M]:
        for reg in (None, 128, 168):
            out.append(MmaConfig(r, k, min(u, -(-chunks // k)), maxnreg=reg))
    out = list(dict.fromkeys(out))
    return [dataclasses.replace(c, zero_mma=z) for c in out for z in (False, True)]


def main():
    from kernels.wo_matmul import wo_matmul, pick_mma_config
    from lab.benchmarks._common import stream_us
    T0 = time.perf_counter()
    n = compile_all([(N, K, (M,), c) for N, K in SHAPES for M in (1, 4) for c in configs(M, N, K)])
    print(f"compiled {n} in {time.perf_counter() - T0:.0f}s", flush=True)
    dev = torch.device("cuda")
    for N, K in SHAPES:
        w, qm, qms, dq = int4_weight(N, K, dev)
        for M in (1, 4):
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            dense = [w.to(torch.bfloat16) for _ in range(max(2, math.ceil(100e6 / (N * K * 2))))]
            cub = stream_us([lambda d=d: F.linear(x, d) for d in dense])
            del dense
            ref = x.double() @ dq.T
            ts = {}
            for c in configs(M, N, K):
                err = ((wo_matmul(x, qms[0], c).double() - ref).abs().max() / ref.abs().max()).item()
                if err > 1e-2:
                    print("  WRONG", c, err, flush=True)
                else:
                    ts[c] = []
            for _ in range(3):
                for c in ts:
                    ts[c].append(stream_us([lambda q=q: wo_matmul(x, q, c) for q in qms]))
            pick = pick_mma_config(M, N, K)
            print(f"N={N} K={K} M={M}: cublas {cub:.2f}  pick {pick}  t={time.perf_counter() - T0:.0f}s", flush=True)
            rows = {}
            for c, v in ts.items():
                rows.setdefault((c.row_tiles, c.k_warps, c.unroll, c.maxnreg), {})[c.zero_mma] = statistics.median(v)
            for key, z in sorted(rows.items(), key=lambda t: min(t[1].values())):
                mark = " <- pick" if key == (pick.row_tiles, pick.k_warps, pick.unroll, pick.maxnreg) else ""
                print(f"    {key}: fma {z.get(False, float('nan')):.2f}  mma {z.get(True, float('nan')):.2f}"
                      f"  ({cub / min(z.values()):.2f}x){mark}", flush=True)
        del qms
        torch.cuda.empty_cache()
    print(f"done t={time.perf_counter() - T0:.0f}s")


if __name__ == "__main__":
    main()
