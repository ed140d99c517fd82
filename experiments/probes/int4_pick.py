"""The sweep behind kernels.wo_matmul.pick_mma_config at M = 1: every candidate tiling × register
cap of the int4 mma GEMV on the benchmark shapes (and three more), 3 rounds interleaved (median),
stream timing, then M = 4 and 16 for the best 4. --lanes: M = 1 only, every tiling with and
without x and the scales spread over the lanes (MmaConfig.x_lanes, session 25), at the caps
None / 72 / 128 (x_lanes needs ~70 registers at 4 chunks a step, so 72 holds 28 warps an SM).
--shapes picks the shapes, --caps the register caps (e.g. --caps none,64,72: at 64, two programs
of 16 warps fit an SM; session 28). (Session 26's loads_first sweep, `--first`, lives at commit 95d6ced;
session 27's zero_mma sweep, `--zero`, at commit 7fef34c).
Needs a CUDA GPU:

    python experiments/probes/int4_pick.py [--lanes] [--shapes 4096x4096,576x1536]
"""
import math, os, sys, time, statistics
import multiprocessing as mp
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (49152, 576), (576, 1536), (1536, 576), (8192, 8192), (4096, 11008), (28672, 4096)]
GEN = [(1, 8, 4), (1, 16, 2), (1, 8, 8), (1, 4, 8), (1, 8, 2), (1, 4, 4)]
SHORT = [(1, 1, 9), (2, 1, 9), (1, 2, 5), (1, 4, 3), (1, 8, 2), (1, 4, 2)]


if "--shapes" in sys.argv:  # e.g. --shapes 4096x4096,576x1536
    SHAPES = [tuple(int(v) for v in nk.split("x")) for nk in sys.argv[sys.argv.index("--shapes") + 1].split(",")]
LANES = "--lanes" in sys.argv
CAPS = None
if "--caps" in sys.argv:  # e.g. --caps none,64,128
    CAPS = tuple(None if v == "none" else int(v) for v in sys.argv[sys.argv.index("--caps") + 1].split(","))


