"""Read-only floor: the fastest Triton kernel that only reads N bytes (XOR-reduce, one int per program),
beside a same-size copy (torch.neg, half read + half written), stream timing over copies > L2.
How close "3x cuBLAS" and "85 % of the copy" ask a kernel to come to merely reading its bytes
(results/baselines/README.md, session 6). Needs a CUDA GPU:

    python experiments/probes/read_floor.py ["int4 576x1536" ...]
"""
import math, os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch, triton, triton.language as tl
from lab.benchmarks._common import stream_us, copy_same_bytes


@triton.jit
def read_xor(W, OUT, n, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * (BLOCK * UNROLL) + tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for u in tl.static_range(UNROLL):
        o = offs + u * BLOCK
        acc ^= tl.load(W + o, mask=o < n, other=0, eviction_policy="evict_first")
    tl.store(OUT + pid, tl.reduce(acc, 0, _xor))


@triton.jit
def _xor(a, b):
    return a ^ b


TILINGS = [(1024, 4, 4), (2048, 4, 8), (1024, 8, 4), (2048, 8, 8), (4096, 4, 8), (512, 8, 4), (1024, 16, 8), (2048, 2, 8), (4096, 8, 16),
           # small reads (the SmolLM2 GEMVs, < 0.5 MB): the tilings above leave most SMs idle there
           (128, 1, 1), (256, 1, 2), (256, 2, 2), (512, 1, 4), (512, 2, 4), (256, 4, 2), (128, 4, 1), (1024, 1, 4)]


def read_floor(nbytes: int, dev=None) -> list:
    """[(stream µs, block, unroll, warps, programs)] of read_xor over nbytes, one per tiling, fastest first."""
    dev = dev or torch.device("cuda")
    n = nbytes // 4
    copies = max(2, math.ceil(120e6 / nbytes))
    ws = [torch.randint(0, 1 << 30, (n,), dtype=torch.int32, device=dev) for _ in range(copies)]
    res = []
    for block, unroll, warps in TILINGS:
        grid = (triton.cdiv(n, block * unroll),)
        out = torch.empty(grid[0], dtype=torch.int32, device=dev)
        us = stream_us([lambda w=w: read_xor[grid](w, out, n, BLOCK=block, UNROLL=unroll, num_warps=warps) for w in ws])
        res.append((us, block, unroll, warps, grid[0]))
    return sorted(res)


def read_floor_us(nbytes: int) -> float:
    return read_floor(nbytes)[0][0]


def main():
    dev = torch.device("cuda")
    cases = (("int4 4096x4096", 8667136), ("int4 14336x4096", 30314496), ("bf16 4096x4096", 33570816), ("kv 32/8 B=1 8K", 33554432), ("kv 9/3 B=1 8K", 6291456),
             ("int4 576x1536", 460416), ("int4 1536x576", 474240), ("int4 49152x576", 15139968))  # int4: wo_matmul.bytes_moved at M = 1
    if len(sys.argv) > 1:  # labels to run, e.g. "int4 576x1536"
        cases = [c for c in cases if c[0] in sys.argv[1:]]
    for label, nbytes in cases:
        cp = stream_us(copy_same_bytes(nbytes, dev))
        res = read_floor(nbytes, dev)
        best = res[0]
        print(f"{label}: {nbytes / 1e6:.1f} MB  copy-same-bytes {cp:.2f} us ({nbytes / cp / 1e6:.2f} TB/s)  read-only best {best[0]:.2f} us ({nbytes / best[0] / 1e6:.2f} TB/s; block {best[1]} x{best[2]} w{best[3]}, {best[4]} programs)  "
              + " ".join(f"{r[0]:.2f}" for r in res[1:5]), flush=True)


if __name__ == "__main__":
    main()
