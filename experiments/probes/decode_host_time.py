"""Host time of one paged_decode_attention call (what an eager loop pays per layer), over the
contiguous view and over blocks of 16 (eager: the split kernel; before commit ad50fbf the contiguous
view took the persistent Hopper kernel at batch 1 on sm_90, 182 µs against 112-139 on an H100), the launcher
at HEAD against the one in a given file (e.g. `git show REV:kernels/attention_decode.py >
/tmp/old.py`): median over 2000 calls of the enqueue alone, the GPU kept busy so no call waits.
Needs a CUDA GPU:

    python experiments/probes/decode_host_time.py [/tmp/old.py]
"""
import importlib.util, os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import kernels.attention_decode as now

mods = {"HEAD": now}
if len(sys.argv) > 1:
    spec = importlib.util.spec_from_file_location("decode_before", sys.argv[1])
    mods["before"] = sys.modules["decode_before"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(mods["before"])


def enqueue_us(m, q, kw) -> float:
    """Median host time of one call of module m's launcher, over 2000 calls."""
    for _ in range(20):
        m.paged_decode_attention(q, **kw)
    torch.cuda.synchronize()
    ts = []
    for i in range(2000):
        if i % 100 == 0:
            torch.cuda.synchronize()
            torch.cuda._sleep(50_000_000)  # ~25 ms of GPU work queued first: no launch waits on a full queue
        t = time.perf_counter()
        m.paged_decode_attention(q, **kw)
        ts.append(time.perf_counter() - t)
    torch.cuda.synchronize()
    return statistics.median(ts) * 1e6


for B, H, H_kv, L in [(1, 9, 3, 8192), (1, 32, 8, 8192), (16, 32, 8, 8192)]:
    D = 128 if H == 32 else 64
    q = torch.randn(B, H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, H_kv, L, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    for walk, P in (("view", None), ("P16", 16)):
        times = {name: enqueue_us(m, q, m.paged_from_contiguous(k, v, block_size=P).kwargs()) for name, m in mods.items()}
        print(f"B={B} {H}/{H_kv} L={L} {walk}:" + "".join(f"  {n} {us:.1f} us" for n, us in times.items()), flush=True)
