"""Where should the decode launcher take the persistent Hopper kernel (kernels/attention_decode_hopper.py)?
Times, at shapes on both sides of its MAX_TILES_PER_SM bound, the launcher as it dispatches in a
CUDA graph (persistent=None; its error is an eager call's, the split kernel's), the split kernel (persistent=False) and the persistent kernel at every item
size (C tiles of 128 keys, 2 stages up to C = 2, 3 above; at D = 64 also two programs an SM of 2
stages, "x2"), each against the float64 reference,
beside a copy of the same bytes, the rule's plan reading a contiguous cache through a block
table of one column ("table": what a cache without one saves), and (--probe) the session-18 probe's kernel at the rule's item
size (experiments/probes/decode_gluon.py, kind "st", one L for every sequence, no block table):
what taking the block table and per-sequence lengths costs; --block P: the same keys in
shuffled blocks of P (a paged walk; not with --probe, whose kernel reads a contiguous cache). Stream
timing (back to back in one CUDA graph over caches larger than L2), the median of ROUNDS
interleaved rounds. Needs an sm_90 GPU:

    python experiments/probes/decode_dispatch.py [--probe] [--block P] [B,H,H_kv,L ...]
"""
import os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

import torch

import kernels.attention_decode as ad
import kernels.attention_decode_hopper as hopper
from experiments.probes._decode_case import decode_case
from lab.benchmarks._common import rel_err, stream_us

SHAPES = ([(1, 32, 8, L) for L in (1024, 4096, 8192, 16384, 32768)] + [(1, 9, 3, L) for L in (1024, 8192, 16384, 32768, 65536)]
          + [(2, 32, 8, 8192), (4, 32, 8, 8192), (16, 32, 8, 1024), (4, 9, 3, 8192), (16, 9, 3, 1024), (16, 9, 3, 8192)])
ROUNDS = 3


def main(argv):
    probe = "--probe" in argv
    argv = [a for a in argv if a != "--probe"]
    block = None
    if "--block" in argv:
        i = argv.index("--block")
        block = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
        if probe:
            raise SystemExit("decode_dispatch: --probe times a kernel of contiguous caches only; drop --block or --probe")
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv] or SHAPES
    t0 = time.perf_counter()
    for B, H, H_kv, L in shapes:
        case = decode_case(B, H, H_kv, L, block_size=block)
        D = case.q.shape[-1]
        sms = ad._sm_count(case.q.device)
        table, P, capacity = case.caches[0].block_table, case.caches[0].block_size, case.caches[0].capacity
        rule = hopper.plan(B, H_kv, capacity, D, sms, box=hopper.box_keys(table, P))
        variants = {"launcher": dict(), "split": dict(persistent=False)}
        for C in range(1, min(hopper.MAX_CHUNK_TILES, ad._cdiv(capacity, hopper.BLOCK_N)) + 1):
            p = hopper.sized_plan(C, B, H_kv, capacity, sms)
            variants[f"c{p.chunk_tiles}s{p.stages}"] = dict(plan_=p)
            two = hopper.sized_plan(C, B, H_kv, capacity, sms, per_sm=2)
            if D == hopper.TWO_PER_SM_D and two.programs > sms:  # two programs an SM
                variants[f"c{C}s{two.stages}x2"] = dict(plan_=two)

        if block is None and rule is not None:  # the contiguous cache read through a table of one column (sequence b is block b)
            identity = {id(c): torch.arange(B, dtype=torch.int32, device=c.k_cache.device)[:, None] for c in case.caches}
            variants["table"] = dict(plan_=rule, table=identity)
        if probe and rule is not None:
            variants["probe"] = dict(probe=rule)

        def call(kw, c, out):
            if "probe" in kw:
                from experiments.probes.decode_gluon import gluon_decode
                return gluon_decode(case.q, c.k_cache, c.v_cache, L, kind="st", C=kw["probe"].chunk_tiles, stages=kw["probe"].stages,
                                    block_n=hopper.BLOCK_N, out=out)
            if "plan_" in kw:
                table = kw["table"][id(c)] if "table" in kw else c.block_table
                return hopper.decode_persistent(case.q, c.k_cache, c.v_cache, table, c.seq_lens, D ** -0.5, out, kw["plan_"])
            return ad.paged_decode_attention(case.q, **c.kwargs(), out=out, **kw)

        errs = {n: rel_err(call(kw, case.caches[0], case.q.new_empty(case.q.shape)), case.ref) for n, kw in variants.items()}
        times = {n: [] for n in variants}
        for _ in range(ROUNDS):
            for n, kw in variants.items():
                times[n].append(stream_us([lambda c=c, kw=kw: call(kw, c, case.out) for c in case.caches]))
        line = f"B={B} {H}/{H_kv} L={L}{f' P={block}' if block else ''}: copy {case.copy_us:.2f} us, rule: {rule or 'split kernel'}"
        for n in variants:
            us = statistics.median(times[n])
            line += f" | {n} {us:.2f} ({case.copy_us / us:.2f}, err {errs[n]:.1e})"
        print(line + f"  t={time.perf_counter() - t0:.0f}s", flush=True)
        case = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
