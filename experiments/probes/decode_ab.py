"""The decode launcher at HEAD against an earlier version of it (its files written as below) and
against HEAD under other split policies, on the same inputs: stream µs (a bf16 contiguous cache
unless told otherwise, KV copies > 2x L2), the median of 5 rounds that interleave the variants,
with each variant's max relative error. Needs a CUDA GPU:

    python experiments/probes/decode_ab.py [ab_old_decode.py ...] [B,H,H_kv,L[,P] ...] [--set NAME=V[,NAME=V] ...] [--kv fp8|int8]

P: a paged cache of shuffled P-key blocks instead of the contiguous view. --kv: the cache
quantized as the decode suite stores it (fp8 per head, int8 per token) instead of bf16.

An earlier launcher needs its own Hopper kernel file beside it (the launcher's dispatch compares
enums of its own module): write both to the repo root, each importing the other,

    git show REV:kernels/attention_decode.py | sed 's/from kernels import attention_decode_hopper as hopper/import ab_hopper as hopper/' > ab_old_decode.py
    git show REV:kernels/attention_decode_hopper.py | sed 's/^import kernels.attention_decode as ad/import ab_old_decode as ad/' > ab_hopper.py

and pass ab_old_decode.py.

Each --set is one more variant of HEAD: NAME a field of SplitPolicy (min_split=128), a module
constant (MERGE_DIMS=64), or a launcher keyword: config=n32w4s4 (a DecodeConfig) or num_splits=16,
set for its calls only.
"""
import dataclasses, importlib.util, os, re, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import kernels.attention_decode as now
from experiments.probes._decode_case import decode_case

ROUNDS = 5
LAUNCH_KW = {"config": lambda v: now.DecodeConfig(*map(int, re.fullmatch(r"n(\d+)w(\d+)s(\d+)", v).groups())), "num_splits": int}
SHAPES = [(1, 32, 8, 8192), (1, 9, 3, 8192), (1, 32, 8, 32768), (1, 9, 3, 32768), (1, 32, 8, 131072), (4, 32, 8, 8192),
          (4, 9, 3, 8192), (16, 9, 3, 8192), (16, 32, 8, 8192), (64, 9, 3, 8192), (64, 32, 8, 8192), (1, 32, 8, 1024)]


def main(argv):
    mods, shapes, sets, kv = {"HEAD": now}, [], [], "bf16"
    while argv:
        a = argv.pop(0)
        if a == "--kv":
            kv = argv.pop(0)
        elif a == "--set":
            sets.append(dict(kv.split("=") for kv in argv.pop(0).split(",")))
        elif a.endswith(".py"):  # named by its file's stem
            if "from kernels import attention_decode_hopper" in open(a).read():
                raise SystemExit(f"decode_ab: {a} imports this tree's kernels.attention_decode_hopper, whose checks compare "
                                 "against this tree's KVLayout, so every call of the old launcher would take the split kernel "
                                 "(session 24 timed that by mistake). Give it the old hopper file as well: see this file's docstring")
            name = os.path.splitext(os.path.basename(a))[0]
            spec = importlib.util.spec_from_file_location(name, a)
            mods[name] = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
            spec.loader.exec_module(mods[name])
        else:
            shapes.append(tuple(int(x) for x in a.split(",")))
    variants = {name: (m, {}, {}) for name, m in mods.items()}
    fields = {f.name for f in dataclasses.fields(now.SplitPolicy)}
    for pairs in sets:
        num = lambda v: float(v) if "." in v else int(v)
        policy = {k: num(v) for k, v in pairs.items() if k in fields}
        launch = {k: LAUNCH_KW[k](v) for k, v in pairs.items() if k in LAUNCH_KW}
        consts = {k: num(v) for k, v in pairs.items() if k not in fields and k not in LAUNCH_KW}
        over = dict(consts, **({"POLICY": dataclasses.replace(now.POLICY, **policy)} if policy else {}))
        variants["HEAD " + ",".join(f"{k}={v}" for k, v in pairs.items())] = (now, over, launch)
    t0 = time.perf_counter()
    for B, H, H_kv, L, *P in shapes or SHAPES:
        case = decode_case(B, H, H_kv, L, block_size=P[0] if P else None, kv=kv)
        times = {n: [] for n in variants}
        errs, splits = {}, {}
        for _ in range(ROUNDS):
            for name, (m, over, launch) in variants.items():
                saved = {k: getattr(m, k) for k in over}
                for k, v in over.items():
                    setattr(m, k, v)
                try:
                    fn = lambda q, layout, m=m, **kw: m.paged_decode_attention(q, layout=m.KVLayout[layout.name], **launch, **kw)
                    if name not in errs:
                        errs[name] = case.rel_err(fn)
                    times[name].append(case.time(fn))
                    splits[name] = launch.get("num_splits") or case.plan(m)[0]
                finally:
                    for k, v in saved.items():
                        setattr(m, k, v)
        line = f"B={B} {H}/{H_kv} L={L}{f' P={P[0]}' if P else ''} {kv} (copy {case.copy_us:.2f} us):"
        base = statistics.median(times[next(iter(variants))])
        for name in variants:
            us = statistics.median(times[name])
            line += f"  {name} {us:.2f} us ({case.copy_us / us:.2f} of copy, x{base / us:.3f}, {splits[name]} splits, err {errs[name]:.1e})"
        print(line + f"  t={time.perf_counter() - t0:.0f}s", flush=True)
        del case
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
