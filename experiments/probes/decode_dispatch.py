"""Where should the decode launcher take the persistent Hopper kernel (kernels/attention_decode_hopper.py)?
Times, at shapes on both sides of its MAX_TILES_PER_SM bound, the launcher as it dispatches in a
CUDA graph (persistent=None; its error is an eager call's, the split kernel's), the split kernel (persistent=False) and the persistent kernel at every item
size (C tiles of 128 keys, 2 stages up to C = 2, 3 above; at D = 64 also two programs an SM of 2
stages, "x2"), each against the float64 reference,
beside a copy of the same bytes, the rule's plan reading a contiguous cache through a block
table of one column ("table": what a cache without one saves), and (--probe) the session-18 probe's kernel at the rule's item
size (experiments/probes/decode_gluon.py, kind "st", one L for every sequence, no block table):
what taking the block table and per-sequence lengths costs; --block P: the same keys in
shuffled blocks of P (a paged walk; not with --probe, whose kernel reads a contiguous cache); --deep:
also each item size with a ring deep enough for the whole item (C + 1 stages), at one and two programs
an SM, where shared memory holds it; --tile N: also the persistent kernel at tiles of N keys instead
of hopper.BLOCK_N, items of 1-8 of them, named "nN c..." (session 24: whether smaller tiles, which
split a small cache evenly over the SMs, pay for their extra tiles' math: they did not). Stream
timing (back to back in one CUDA graph over caches larger than L2), the median of ROUNDS
interleaved rounds. Needs an sm_90 GPU:

    python experiments/probes/decode_dispatch.py [--probe] [--block P] [--deep] [--tile N] [B,H,H_kv,L ...]
"""
import contextlib, dataclasses, os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

import torch

import kernels.attention_decode as ad
import kernels.attention_decode_hopper as hopper
from experiments.probes._decode_case import decode_case
from lab.benchmarks._common import rel_err, stream_us

SHAPES = ([(1, 32, 8, L) for L in (1024, 4096, 8192, 16384, 32768)] + [(1, 9, 3, L) for L in (1024, 8192, 16384, 32768, 65536)]
          + [(2, 32, 8, 8192), (4, 32, 8, 8192), (16, 32, 8, 1024), (4, 9, 3, 8192), (16, 9, 3, 1024), (16, 9, 3, 8192)])
ROUNDS = 3


@contextlib.contextmanager
def tile_keys(n: int | None):
    """hopper.BLOCK_N set to n (None: left as it is) for what runs inside: the plans made and the
    calls launched (or captured) there."""
    saved = hopper.BLOCK_N
    hopper.BLOCK_N = n or saved
    try:
        yield
    finally:
        hopper.BLOCK_N = saved


def item_plans(tile: int, B: int, H_kv: int, capacity: int, D: int, sms: int, max_c: int, deep: bool) -> dict:
    """{name: call keywords} of the persistent kernel at tiles of `tile` keys and items of 1..max_c
    of them: sized_plan's stages at one program an SM and (D = 64) at two; with deep, also rings
    deep enough for a whole item (C + 1 stages) where shared memory (200 KB an SM) holds them."""
    out = {}
    with tile_keys(tile):
        for C in range(1, min(max_c, ad._cdiv(capacity, tile)) + 1):
            plans = [(hopper.sized_plan(C, B, H_kv, capacity, sms), 1)]
            two = hopper.sized_plan(C, B, H_kv, capacity, sms, per_sm=2)
            if D == hopper.TWO_PER_SM_D and two.programs > sms:
                plans.append((two, 2))
            for p, per_sm in list(plans) if deep else ():
                ring = min(C + 1, 200 * 1024 // (per_sm * 4 * tile * D))  # a stage: K and V tiles of 2 bytes an element
                plans.append((dataclasses.replace(p, stages=max(ring, p.stages)), per_sm))
            for p, per_sm in plans:
                name = f"{'' if tile == hopper.BLOCK_N else f'n{tile} '}c{C}s{p.stages}{'x2' if per_sm == 2 else ''}"
                out[name] = dict(plan_=p, tile=tile)
    return out


def option(argv: list, name: str) -> int | None:
    """The int after `name` in argv, taking both out of it (None where absent)."""
    if name not in argv:
        return None
    i = argv.index(name)
    value = int(argv[i + 1])
    del argv[i:i + 2]
    return value


def main(argv):
    probe, deep = "--probe" in argv, "--deep" in argv
    argv = [a for a in argv if a not in ("--probe", "--deep")]
    block, tile = option(argv, "--block"), option(argv, "--tile")
    if probe and block:
        raise SystemExit("decode_dispatch: --probe times a kernel of contiguous caches only; drop --block or --probe")
    if tile and (block or tile % hopper.MIN_BLOCK or hopper.BLOCK_N % tile):
        raise SystemExit(f"decode_dispatch: --tile takes a contiguous cache and a divisor of {hopper.BLOCK_N} that is a multiple of "
                         f"{hopper.MIN_BLOCK}; got --tile {tile}{f' with --block {block}' if block else ''}")
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv] or SHAPES
    t0 = time.perf_counter()
    for B, H, H_kv, L in shapes:
        case = decode_case(B, H, H_kv, L, block_size=block)
        D = case.q.shape[-1]
        sms = ad._sm_count(case.q.device)
        table, P, capacity = case.caches[0].block_table, case.caches[0].block_size, case.caches[0].capacity
        rule = hopper.plan(B, H_kv, capacity, D, sms, box=hopper.box_keys(table, P))
        variants = {"launcher": dict(), "split": dict(persistent=False)}
        variants.update(item_plans(hopper.BLOCK_N, B, H_kv, capacity, D, sms, hopper.MAX_CHUNK_TILES, deep))
        if tile:
            variants.update(item_plans(tile, B, H_kv, capacity, D, sms, 8, True))

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
                with tile_keys(kw.get("tile")):
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
