"""What every kernel suite shares: dtype and timing settings by device, the error measure, and the
torch.compile peer."""
from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from lab.measure.timing import MeasureConfig, stream_copies
from lab.records import Recorder

COMPILE_BUDGET_S = 30.0


def bench_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU; float32 on the CPU, where Triton's interpreter is not faithful for bf16."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def bench_measure(rec: Recorder, device: torch.device) -> MeasureConfig:
    """The run's measurement on a GPU (device time: a kernel's cost, never end to end); on the CPU
    (the interpreter: a smoke test, not a benchmark) three repetitions without warm-up."""
    m = replace(rec.measure, end_to_end=False)
    return m if device.type == "cuda" else replace(m, reps=min(m.reps, 3), min_reps=1, warmup_ms=0.0)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max|y - ref| / max|ref|, with ref usually the float64 reference on the same inputs."""
    return float((y.double() - ref).abs().max() / ref.abs().max())


class CompiledPeer:
    """torch.compile(fn) once for every shape (dynamic=True). Gives up, with the reason, when a
    compile fails or the compiles together took longer than the budget."""

    def __init__(self, fn, device: torch.device, budget_s: float = COMPILE_BUDGET_S):
        self.fn, self.budget_s, self.spent = fn, budget_s, 0.0
        self.reason = None if device.type == "cuda" else "torch.compile peer is run on CUDA only (the CPU suite times the interpreter)"
        self.compiled = None

    def ready(self, *args) -> bool:
        """Compile (if needed) and run once on args; False (see .reason) when it cannot be used."""
        if self.reason:
            return False
        t0 = time.perf_counter()
        try:
            if self.compiled is None:
                self.compiled = torch.compile(self.fn, dynamic=True)
            self.compiled(*args)
            torch.cuda.synchronize()
        except Exception as e:  # inductor errors come in many types
            self.reason = f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            return False
        self.spent += time.perf_counter() - t0
        if self.spent > self.budget_s:
            self.reason = f"torch.compile took {self.spent:.0f} s in total, over the {self.budget_s:.0f} s budget"
            return False
        return True


ERROR_METHOD = "max|out - ref| / max|ref| vs the float64 reference on the benchmark inputs"


def compare(rec: Recorder, impls: dict, error, measure: MeasureConfig, cost: dict,
            peer: CompiledPeer | None = None, peer_args: tuple = (), method: str = ERROR_METHOD) -> None:
    """Every implementation side by side at one shape: its error against the reference
    (`error(output) -> float`), then its time with the analytic cost; the torch.compile peer last,
    or one skipped row saying why it did not run."""
    impls = dict(impls)
    if peer is not None:
        if peer.ready(*peer_args):
            impls["torch-compile"] = lambda: peer.compiled(*peer_args)
        else:
            with rec.point(impl="torch-compile"):
                rec.skipped(peer.reason)
    for name, fn in impls.items():
        with rec.point(impl=name):
            rec.metric("max_rel_err", error(fn()), "", method=method)
            rec.time(fn, measure=measure, **cost)


def time_ways(rec: Recorder, fns: list, measure: MeasureConfig, cost: dict) -> dict[str, float]:
    """Median ms of one call, three ways; `fns[i]` makes the same call on input copy i (see
    `input_copies`):
      ""         fns[0]'s eager launches: device time, every launch queued before the first runs;
                 the host's enqueue time is recorded beside it (`latency_host_enqueue_us`; the
                 graph rows' `latency_graph_host_enqueue_us` is a replay's): an eager decode
                 loop runs at the slower of the two
      "_graph"   fns[0] replayed alone from a CUDA graph (plus the graph's own launch latency)
      "_stream"  all fns back to back in one CUDA graph, per call: the kernel as a captured
                 decode step runs it, each call reading its inputs from DRAM. The fair comparison
                 for kernels of a few µs, whose lone replay is mostly the ~3-4 µs launch latency.
    Rows `latency[_graph|_stream]_*`; the returned dict has the suffixes that were measured (the
    CPU: only ""). A graph that cannot be captured is recorded as failed, the others still run."""
    out = {"": rec.time(fns[0], measure=measure, **cost).median_ms}
    if rec.device.type != "cuda":
        return out
    for suffix, timed in (("_graph", lambda: rec.time(fns[0], metric="latency_graph", measure=replace(measure, cuda_graph=True), **cost)),
                          ("_stream", lambda: rec.time_stream(fns, measure=measure, **cost))):
        try:
            out[suffix] = timed().median_ms
        except RuntimeError as e:
            rec.failed(e, metric=f"latency{suffix}_ms")
    return out


WAYS = {"": "eager launches", "_graph": "one call per CUDA-graph replay", "_stream": "calls back to back in one CUDA graph"}


def input_copies(make, nbytes: int, device: torch.device) -> list:
    """make(i) for as many i as together exceed twice the L2 (lab.measure.timing.stream_copies),
    make(0) first (the eager and single-graph rows use it); one on the CPU."""
    n = stream_copies(nbytes, device) if device.type == "cuda" else 1
    return [make(i) for i in range(n)]


def copy_same_bytes(nbytes: int, device: torch.device) -> list:
    """The size-matched floor: calls that each copy nbytes/2 into a second buffer (reading half and
    writing half: `nbytes` moved) with an elementwise kernel (torch.neg), on input copies that
    together exceed the L2, for `time_ways`. Not Tensor.copy_: a device-to-device cudaMemcpy may
    go to the copy engines inside a CUDA graph, which capped it at ~2.8 TB/s on the H200.
    The copy bandwidth measured at 4 GB (the ceiling in provenance) is not reachable by a kernel
    that moves 10-30 MB: launch, ramp-up and drain cost a few µs per call (an H200 reads 33.6 MB
    in 10 µs at best, 3.35 TB/s, against 4.27 at 4 GB). This row is what a bandwidth goal can be
    held to at the size of each point; it is timed exactly like the kernels beside it."""
    half = max(int(nbytes) // 4, 1)  # float16 elements in half of the bytes
    pairs = input_copies(lambda i: (torch.empty(half, dtype=torch.float16, device=device),
                                    torch.empty(half, dtype=torch.float16, device=device)), nbytes, device)
    for src, _ in pairs:
        src.zero_()
    return [lambda s=s, d=d: torch.neg(s, out=d) for s, d in pairs]


def stream_us(calls: list, reps: int = 5) -> float:
    """Per-call µs for tuning sweeps: `calls` (each on its own input copy, together more than the
    L2) captured back to back in one CUDA graph, median of `reps` replays / len(calls). A quick
    form of Recorder.time_stream (no timed warm-up, no samples kept). Without CUDA (the
    interpreter smoke run) the calls simply run in turn."""
    for f in calls[:2]:
        f()  # compile, allocate (e.g. decode's merge counters): nothing of that may happen under capture
    if not torch.cuda.is_available():
        t = time.perf_counter()
        for f in calls:
            f()
        return (time.perf_counter() - t) * 1e6 / len(calls)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in calls:
            f()
    g.replay()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / len(calls))
    return float(statistics.median(ts))
