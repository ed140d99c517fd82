"""Whether the merge kernel should always take programmatic dependent launch (SplitPolicy.merge_pdl):
its predecessor in the stream is always our own split kernel, so its launch can overlap the split
kernel's run whatever ran before. Times the default policy with merge_pdl off and on, and the fused
merge against the second kernel at the split counts where, without PDL, the fused one is the
default (with PDL the second kernel is the default everywhere since session 11); bf16
contiguous cache, stream timing, 3 rounds interleaved. Needs a CUDA GPU:

    python experiments/probes/decode_merge_pdl.py
"""
import dataclasses, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import kernels.attention_decode as ad
from experiments.probes._decode_case import decode_case

T0 = time.perf_counter()
BASE = ad.POLICY
VARIANTS = {  # name -> (policy, fused_merge)
    "no merge pdl": (dataclasses.replace(BASE, merge_pdl=False), None),
    "merge pdl": (dataclasses.replace(BASE, merge_pdl=True), None),
    "2-kern, merge pdl": (dataclasses.replace(BASE, merge_pdl=True), False),
    "2-kern, no merge pdl": (dataclasses.replace(BASE, merge_pdl=False), False),
}

for B, H, H_kv, L in [(1, 32, 8, 8192), (1, 9, 3, 8192), (1, 32, 8, 32768), (1, 9, 3, 32768), (16, 32, 8, 8192), (16, 9, 3, 8192), (4, 32, 8, 8192)]:
    case = decode_case(B, H, H_kv, L)
    cp = case.copy_us
    splits = case.default_splits()
    times = {n: [] for n in VARIANTS}
    for _ in range(3):
        for name, (policy, fused) in VARIANTS.items():
            if fused is False and not BASE.fused(splits):
                continue
            ad.POLICY = policy
            try:
                err = case.rel_err(fused_merge=fused)
                assert err < 2e-2, f"{name}: max rel err {err}"
                times[name].append(case.time(fused_merge=fused))
            finally:
                ad.POLICY = BASE
    line = f"B={B} {H}/{H_kv} D={case.q.shape[-1]} L={L} ({splits} splits, copy {cp:.2f} us):"
    for name, ts in times.items():
        if ts:
            us = sorted(ts)[len(ts) // 2]
            line += f"  {name} {us:.2f} ({cp / us:.2f})"
    print(line + f"  t={time.perf_counter() - T0:.0f}s", flush=True)
    del case
    torch.cuda.empty_cache()
print(f"done t={time.perf_counter() - T0:.0f}s")
