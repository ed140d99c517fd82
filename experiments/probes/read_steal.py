"""Does taking tiles from a shared counter, instead of each program owning a fixed run of them,
let a grid of long-lived programs read a decode call's K/V as fast as a read-only kernel of
small programs? The premise behind a balanced split kernel, tested without any attention math:
every kernel here only XOR-reduces the same [H_kv, L, D] bf16 K and V (read as int32), stream
timing over copies > 2x L2.

  read-only    read_floor.py's kernel: ~2000 programs of 16-64 KB, balanced by the block scheduler
  split        grid (H_kv, S): each program a fixed run of tiles in a loop Triton's software
               pipeliner streams (cp.async into shared memory, num_stages - 1 tiles ahead), the
               decode split kernel's load structure
  split-regs   the same runs, the next tile loaded into registers while the current one is folded
               in (a hand-written double buffer; the pipeliner left out)
  steal        grid (H_kv, S), the register double buffer, each tile's index from the (sequence,
               KV head)'s ticket counter (one relaxed atomic a tile, taken two tiles ahead); every
               program takes exactly `iters` tickets, so the holder of a call's last ticket knows to
               zero the counter, and tickets past the last tile load nothing

Needs a CUDA GPU:

    python experiments/probes/read_steal.py [H_kv,L,D ...]
"""
import math, os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import numpy as np
import torch, triton, triton.language as tl
from lab.benchmarks._common import copy_same_bytes, input_copies, stream_us
from experiments.probes.read_floor import read_floor_us


@triton.jit
def _xor(a, b):
    return a ^ b


@triton.jit
def _tile(base, t, n_tiles, rows, cols, DW: tl.constexpr, BLOCK_N: tl.constexpr):
    """Tile t ([BLOCK_N, DW] int32) of one head's rows, nothing loaded past n_tiles."""
    tok = t * BLOCK_N + rows
    return tl.load(base + tok.to(tl.int64)[:, None] * DW + cols[None, :], mask=(tok < n_tiles * BLOCK_N)[:, None], other=0)


@triton.jit
def _program(K, V, L, DW: tl.constexpr, BLOCK_N: tl.constexpr):
    """(head, program of the head, tile rows, tile columns, this head's K and V)."""
    h = tl.program_id(0)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, DW)
    return h, tl.program_id(1), rows, cols, K + h.to(tl.int64) * L * DW, V + h.to(tl.int64) * L * DW


@triton.jit
def _store_xor(OUT, h, S, s, acc):
    """This program's XOR of everything it read: one int32."""
    tl.store(OUT + h * S + s, tl.reduce(tl.reduce(acc, 1, _xor), 0, _xor))


@triton.jit
def read_split(K, V, OUT, L, n_tiles, S, DW: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr):
    h, s, rows, cols, kb, vb = _program(K, V, L, DW, BLOCK_N)
    per = tl.cdiv(n_tiles, S)
    acc = tl.zeros([BLOCK_N, DW], tl.int32)
    for t in tl.range(s * per, tl.minimum(n_tiles, s * per + per), num_stages=STAGES):
        acc ^= _tile(kb, t, n_tiles, rows, cols, DW, BLOCK_N) ^ _tile(vb, t, n_tiles, rows, cols, DW, BLOCK_N)
    _store_xor(OUT, h, S, s, acc)


@triton.jit
def read_regs(K, V, CNT, OUT, L, n_tiles, S, iters, DW: tl.constexpr, BLOCK_N: tl.constexpr, STEAL: tl.constexpr):
    h, s, rows, cols, kb, vb = _program(K, V, L, DW, BLOCK_N)
    cnt = CNT + h
    last = S * iters - 1  # the call's last ticket on this counter (iters >= 2 a program): its holder zeroes it
    if STEAL:  # tickets for steps 0 and 1; each step i takes the ticket of step i + 2, none past its last
        t0 = tl.atomic_add(cnt, 1, sem="relaxed")
        t1 = tl.atomic_add(cnt, 1, sem="relaxed")
        if (t0 == last) | (t1 == last):  # a program that starts late may take the last ticket here
            tl.atomic_xchg(cnt, 0, sem="relaxed")
        hi = n_tiles
    else:  # a fixed run of `iters` tiles
        t0 = s * iters
        t1 = t0 + 1
        hi = tl.minimum(n_tiles, t0 + iters)
    k0 = _tile(kb, t0, hi, rows, cols, DW, BLOCK_N)
    v0 = _tile(vb, t0, hi, rows, cols, DW, BLOCK_N)
    acc = tl.zeros([BLOCK_N, DW], tl.int32)
    for i in tl.range(0, iters, num_stages=1):
        t2 = n_tiles  # no step i + 2: nothing to load
        if i + 2 < iters:
            if STEAL:
                t2 = tl.atomic_add(cnt, 1, sem="relaxed")
                if t2 == last:
                    tl.atomic_xchg(cnt, 0, sem="relaxed")
            else:
                t2 = t1 + 1
        k1 = _tile(kb, t1, hi, rows, cols, DW, BLOCK_N)  # step i + 1's tile, in flight while step i's is folded in
        v1 = _tile(vb, t1, hi, rows, cols, DW, BLOCK_N)
        acc ^= k0 ^ v0
        k0, v0, t1 = k1, v1, t2
    _store_xor(OUT, h, S, s, acc)


