"""Where the fused merge (the last program of a group merges) beats the merge kernel: at batch 1
the default takes the second kernel past 16 splits (SplitPolicy.fused_merge_up_to), a rule set at
32/8 heads, D = 128, where the fused tail reads G·splits·D·4 = 64 KB at 32 splits. At 9/3 heads,
D = 64 the same 32 splits are 24 KB. Times, per shape, the default, then fused and two kernels at
several split counts; bf16 contiguous cache, stream timing, 3 rounds interleaved. Needs a CUDA GPU:

    python experiments/probes/decode_fused_threshold.py [B,H,H_kv,L ...] [--splits S,S,...]
"""
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import kernels.attention_decode as ad
from experiments.probes._decode_case import decode_case

T0 = time.perf_counter()
dev = torch.device("cuda")
argv = sys.argv[1:]
SPLITS = [8, 16, 24, 32, 48, 64]
if "--splits" in argv:
    i = argv.index("--splits")
    SPLITS = [int(x) for x in argv[i + 1].split(",") if x]
    del argv[i : i + 2]
SHAPES = [tuple(int(x) for x in a.split(",")) for a in argv] or [
    (1, 9, 3, 8192), (1, 9, 3, 32768), (2, 9, 3, 8192), (4, 9, 3, 8192), (1, 32, 8, 8192), (1, 32, 8, 32768)]
for B, H, H_kv, L in SHAPES:
    case = decode_case(B, H, H_kv, L)
    cp = case.copy_us
    default = case.default_splits()
    variants = {"default": (None, None)}
    for s in sorted({*SPLITS, default}):
        for fused in (True, False):
            variants[f"{'fused' if fused else '2-kern'} s{s}"] = (s, fused)
    times = {n: [] for n in variants}
    for _ in range(3):
        for name, (s, fused) in variants.items():
            err = case.rel_err(num_splits=s, fused_merge=fused)
            assert err < 2e-2, f"{name}: max rel err {err}"
            times[name].append(case.time(num_splits=s, fused_merge=fused))
    print(f"B={B} {H}/{H_kv} D={case.q.shape[-1]} L={L} (default {default} splits, copy {cp:.2f} us)")
    for name, ts in times.items():
        us = sorted(ts)[1]
        print(f"   {name:>12} {us:6.2f} us  {cp / us:.2f} of the copy")
    print(f"   t={time.perf_counter() - T0:.0f}s", flush=True)
    del case
    torch.cuda.empty_cache()
print(f"done t={time.perf_counter() - T0:.0f}s")
