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
from kernels.attention_decode import paged_decode_attention, paged_from_contiguous, bytes_moved, DecodeConfig
from lab.benchmarks._common import copy_same_bytes, input_copies, stream_us

T0 = time.perf_counter()
real_merge = ad._decode_merge


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *a, **k: None


def run(q, caches, out, **kw):
    return stream_us([lambda c=c: paged_decode_attention(q, **c.kwargs(), out=out, **kw) for c in caches])


for H, H_kv, L in [(32, 8, 8192), (9, 3, 8192), (32, 8, 32768), (9, 3, 32768)]:
    D = 128 if H == 32 else 64
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, H_kv, L, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn_like(k)
    lens = torch.full((1,), L, dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    nb = bytes_moved(1, H, H_kv, D, L)
    kvs = input_copies(lambda i: (k, v) if i == 0 else (k.clone(), v.clone()), 2 * k.numel() * 2, torch.device("cuda"))
    caches = [paged_from_contiguous(kc, vc, lens) for kc, vc in kvs]
    cp = stream_us(copy_same_bytes(nb, torch.device("cuda")))
    s0 = ad.default_num_splits(1, H_kv, L, torch.device("cuda"))
    base = run(q, caches, out)
    print(f"H={H}/{H_kv} D={D} L={L}: copy {cp:.2f}us default ({s0} splits) {base:.2f}us = {cp / base:.2f} of copy  t={time.perf_counter() - T0:.0f}s", flush=True)
    for s in sorted({8, 12, 16, 20, 24, 28, s0, 40, 48, 66}):
        line = f"  splits {s:3d}:"
        for fused in (False, True):
            us = run(q, caches, out, num_splits=s, fused_merge=fused)
            line += f" {'fused' if fused else '2-kern'} {us:6.2f}"
        ad._decode_merge = _NoLaunch()
        try:
            us = run(q, caches, out, num_splits=s, fused_merge=False)
        finally:
            ad._decode_merge = real_merge
        line += f" | split kernel alone {us:6.2f}"
        print(line, flush=True)
    for cfg in (DecodeConfig(32, 4, 3), DecodeConfig(32, 4, 5), DecodeConfig(64, 4, 4), DecodeConfig(64, 8, 3), DecodeConfig(128, 4, 2), DecodeConfig(128, 8, 3)):
        try:
            us = run(q, caches, out, config=cfg)
            print(f"  {cfg}: {us:.2f}", flush=True)
        except Exception as e:
            print(f"  {cfg}: {type(e).__name__} {str(e)[:100]}", flush=True)
    del caches, kvs
    torch.cuda.empty_cache()
print(f"done t={time.perf_counter() - T0:.0f}s")
