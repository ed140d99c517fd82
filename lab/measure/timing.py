"""Latency: CUDA events per repetition (optionally replaying a CUDA graph) or perf_counter on CPU.

Every raw sample is kept; `Timing.method` says how the numbers were taken so a report can show it
("cuda-events, L2 flushed (verified cold: 1.9x), 50 reps, warm-up 200 ms").

On CUDA the L2 cache is flushed before every repetition by default: a kernel that re-reads its
weights would otherwise be timed from L2, which a real decode step (many layers between two visits
of the same weights) never sees. Writing a buffer twice the L2 size evicts it; `l2_cold_check`
verifies that once per device by timing a read of a buffer smaller than L2 warm and after a flush.
A GPU that sat idle is kept busy for a moment before the warm-up (`spin_up_seconds`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class MeasureConfig:
    reps: int = 50  # timed repetitions (at most; max_time_s may cut them)
    min_reps: int = 5
    warmup_ms: float = 200.0  # warm-up by time, after one untimed call that compiles/loads
    max_time_s: float = 10.0  # budget for the timed repetitions of one point
    l2_flush: bool = True  # write a buffer larger than L2 before each repetition (CUDA only)
    cuda_graph: bool = False  # capture fn once, time graph replays (many small launches)
    bootstrap: int = 2000  # resamples for the 95% CI of the median


@dataclass
class Timing:
    samples_ms: np.ndarray
    method: str  # e.g. "cuda-events, L2 flushed, 50 reps"
    l2_flush: bool = False
    graph: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# After an idle spell (a run's start, a compile between points) a lent GPU took longer than the
# 200 ms warm-up to come back to speed: a run's first timings came out 1.3-1.6x slow and the L2 check
# failed. So an idle GPU is first kept busy with matmuls. That fixed both on an H200, not on session
# 8's H100 (results/baselines/README.md, "Measurement, session 8").
SPIN_UP_FIRST_S = 2.0  # seconds busy before a device's first timing
SPIN_UP_IDLE_S = 0.5  # ... and before a timing that follows IDLE_S or more without one
IDLE_S = 1.0
_LAST_BUSY: dict[int, float] = {}  # device index -> perf_counter when its last timing ended


def spin_up_seconds(device_index: int, now: float) -> float:
    """How long to keep a device busy before timing on it (SPIN_UP_FIRST_S, SPIN_UP_IDLE_S or 0)."""
    last = _LAST_BUSY.get(device_index)
    if last is None:
        return SPIN_UP_FIRST_S
    return SPIN_UP_IDLE_S if now - last > IDLE_S else 0.0


def _spin_up(device: torch.device) -> float:
    """Keeps a CUDA device busy (bf16 4096² matmuls) when it was idle; returns the seconds spent."""
    seconds = spin_up_seconds(device.index, time.perf_counter())
    if not seconds:
        return 0.0
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize(device)
    del a
    return time.perf_counter() - t0


def _warm_up(fn: Callable[[], Any], device: torch.device, warmup_ms: float) -> tuple[int, float, float]:
    """One untimed call (compilation, autotuning, allocation), the GPU spun up if it sat idle
    (_spin_up), then calls until warmup_ms passed: clocks ramp up and caches/allocators settle.
    Returns (calls, ms spent after the spin-up, seconds spun up)."""
    fn()
    _sync(device)
    spun = _spin_up(device) if device.type == "cuda" else 0.0
    calls, t0 = 0, time.perf_counter()
    while (time.perf_counter() - t0) * 1e3 < warmup_ms:
        fn()
        _sync(device)
        calls += 1
    return calls, (time.perf_counter() - t0) * 1e3, spun


def time_fn(fn: Callable[[], Any], device: torch.device | str, cfg: MeasureConfig = MeasureConfig()) -> Timing:
    """Time `fn()` (which must do the whole unit of work) repeatedly on `device`.

    CUDA: a pair of CUDA events around each call (or each replay of a graph captured from fn when
    `cfg.cuda_graph`), L2 flushed before each when `cfg.l2_flush`; the GPU is kept busy while the
    first launch is enqueued, so a sample starts at fn's first kernel (a host-bound fn still shows
    its launch gaps between kernels). CPU: perf_counter around each call. Returns every sample in ms; `method` and `extra` say how they were taken.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    calls, spent, spun = _warm_up(fn, device, cfg.warmup_ms)
    extra: dict[str, Any] = {"warmup_calls": calls, "warmup_ms": round(spent, 1), "reps_asked": cfg.reps, "spin_up_s": round(spun, 2)}
    if device.type == "cuda":
        try:
            return _time_cuda(fn, device, cfg, extra)
        finally:  # busy until now, also when the timing failed (a graph that would not capture)
            _LAST_BUSY[device.index] = time.perf_counter()
    samples: list[float] = []
    start = time.perf_counter()
    for i in range(cfg.reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
        if i + 1 >= cfg.min_reps and time.perf_counter() - start > cfg.max_time_s:
            break
    return Timing(np.asarray(samples), f"cpu perf_counter, {len(samples)} reps, warm-up {cfg.warmup_ms:g} ms", extra=extra)


def stream_copies(nbytes: int, device: torch.device | str, most: int = 64) -> int:
    """How many copies of an input of `nbytes` together hold at least twice the L2 (at least 2, at
    most `most`): cycling over them, every call of a back-to-back stream reads DRAM."""
    device = torch.device(device)
    l2 = _l2_bytes(device) if device.type == "cuda" else 50 * 2**20
    return int(min(most, max(2, -(-2 * l2 // max(int(nbytes), 1)))))


def time_stream(fns: Sequence[Callable[[], Any]], device: torch.device | str, cfg: MeasureConfig = MeasureConfig()) -> Timing:
    """Per-call time of `fns` run back to back, as a decode step runs its kernels: on CUDA captured
    in ONE graph (each fn on its own copy of the inputs, see `stream_copies`), and every sample is
    one replay divided by len(fns). Timing one call per replay instead adds the graph's launch
    latency (~3-4 µs on an H200) to every sample, which a decode step of hundreds of kernels pays
    once; for kernels of a few µs that latency, not the kernel, would decide the comparison.
    No L2 flush before a replay: the copies already make every call read DRAM, and a flush
    would leave L2 full of dirty lines whose write-back the first calls would pay (~60 MB on an
    H200: +3-5 µs a call over 4 copies). On the CPU the calls simply run in turn."""
    fns = list(fns)
    n = len(fns)
    if n == 0:
        raise ValueError("time_stream: needs at least one call to time")
    run_all = lambda: [f() for f in fns]
    device = torch.device(device)
    t = time_fn(run_all, device, replace(cfg, cuda_graph=device.type == "cuda", l2_flush=False))
    method = f"{n} calls back to back on {n} input copies (> 2x L2, no flush), per call; {t.method}"
    return Timing(t.samples_ms / n, method, t.l2_flush, t.graph, {**t.extra, "calls_per_sample": n})


def _time_cuda(fn: Callable[[], Any], device: torch.device, cfg: MeasureConfig, extra: dict[str, Any]) -> Timing:
    run, graph_note = fn, ""
    if cfg.cuda_graph:
        try:
            run = _capture(fn, device)
        except Exception as e:  # a non-capturable op (a host sync, .item()): time eagerly, and say so
            graph_note = f" (graph capture failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
            extra["graph_error"] = graph_note.strip(" ()")
            torch.cuda.synchronize(device)
    graph = cfg.cuda_graph and not graph_note
    flush = _flush_buffer(device) if cfg.l2_flush else None
    if flush is not None:
        extra["l2_check"] = l2_cold_check(device)
    samples: list[float] = []
    start = time.perf_counter()
    for i in range(cfg.reps):
        # Either way the GPU is kept busy while the host enqueues the start event and fn's first
        # launch, so a sample is GPU time from fn's first kernel to its last, not host launch
        # latency (otherwise an L2-warm sample would pay it and a flushed one would not).
        # The flush runs before `a` on the same stream, so it is not timed.
        if flush is not None:
            flush.fill_(i)
        elif hasattr(torch.cuda, "_sleep"):
            torch.cuda._sleep(_SPIN_CYCLES)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b))
        if i + 1 >= cfg.min_reps and time.perf_counter() - start > cfg.max_time_s:
            break
    how = "cuda-graph replay" if graph else "cuda-events"
    if flush is None:
        l2 = "L2 warm"
    else:
        chk = extra["l2_check"]
        l2 = f"L2 flushed ({'verified cold' if chk['cold'] else 'NOT verified cold'}: {chk['ratio']:.1f}x)"
    method = f"{how}{graph_note}, {l2}, {len(samples)} reps, warm-up {cfg.warmup_ms:g} ms"
    return Timing(np.asarray(samples), method, flush is not None, graph, extra)


def _capture(fn: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    # Warm up on a side stream first, as torch's docs ask: lazy init (cuBLAS handles, workspaces)
    # must not happen inside the capture.
    s = torch.cuda.Stream(device)
    s.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize(device)
    return g.replay


# ---- L2 ----------------------------------------------------------------------------------------
_FLUSH: dict[int, torch.Tensor] = {}
_SPIN_CYCLES = 50_000  # ~25-35 µs at 1.4-2 GHz: longer than enqueueing an event and a launch
_L2_CHECK: dict[int, dict[str, Any]] = {}


def _l2_bytes(device: torch.device) -> int:
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20)


def _flush_buffer(device: torch.device) -> torch.Tensor:
    """A buffer of twice the L2 size, allocated once per device (allocating it per point would
    churn the caching allocator and show up in memory peaks)."""
    idx = device.index or 0
    if idx not in _FLUSH:
        _FLUSH[idx] = torch.empty(2 * _l2_bytes(device) // 4, dtype=torch.int32, device=device)
    return _FLUSH[idx]


def _event_time_ms(fn: Callable[[], Any], before: Callable[[], Any] | None = None) -> float:
    if before is not None:
        before()
    if hasattr(torch.cuda, "_sleep"):
        torch.cuda._sleep(_SPIN_CYCLES)  # the two events and fn enqueue back to back behind it
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def l2_cold_check(device: torch.device | str, reps: int = 25) -> dict[str, Any]:
    """Whether writing the flush buffer really evicts L2, measured once per device and cached.

    Times a sum over a buffer a quarter of L2 in size, first right after reading it (warm: served
    from L2), then right after the flush (cold: from DRAM). `cold` is true when the flushed read is
    at least 1.15x slower, the gap expected between L2 and HBM bandwidth. CUDA only.
    """
    device = torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    idx = device.index
    if idx in _L2_CHECK:
        return _L2_CHECK[idx]
    l2 = _l2_bytes(device)
    flush = _flush_buffer(device)
    probe = torch.rand(l2 // 4 // 4, device=device)  # float32, a quarter of L2
    out = torch.empty((), device=device)
    read = lambda: torch.sum(probe, dim=0, out=out)
    read()
    warm = [_event_time_ms(read, before=read) for _ in range(reps)]
    cold = [_event_time_ms(read, before=lambda i=i: flush.fill_(i)) for i in range(reps)]
    w, c = float(np.median(warm)), float(np.median(cold))
    res = {
        "l2_bytes": l2,
        "probe_bytes": probe.numel() * 4,
        "warm_us": round(w * 1e3, 2),
        "cold_us": round(c * 1e3, 2),
        "ratio": c / w if w > 0 else float("nan"),
        "cold": bool(w > 0 and c / w >= 1.15),
    }
    _L2_CHECK[idx] = res
    del probe
    return res