def configs(N, K):
    from kernels.wo_matmul import MmaConfig
    chunks = -(-K // 64)
    base = SHORT if chunks <= 16 else GEN + ([(1, 16, 4), (1, 8, 6), (1, 4, 16)] if LANES else [])
    caps = CAPS or ((None, 72, 128) if LANES else (None, 96, 128, 168))
    out = []
    for (r, k, u) in base:
        if chunks <= 16:
            u = min(u, -(-chunks // k))
        for reg in caps:
            for lanes in (False, True) if LANES else (False,):
                out.append(MmaConfig(r, k, u, maxnreg=reg, x_lanes=lanes))
    return list(dict.fromkeys(out))


def warm(job):
    from kernels.wo_matmul import quantize_int4, wo_matmul
    from lab.benchmarks.wo_matmul import group_for
    done = 0
    for N, K, M, cfg in job:
        w = torch.randn(N, K, device="cuda") * 0.02
        qm = quantize_int4(w, group_for(K), True, layout="mma")
        for m in M:
            x = torch.randn(m, K, device="cuda", dtype=torch.bfloat16)
            try:
                wo_matmul(x, qm, cfg)
                done += 1
            except Exception as e:
                print("  compile fail", cfg, type(e).__name__, str(e)[:200], flush=True)
    torch.cuda.synchronize()
    return done


def compile_all(jobs: list, procs: int = 14) -> int:
    """Compiles (N, K, Ms, config) jobs in `procs` processes (Triton's disk cache keeps the
    kernels), so that the timed loop compiles nothing."""
    with mp.get_context("spawn").Pool(procs) as pool:
        return sum(pool.map(warm, [jobs[i::procs] for i in range(procs)]))


def int4_weight(N: int, K: int, dev):
    """A random [N, K] weight, its symmetric int4 mma quantization, enough copies of that to
    exceed L2 (stream timing reads each from DRAM), and its float64 dequantization."""
    from kernels.wo_matmul import quantize_int4, dequantize
    from lab.benchmarks.wo_matmul import group_for
    torch.manual_seed(0)
    w = torch.randn(N, K, device=dev) * 0.02
    qm = quantize_int4(w, group_for(K), True, layout="mma")
    qms = [qm.clone() for _ in range(int(min(64, max(2, math.ceil(100e6 / qm.nbytes)))))]
    return w, qm, qms, dequantize(qm, torch.float64)


def cublas_us(x, w) -> float:
    """Stream µs of the bf16 peer, F.linear(x, w), over enough copies of w to exceed L2."""
    from lab.benchmarks._common import stream_us
    N, K = w.shape
    dense = [w.to(torch.bfloat16) for _ in range(max(2, math.ceil(100e6 / (N * K * 2))))]
    return stream_us([lambda d=d: F.linear(x, d) for d in dense])


def interleaved_us(runs: dict, qms: list, rounds: int = 3) -> dict:
    """Stream µs of each of `runs` (name -> a call on one weight copy) over all of `qms`, the runs
    interleaved in each of `rounds` rounds (so a machine's drift reaches all alike); the medians."""
    from lab.benchmarks._common import stream_us
    ts = {n: [] for n in runs}
    for _ in range(rounds):
        for n, f in runs.items():
            ts[n].append(stream_us([lambda q=q, f=f: f(q) for q in qms]))
    return {n: statistics.median(v) for n, v in ts.items()}


def main():
    from kernels.wo_matmul import wo_matmul, bytes_moved, pick_mma_config
    from lab.benchmarks._common import stream_us, copy_same_bytes
    T0 = time.perf_counter()
    n = compile_all([(N, K, (1,) if LANES else (1, 4), c) for N, K in SHAPES for c in configs(N, K)])
    print(f"compiled {n} in {time.perf_counter() - T0:.0f}s", flush=True)
    dev = torch.device("cuda")
    for N, K in SHAPES:
        w, qm, qms, dq = int4_weight(N, K, dev)
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
        cub = cublas_us(x, w)
        cp = stream_us(copy_same_bytes(bytes_moved(1, N, K, qm), dev))
        ref = x.double() @ dq.T
        cfgs = configs(N, K)
        ts = {c: [] for c in cfgs}
        for c in cfgs:
            y = wo_matmul(x, qms[0], c)
            err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
            if err > 2e-2:
                print("  WRONG", c, err, flush=True)
                ts.pop(c)
        for _ in range(3):
            for c in ts:
                ts[c].append(stream_us([lambda q=q: wo_matmul(x, q, c) for q in qms]))
        med = sorted(((statistics.median(v), c) for c, v in ts.items()), key=lambda t: t[0])
        print(f"N={N} K={K}: cublas {cub:.2f} copy {cp:.2f} (bound {cub / cp:.2f}x; 3x <= {cub / 3:.2f}) pick {pick_mma_config(1, N, K)}  t={time.perf_counter() - T0:.0f}s", flush=True)
        table = {}
        for us, c in med:
            table.setdefault((c.row_tiles, c.k_warps, c.unroll) + (("lanes",) if c.x_lanes else ()), {})[c.maxnreg] = us
        for key in sorted(table, key=lambda k: min(table[k].values())):
            print(f"    {key}: " + "  ".join(f"r{r}={us:.2f}" for r, us in sorted(table[key].items(), key=lambda t: t[0] or 0)), flush=True)
        print(f"  best {med[0][0]:.2f} ({cub / med[0][0]:.2f}x) {med[0][1]}", flush=True)
        pick = pick_mma_config(1, N, K)
        if LANES and pick in ts:
            print(f"  pick {statistics.median(ts[pick]):.2f} ({cub / statistics.median(ts[pick]):.2f}x)", flush=True)
        for M in (4, 16) if not LANES else ():
            xm = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            cubm = cublas_us(xm, w)
            line = f"  M={M} cublas {cubm:.2f}:"
            for us, c in med[:4]:
                t = stream_us([lambda q=q: wo_matmul(xm, q, c) for q in qms])
                line += f" {c.row_tiles},{c.k_warps},{c.unroll},r{c.maxnreg} {t:.2f} ({cubm / t:.2f}x) |"
            print(line, flush=True)
        del qms
        torch.cuda.empty_cache()
    print(f"done t={time.perf_counter() - T0:.0f}s")


if __name__ == "__main__":
    main()
