"""Persistent decode over paged blocks smaller than a tile (kernels/attention_decode_hopper.py at this commit):
its cp.async gather (hop._GATHER = True: every thread copies 16 bytes of its keys' rows, one commit group a
tile) against one TMA box a block (False) and the split kernel's walk, at the rule's item size, and the
contiguous view beside them. Stream µs, median of 3 interleaved rounds. Needs an sm_90 GPU:

    python experiments/probes/decode_gather.py [P,P ...]
"""
import os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import kernels.attention_decode as ad
import kernels.attention_decode_hopper as hop
from experiments.probes._decode_case import decode_case
from lab.benchmarks._common import rel_err, stream_us

SHAPES = [(1, 32, 8, 1024), (1, 32, 8, 8192), (1, 32, 8, 16384), (1, 9, 3, 8192), (1, 9, 3, 32768), (4, 32, 8, 4096),
          (16, 9, 3, 1024), (64, 9, 3, 1024), (16, 32, 8, 1024)]
blocks = [int(b) for b in sys.argv[1].split(",")] if len(sys.argv) > 1 else [16]
t0 = time.perf_counter()
for P in blocks:
    for B, H, H_kv, L in SHAPES:
        case = decode_case(B, H, H_kv, L, block_size=P)
        contig = decode_case(B, H, H_kv, L) if P == blocks[0] else None
        D = case.q.shape[-1]
        sms = ad._sm_count(case.q.device)
        cap = case.caches[0].block_table.shape[1] * P
        rule = hop.plan(B, H_kv, cap, D, sms, force=True)
        V = {"split": (lambda c, o: ad.paged_decode_attention(case.q, **c.kwargs(), out=o, persistent=False), None)}
        for C in range(1, min(4, ad._cdiv(cap, 128)) + 1):
            p = hop.sized_plan(C, B, H_kv, cap, sms)
            tag = "*" if p == rule else ""
            V[f"g{C}{tag}"] = (lambda c, o, p=p: hop.decode_persistent(case.q, c.k_cache, c.v_cache, c.block_table, c.seq_lens, D ** -0.5, o, p), True)
            if p == rule:
                V[f"box{C}"] = (lambda c, o, p=p: hop.decode_persistent(case.q, c.k_cache, c.v_cache, c.block_table, c.seq_lens, D ** -0.5, o, p), False)
        times = {n: [] for n in V}
        errs = {}
        for n, (f, g) in V.items():
            if g is not None:
                hop._GATHER = g
            errs[n] = rel_err(f(case.caches[0], case.q.new_empty(case.q.shape)), case.ref)
        if contig is not None:
            times["contig"] = []
        for _ in range(3):
            for n, (f, g) in V.items():
                if g is not None:
                    hop._GATHER = g
                times[n].append(stream_us([lambda c=c, f=f: f(c, case.out) for c in case.caches]))
            if contig is not None:
                times["contig"].append(stream_us([lambda c=c: ad.paged_decode_attention(contig.q, **c.kwargs(), out=contig.out, persistent=None if hop.plan(B, H_kv, L, D, sms) else False) for c in contig.caches]))
        hop._GATHER = True
        line = f"P={P} B={B} {H}/{H_kv} L={L}: copy {case.copy_us:.2f}"
        for n in times:
            line += f" | {n} {statistics.median(times[n]):.2f}" + (f" e{errs[n]:.0e}" if n in errs else "")
        print(line + f" t={time.perf_counter() - t0:.0f}s", flush=True)
        case = contig = None
        torch.cuda.empty_cache()
