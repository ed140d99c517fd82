"""Whether the merge kernel should always take programmatic dependent launch (SplitPolicy.merge_pdl):
its predecessor in the stream is always our own split kernel, so its launch can overlap the split
kernel's run whatever ran before. Times the default policy with merge_pdl off and on, and the fused
merge against the second kernel at the split counts where the fused one is the default; bf16
contiguous cache, stream timing, 3 rounds interleaved. Needs a CUDA GPU:

    python experiments/probes/decode_merge_pdl.py
"""
import dataclasses, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import kernels.attention_decode as ad
from kernels.attention_decode import paged_decode_attention, paged_from_contiguous, bytes_moved, decode_reference
from lab.benchmarks._common import copy_same_bytes, input_copies, stream_us

T0 = time.perf_counter()
BASE = ad.POLICY
VARIANTS = {  # name -> (policy, fused_merge)
    "no merge pdl": (dataclasses.replace(BASE, merge_pdl=False), None),
    "merge pdl": (dataclasses.replace(BASE, merge_pdl=True), None),
    "2-kern, merge pdl": (dataclasses.replace(BASE, merge_pdl=True), False),
    "2-kern, no merge pdl": (dataclasses.replace(BASE, merge_pdl=False), False),
}

for B, H, H_kv, L in [(1, 32, 8, 8192), (1, 9, 3, 8192), (1, 32, 8, 32768), (1, 9, 3, 32768), (16, 32, 8, 8192), (16, 9, 3, 8192), (4, 32, 8, 8192)]:
    D = 128 if H == 32 else 64
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(B, H_kv, L, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn_like(k)
    lens = torch.full((B,), L, dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    nb = bytes_moved(B, H, H_kv, D, B * L)
    kvs = input_copies(lambda i: (k, v) if i == 0 else (k.clone(), v.clone()), 2 * k.numel() * 2, torch.device("cuda"))
    caches = [paged_from_contiguous(kc, vc, lens) for kc, vc in kvs]
    ref = decode_reference(q, **caches[0].kwargs())
    cp = stream_us(copy_same_bytes(nb, torch.device("cuda")))
    splits = ad.default_num_splits(B, H_kv, L, torch.device("cuda"))
    times = {n: [] for n in VARIANTS}
    for _ in range(3):
        for name, (policy, fused) in VARIANTS.items():
            if fused is False and not BASE.fused(splits):
                continue
            ad.POLICY = policy
            try:
                o = paged_decode_attention(q, **caches[0].kwargs(), fused_merge=fused)
                err = ((o.double() - ref).abs().max() / ref.abs().max()).item()
                assert err < 2e-2, f"{name}: max rel err {err}"
                times[name].append(stream_us([lambda c=c: paged_decode_attention(q, **c.kwargs(), out=out, fused_merge=fused) for c in caches]))
            finally:
                ad.POLICY = BASE
    line = f"B={B} {H}/{H_kv} D={D} L={L} ({splits} splits, copy {cp:.2f} us):"
    for name, ts in times.items():
        if ts:
            us = sorted(ts)[len(ts) // 2]
            line += f"  {name} {us:.2f} ({cp / us:.2f})"
    print(line + f"  t={time.perf_counter() - T0:.0f}s", flush=True)
    del caches, kvs
    torch.cuda.empty_cache()
print(f"done t={time.perf_counter() - T0:.0f}s")
