"""Latency: CUDA events per repetition (optionally replaying a CUDA graph) or perf_counter on CPU.

Every raw sample is kept; `Timing.method` says how the numbers were taken so a report can show it
("cuda-events, L2 flushed (verified cold: 1.9x), 50 reps, warm-up 200 ms").

On CUDA the L2 cache is flushed before every repetition by default: a kernel that re-reads its
weights would otherwise be timed from L2, which a real decode step (many layers between two visits
of the same weights) never sees. Writing a buffer twice the L2 size evicts it; `l2_cold_check`
verifies that once per device by timing a read of a buffer smaller than L2 warm and after a flush.

By default each CUDA sample starts behind a GPU-side pre-roll (`torch.cuda._sleep`) long enough that the host
has enqueued the start event and the whole call before the GPU reaches them (`sample_fed`: it
grows whenever a sample shows the GPU waited on the host), so a sample is device time, not the
host's launch latency; the host's enqueue time is recorded beside it (`extra`). That is a kernel's
cost. What a caller waits for one call of a whole model (time to first token, an eager decode
step) also holds the host's enqueue, which for ~50 launches a layer can exceed the GPU's work:
`MeasureConfig.end_to_end` times each call from an idle GPU instead, the host's time inside.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, NamedTuple, Sequence

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
    # CUDA: each call from an idle GPU, the host's enqueue inside the sample (the latency a caller
    # waits), instead of the device time of the call queued behind a pre-roll (a kernel's cost).
    # CPU samples are wall time either way. Set by the code that times, not a run-wide setting:
    # the model-level scenarios turn it on, the kernel benchmarks and time_stream off.
    end_to_end: bool = False


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


def _warm_up(fn: Callable[[], Any], device: torch.device, warmup_ms: float) -> tuple[int, float]:
    """One untimed call (compilation, autotuning, allocation), then calls until warmup_ms passed:
    clocks ramp up and caches/allocators settle. Returns (calls, ms spent after the first)."""
    fn()
    _sync(device)
    calls, t0 = 0, time.perf_counter()
    while (time.perf_counter() - t0) * 1e3 < warmup_ms:
        fn()
        _sync(device)
        calls += 1
    return calls, (time.perf_counter() - t0) * 1e3


def time_fn(fn: Callable[[], Any], device: torch.device | str, cfg: MeasureConfig = MeasureConfig()) -> Timing:
    """Time `fn()` (which must do the whole unit of work) repeatedly on `device`.

    CUDA: a pair of CUDA events around each call (or each replay of a graph captured from fn when
    `cfg.cuda_graph`), L2 flushed before each when `cfg.l2_flush`, behind a pre-roll that outlasts
    the host's enqueue of the call: a sample is the device time of fn's launches, queued (see
    `_event_sample`); a sample the GPU idled in, waiting for the host, is taken again behind a
    longer pre-roll, so on CUDA fn runs up to MAX_RETAKES more times than there are samples. The
    host's enqueue time per call is in extra["host_enqueue_ms"]: where it exceeds the device time,
    a loop of eager calls runs at the host's pace, and the method says so (left out where fn syncs
    with the host: extra["samples_host_waited"]). With `cfg.end_to_end` each call runs from an idle
    GPU instead, the host's enqueue inside the sample (the latency its caller waits): no pre-roll,
    no retakes, extra["end_to_end"] set and the host's own median in extra["host_ms"] (not
    host_enqueue_ms: it is inside the samples, not a separate row). CPU: perf_counter around each
    call. Returns every sample in ms; `method` and `extra` say how
    they were taken.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    calls, spent = _warm_up(fn, device, cfg.warmup_ms)
    extra: dict[str, Any] = {"warmup_calls": calls, "warmup_ms": round(spent, 1), "reps_asked": cfg.reps}
    if device.type == "cuda":
        return _time_cuda(fn, device, cfg, extra)
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
    t = time_fn(run_all, device, replace(cfg, cuda_graph=device.type == "cuda", l2_flush=False, end_to_end=False))
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
    samples, hosts, retakes, waited, preroll = [], [], 0, 0, _Preroll()
    start = time.perf_counter()
    for i in range(cfg.reps):
        before = (lambda i=i: flush.fill_(i)) if flush is not None else None  # runs before the pre-roll: not timed
        if cfg.end_to_end:
            s = _idle_sample(run, device, before)
            fed = Fed(s.ms, s.host_ms, 0, 0, False)
        else:
            fed = preroll.take(run, before, retake=not waited)
        retakes, waited = retakes + fed.retakes, waited + fed.waited
        samples.append(fed.ms)
        hosts.append(fed.host_ms)
        if i + 1 >= cfg.min_reps and time.perf_counter() - start > cfg.max_time_s:
            break
    if cfg.end_to_end:  # the host's time is inside every sample (and may hold syncs): no separate row
        extra.update(end_to_end=True, host_ms=round(float(np.median(hosts)), 4))
        host_note = ", each call from an idle GPU (end to end: the host's part inside the sample)"
    elif waited:  # the host times may hold waits on the GPU, not enqueue time: not recorded
        extra.update(preroll_cycles=preroll.cycles, samples_retaken=retakes, samples_host_waited=waited)
        host_note = f", {waited} samples include host waits (fn syncs with the host, or enqueues for longer than the longest pre-roll)"
    else:
        host = float(np.median(hosts))
        extra.update(preroll_cycles=preroll.cycles, samples_retaken=retakes, host_enqueue_ms=round(host, 4))
        host_note = f", host-bound: enqueue {host * 1e3:.0f} us a call" if host > float(np.median(samples)) else ""
    how = "cuda-graph replay" if graph else "cuda-events"
    if flush is None:
        l2 = "L2 warm"
    else:
        chk = extra["l2_check"]
        l2 = f"L2 flushed ({'verified cold' if chk['cold'] else 'NOT verified cold'}: {chk['ratio']:.1f}x)"
    method = f"{how}{graph_note}, {l2}, {len(samples)} reps, warm-up {cfg.warmup_ms:g} ms{host_note}"
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


