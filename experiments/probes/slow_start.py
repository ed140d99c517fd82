"""Why a lent GPU's first timings after an idle spell looked slow (results/baselines/README.md,
"Measurement, session 9").

For each case, the GPU first sits idle for IDLE_S seconds, then one kernel is called back to back
for RUN_S seconds, each call timed as the benchmark times a repetition: L2 flushed, the GPU kept
busy (torch.cuda._sleep) while the host enqueues the start event and the call, then the event
pair. Printed per call on a timeline: the event time, the host's enqueue time of the call, whether
the start event had already completed when the call was enqueued ("starved": the GPU waited on the
host inside the timed span), and the SM clock, memory clock and power NVML reads right after.
Cases: prefill D = 128, S = 1K causal, after idle, behind session 8's fixed pre-roll of 50K
cycles and behind 2M (~1 ms); then lab.measure.timing.time_fn itself, after idle.
Session 9, H100: behind 50K cycles every call was starved (the host took 100-600 µs to enqueue
one launch) and the median was 0.59 ms; behind 2M none was, and every call from the first took
0.44 ms. Session 8's spin-up (matmuls before timing an idle GPU) left the H100 at its 700 W
power cap and 1425 MHz for the first ~70 ms after it: it was dropped.
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


def timeline(name: str, fn, cycles: int) -> None:
    dev = torch.device("cuda", torch.cuda.current_device())
    fn()
    torch.cuda.synchronize()
    time.sleep(IDLE_S)
    flush = timing._flush_buffer(dev)
    t0, rows = time.perf_counter(), []
    while time.perf_counter() - t0 < RUN_S:
        # one sample exactly as the harness takes it, at a fixed pre-roll (no retaking)
        ms, host_ms, starved = timing._event_sample(fn, cycles, before=lambda: flush.fill_(len(rows)))
        host_us = host_ms * 1e3
        c = clocks(dev) or {}
        w = c.get("power_w")
        rows.append((time.perf_counter() - t0, ms, host_us, starved, c.get("sm_mhz"), c.get("mem_mhz"), None if w is None else round(w)))
    last = sorted(r[1] for r in rows[-20:])[10]
    n_starved = sum(r[3] for r in rows)
    slow = [r for r in rows if r[1] > 1.15 * last]
    print(f"{name}: {len(rows)} calls, the last 20's median {last:.3f} ms; {len(slow)} calls > 1.15x, {n_starved} starved "
          f"({sum(r[3] for r in slow)} of the slow ones); last slow call at {max((r[0] for r in slow), default=0) * 1e3:.0f} ms", flush=True)
    for i, (t, ms, host, st, sm, mem, w) in enumerate(rows):
        if i < 20 or i % 50 == 0:
            print(f"  {t * 1e3:7.1f} ms  call {i:4d}  {ms:7.3f} ms ({ms / last:4.2f}x)  host {host:6.1f} us  {'STARVED' if st else 'ok     '}"
                  f"  SM {sm} MHz  mem {mem} MHz  {w} W", flush=True)


def main():
    dev = torch.device("cuda")
    q, k, v = (torch.randn(16, 32, 1024, 128, device=dev, dtype=torch.bfloat16) for _ in range(3))
    out = torch.empty_like(q)
    attn = lambda: flash_attention(q, k, v, causal=True, out=out)
    for cycles in (50_000, 2_000_000):  # session 8's fixed pre-roll, and ~1 ms
        timeline(f"prefill D=128 S=1K causal, after idle, pre-roll {cycles} cycles", attn, cycles)
    time.sleep(IDLE_S)
    t = timing.time_fn(attn, dev)
    print(f"time_fn after idle: median {t.median_ms:.3f} ms, first {t.samples_ms[:5].round(3).tolist()}, {t.method}; {t.extra}")


if __name__ == "__main__":
    main()