def main(argv):
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv] or [(8, 8192, 128), (3, 8192, 64), (3, 32768, 64), (8, 32768, 128)]
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    for H_kv, L, D in shapes:
        nbytes = 2 * H_kv * L * D * 2
        DW = D // 2
        kvs = input_copies(lambda i: (torch.randint(-2**31, 2**31 - 1, (H_kv, L, DW), dtype=torch.int32, device=dev),
                                      torch.randint(-2**31, 2**31 - 1, (H_kv, L, DW), dtype=torch.int32, device=dev)), nbytes, dev)
        k, v = kvs[0]
        want = np.bitwise_xor.reduce((k ^ v).view(H_kv, -1).cpu().numpy(), axis=1)
        line = f"{H_kv} KV heads, L={L}, D={D}, {nbytes / 1e6:.1f} MB: copy {stream_us(copy_same_bytes(nbytes, dev)):.2f} us, read-only {read_floor_us(nbytes):.2f}"
        cnt = torch.zeros(H_kv, dtype=torch.int32, device=dev)

        def check(out, S, name, result=True):
            """One call on copy 0 XORs every tile of each head exactly once (a tile lost or read
            twice changes it), and leaves the counters zero."""
            if result and not np.array_equal(np.bitwise_xor.reduce(out.view(H_kv, S).cpu().numpy(), axis=1), want):
                raise SystemExit(f"{name}: wrong XOR (tiles lost or read twice)")
            if cnt.any():
                raise SystemExit(f"{name}: counters left {cnt.tolist()}")

        def timed(launch, S, out, name) -> float:
            """Stream µs of launch(k, v) over the copies, checked once before and after timing."""
            calls = [lambda k=k, v=v: launch(k, v) for k, v in kvs]
            calls[0]()
            check(out, S, name)
            us = stream_us(calls)
            check(out, S, name + " after timing", result=False)
            return us

        for block_n in (64, 128) if D == 64 else (32, 64):
            n_tiles = L // block_n
            pairs_s = max(1, (2 * sms) // H_kv)
            for S in sorted({pairs_s, pairs_s // 2}):
                out = torch.zeros(H_kv * S, dtype=torch.int32, device=dev)
                res = []
                for stages in (3, 4):
                    split = lambda k, v: read_split[(H_kv, S)](k, v, out, L, n_tiles, S, DW=DW, BLOCK_N=block_n, STAGES=stages, num_warps=4)
                    res.append(f"split s{stages} {timed(split, S, out, 'split'):.2f}")
                per = math.ceil(n_tiles / S)
                regs = lambda k, v, iters, steal: read_regs[(H_kv, S)](k, v, cnt, out, L, n_tiles, S, iters, DW=DW, BLOCK_N=block_n,
                                                                       STEAL=steal, num_warps=4)
                res.append(f"split-regs {timed(lambda k, v: regs(k, v, per, False), S, out, 'split-regs'):.2f}")
                for slack in (1.25, 1.5, 2.0):
                    iters = math.ceil(per * slack)
                    res.append(f"steal x{slack} ({iters} steps) {timed(lambda k, v: regs(k, v, iters, True), S, out, 'steal'):.2f}")
                line += f"\n  n{block_n}, {S} programs a head ({per} tiles each): " + ", ".join(res)
        print(line, flush=True)
        kvs = None  # free the caches before the next shape
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