# The pre-roll: a GPU-side sleep enqueued before a sample's start event, so the host can enqueue
# the event and the whole call while the GPU is still busy. Too short, and the sample holds the
# host's enqueue time: a Triton launch through its Python wrapper took 100-600 µs on session 9's
# H100 host, and with the old fixed 50K cycles every prefill sample waited on the host (0.59 ms
# against 0.44 behind a 1 ms pre-roll; experiments/probes/slow_start.py). Each timing starts at
# PREROLL_MIN_CYCLES and doubles the pre-roll whenever a sample finds the GPU already past its
# start event once the call is enqueued; that sample is taken again. The pre-roll only grows, so a
# timing retakes at most MAX_RETAKES samples: fn runs at most that many times more than the
# samples it yields (a caller whose calls consume something, e.g. KV-cache slots, sizes for it).
PREROLL_MIN_CYCLES = 50_000  # ~25-35 µs at 1.4-2 GHz
PREROLL_MAX_CYCLES = 8_000_000  # ~4-6 ms: a call still starved behind it waits on the host itself
MAX_RETAKES = math.ceil(math.log2(PREROLL_MAX_CYCLES / PREROLL_MIN_CYCLES))


class Sample(NamedTuple):
    ms: float  # start event to end event: device time behind a pre-roll, end to end from an idle GPU
    host_ms: float  # the host's time inside run(): its enqueue (plus any wait, if fn syncs)
    starved: bool  # the start event had completed when run() returned: the GPU may have idled inside the sample


class Fed(NamedTuple):
    ms: float  # the sample kept (device time, or end to end)
    host_ms: float  # the host's enqueue time at the first try (retakes are the slow enqueues: keeping the last would bias it low)
    cycles: int  # the pre-roll that fed it (the next sample starts there)
    retakes: int
    waited: bool  # still starved at PREROLL_MAX_CYCLES (or retaking was off): fn syncs, or enqueues for longer than that


def sample_fed(sample: Callable[[int], Sample], cycles: int, retake: bool = True) -> Fed:
    """`sample(cycles)`, taken again with the pre-roll doubled while it was starved and the pre-roll
    can still grow (and `retake`). A sample starved at PREROLL_MAX_CYCLES is kept and flagged
    `waited` (fn syncs with the host: .item(), a blocking copy)."""
    first = s = sample(cycles)
    retakes = 0
    while s.starved and retake and cycles < PREROLL_MAX_CYCLES:
        cycles = min(2 * cycles, PREROLL_MAX_CYCLES)
        s = sample(cycles)
        retakes += 1
    return Fed(s.ms, first.host_ms, cycles, retakes, s.starved)


class _Preroll:
    """One timing's pre-roll: starts at PREROLL_MIN_CYCLES and carries what `sample_fed` grew it
    to over to the timing's next samples."""

    def __init__(self):
        self.cycles = PREROLL_MIN_CYCLES

    def take(self, run: Callable[[], Any], before: Callable[[], Any] | None = None, retake: bool = True) -> Fed:
        fed = sample_fed(lambda c: _event_sample(run, c, before), self.cycles, retake)
        self.cycles = fed.cycles
        return fed


def _event_sample(run: Callable[[], Any], cycles: int, before: Callable[[], Any] | None = None) -> Sample:
    """One event-timed call behind a pre-roll of `cycles`. Starved: the start event had completed
    by the time run() returned, so the GPU may have idled inside the sample waiting for the host
    (sound on one stream: an incomplete start event means the whole call was queued behind it)."""
    if before is not None:
        before()
    torch.cuda._sleep(cycles)
    return _between_events(run)


def _idle_sample(run: Callable[[], Any], device: torch.device, before: Callable[[], Any] | None = None) -> Sample:
    """One event-timed call from an idle GPU: the start event is reached as soon as it is
    recorded, so the sample runs from the host starting to enqueue the call to the GPU finishing
    it, the latency a caller of fn waits (the host's part is also in host_ms). `before` (the L2
    flush) has finished before the sample starts."""
    if before is not None:
        before()
    torch.cuda.synchronize(device)
    return _between_events(run)


def _between_events(run: Callable[[], Any]) -> Sample:
    """run() between a pair of CUDA events, with the host's time inside run() and whether the
    start event had completed by the time it returned."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    t = time.perf_counter()
    run()
    host_ms = (time.perf_counter() - t) * 1e3
    starved = a.query()
    b.record()
    b.synchronize()
    return Sample(a.elapsed_time(b), host_ms, starved)


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
    preroll = _Preroll()
    warm = [preroll.take(read, before=read).ms for _ in range(reps)]
    cold = [preroll.take(read, before=lambda i=i: flush.fill_(i)).ms for i in range(reps)]
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
