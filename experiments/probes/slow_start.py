"""Why a lent GPU's first timings after an idle spell are slow (results/baselines/README.md,
"Measurement, session 8": the spin-up in lab.measure.timing cured it on an H200, not on an H100).

For each case, the GPU first sits idle for IDLE_S seconds, then one kernel is called back to back
for RUN_S seconds, each call timed as the benchmark times a repetition (L2 flushed first). Every
call's time is printed on a timeline beside the SM clock, the memory clock and the power that
NVML reads right after it. A slow start with low clocks is the clocks; a slow start at full clocks is something
else. Cases:
- prefill D = 128, S = 1K causal, compiled first;
- the same after lab.measure.timing's spin-up;
- a bf16 matmul.
Needs a CUDA GPU and nvidia-ml-py:

    python experiments/probes/slow_start.py
"""
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch

from kernels.attention_prefill import flash_attention
from lab.measure import timing
from lab.measure.provenance import clocks

IDLE_S, RUN_S = 3.0, 2.0


def timeline(name: str, fn, spin: bool = False) -> None:
    dev = torch.device("cuda", torch.cuda.current_device())
    fn()
    torch.cuda.synchronize()
    time.sleep(IDLE_S)
    if spin:
        timing._LAST_BUSY.pop(dev.index, None)  # as before a device's first timing
        timing._spin_up(dev)
    flush = timing._flush_buffer(dev)
    t0, rows = time.perf_counter(), []
    while time.perf_counter() - t0 < RUN_S:
        ms = timing._event_time_ms(fn, before=lambda: flush.fill_(len(rows)))  # as the benchmark times a rep
        c = clocks(dev) or {}
        w = c.get("power_w")
        rows.append((time.perf_counter() - t0, ms, c.get("sm_mhz"), c.get("mem_mhz"), None if w is None else round(w)))
    last = sorted(r[1] for r in rows[-20:])[10]
    print(f"{name}: {len(rows)} calls, the last 20's median {last:.3f} ms", flush=True)
    for i, (t, ms, sm, mem, w) in enumerate(rows):
        if i < 30 or i % 25 == 0:
            print(f"  {t * 1e3:7.1f} ms  call {i:4d}  {ms:7.3f} ms ({ms / last:4.2f}x)  SM {sm} MHz  mem {mem} MHz  {w} W", flush=True)


def main():
    dev = torch.device("cuda")
    q, k, v = (torch.randn(16, 32, 1024, 128, device=dev, dtype=torch.bfloat16) for _ in range(3))
    out = torch.empty_like(q)
    attn = lambda: flash_attention(q, k, v, causal=True, out=out)
    timeline("prefill D=128 S=1K causal, after idle", attn)
    timeline("prefill D=128 S=1K causal, after idle and the spin-up", attn, spin=True)
    m = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    timeline("bf16 matmul 8192³, after idle", lambda: m @ m)


if __name__ == "__main__":
    main()
