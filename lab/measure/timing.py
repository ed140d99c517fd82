"""Latency: CUDA events per repetition (optionally replaying a CUDA graph) or perf_counter on CPU.

Every raw sample is kept; `Timing.method` says how the numbers were taken so a report can show it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

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


def time_fn(fn: Callable[[], Any], device: torch.device | str, cfg: MeasureConfig = MeasureConfig()) -> Timing:
    """Time `fn()` (which must do the whole unit of work) repeatedly on `device`."""
    device = torch.device(device)
    fn()  # compile / load / allocate outside the warm-up clock
    _sync(device)
    t0 = time.perf_counter()
    while (time.perf_counter() - t0) * 1e3 < cfg.warmup_ms:
        fn()
        _sync(device)
    samples: list[float] = []
    start = time.perf_counter()
    if device.type == "cuda":
        flush = torch.empty(2 * _l2_bytes(device) // 4, dtype=torch.int32, device=device) if cfg.l2_flush else None
        run = fn
        if cfg.cuda_graph:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            run = graph.replay
        for i in range(cfg.reps):
            if flush is not None:
                flush.fill_(i)
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            run()
            b.record()
            b.synchronize()
            samples.append(a.elapsed_time(b))
            if i + 1 >= cfg.min_reps and time.perf_counter() - start > cfg.max_time_s:
                break
        how = "cuda-graph replay" if cfg.cuda_graph else "cuda-events"
        l2 = "L2 flushed" if flush is not None else "L2 warm"
        return Timing(np.asarray(samples), f"{how}, {l2}, {len(samples)} reps", flush is not None, cfg.cuda_graph)
    for i in range(cfg.reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
        if i + 1 >= cfg.min_reps and time.perf_counter() - start > cfg.max_time_s:
            break
    return Timing(np.asarray(samples), f"cpu perf_counter, {len(samples)} reps")


def _l2_bytes(device: torch.device) -> int:
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20)
