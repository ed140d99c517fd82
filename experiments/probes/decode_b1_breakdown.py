"""Where batch-1 decode time goes (results/baselines/README.md, "Decode at batch 1, session 7"):
the split kernel alone (merge kernel not launched) against split + merge kernel and the fused
merge, by split count, and a few tile configs; bf16 contiguous cache, stream timing. Needs a
CUDA GPU:

    python experiments/probes/decode_b1_breakdown.py
"""
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import kernels.attention_decode as ad
from kernels.attention_decode import DecodeConfig
from experiments.probes._decode_case import decode_case

T0 = time.perf_counter()
real_merge = ad._decode_merge


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *a, **k: None


for H, H_kv, L in [(32, 8, 8192), (9, 3, 8192), (32, 8, 32768), (9, 3, 32768)]:
    case = decode_case(1, H, H_kv, L)
    D, cp = case.q.shape[-1], case.copy_us
    s0 = case.default_splits()
    base = case.time()
    print(f"H={H}/{H_kv} D={D} L={L}: copy {cp:.2f}us default ({s0} splits) {base:.2f}us = {cp / base:.2f} of copy  t={time.perf_counter() - T0:.0f}s", flush=True)
    for s in sorted({8, 12, 16, 20, 24, 28, s0, 40, 48, 66}):
        line = f"  splits {s:3d}:"
        for fused in (False, True):
            us = case.time(num_splits=s, fused_merge=fused)
            line += f" {'fused' if fused else '2-kern'} {us:6.2f}"
        ad._decode_merge = _NoLaunch()
        try:
            us = case.time(num_splits=s, fused_merge=False)
        finally:
            ad._decode_merge = real_merge
        line += f" | split kernel alone {us:6.2f}"
        print(line, flush=True)
    for cfg in (DecodeConfig(32, 4, 3), DecodeConfig(32, 4, 5), DecodeConfig(64, 4, 4), DecodeConfig(64, 8, 3), DecodeConfig(128, 4, 2), DecodeConfig(128, 8, 3)):
        try:
            us = case.time(config=cfg)
            print(f"  {cfg}: {us:.2f}", flush=True)
        except Exception as e:
            print(f"  {cfg}: {type(e).__name__} {str(e)[:100]}", flush=True)
    del case
    torch.cuda.empty_cache()
print(f"done t={time.perf_counter() - T0:.0f}s")
