"""Rolling L2 prefetch in the int4 mma GEMV (MmaConfig.prefetch): each lane asks L2 for its chunk
`prefetch` loop steps ahead, so more of the weight is on its way from DRAM than the registers
(the capped loads in flight) hold: on an H200, Little's law asks ~40 KB in flight an SM and the
picked tiling holds ~32 KB. The picked config with prefetch 0/1/2/4 (and 2 chunks a step with
prefetch 2/4), stream timing, 5 rounds interleaved (median), beside cuBLAS and the copy of the
int4 bytes; then M = 4 and 16. Needs a CUDA GPU:

    python experiments/probes/int4_prefetch.py
"""
import math, os, sys, time, statistics
from dataclasses import replace
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import torch.nn.functional as F
from experiments.probes.int4_pick import compile_all, int4_weight

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (4096, 11008), (576, 1536)]


def configs(M, N, K):
    from kernels.wo_matmul import pick_mma_config
    c = pick_mma_config(M, N, K)
    out = [replace(c, prefetch=p) for p in (0, 1, 2, 4)]
    if c.unroll >= 4:
        out += [replace(c, unroll=c.unroll // 2, prefetch=p) for p in (2, 4)]
    return out


def main():
    from kernels.wo_matmul import wo_matmul, bytes_moved
    from lab.benchmarks._common import stream_us, copy_same_bytes
    T0 = time.perf_counter()
    n = compile_all([(N, K, (M,), c) for N, K in SHAPES for M in (1, 4, 16) for c in configs(M, N, K)])
    print(f"compiled {n} in {time.perf_counter() - T0:.0f}s", flush=True)
    dev = torch.device("cuda")
    for N, K in SHAPES:
        w, qm, qms, dq = int4_weight(N, K, dev)
        cp = stream_us(copy_same_bytes(bytes_moved(1, N, K, qm), dev))
        for M in (1, 4, 16):
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            dense = [w.to(torch.bfloat16) for _ in range(max(2, math.ceil(100e6 / (N * K * 2))))]
            cub = stream_us([lambda d=d: F.linear(x, d) for d in dense])
            del dense
            ref = x.double() @ dq.T
            ts = {}
            for c in configs(M, N, K):
                y = wo_matmul(x, qms[0], c)
                err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
                if err > 2e-2:
                    print("  WRONG", c, err, flush=True)
                else:
                    ts[c] = []
            for _ in range(5):
                for c in ts:
                    ts[c].append(stream_us([lambda q=q: wo_matmul(x, q, c) for q in qms]))
            line = f"N={N} K={K} M={M}: cublas {cub:.2f} copy {cp:.2f} (3x <= {cub / 3:.2f}) |"
            for c, v in ts.items():
                us = statistics.median(v)
                line += f" u{c.unroll}pf{c.prefetch} {us:.2f} ({cub / us:.2f}x)"
            print(line + f"  t={time.perf_counter() - T0:.0f}s", flush=True)
        del qms
        torch.cuda.empty_cache()
    print(f"done t={time.perf_counter() - T0:.0f}s")


if __name__ == "__main__":
    main()
