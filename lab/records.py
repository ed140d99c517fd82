"""Recorder: how scenarios report what they measured, as rows of one tidy table.

Every row carries `run_id, experiment, scenario, metric, value, unit, method, status, error`,
the columns of the chosen variants and parameters (set once per point), and whatever a scenario
adds (`impl`, `seq_len`, `batch` …). Latency rows also carry `q1, q3, ci_lo, ci_hi, n`; their raw
samples go to a second table so a regression test can rerun statistics on them.

Metric names say what they are, and the report and the regression gate choose by them:
`*_ms` latency, `*_tflops`, `*_gbps`, `*_intensity`, `*_roofline_frac`, `*_tokens_per_s`;
`mem_<component>_bytes` (weights, kv_cache, activations …, stacked in reports) and the measured
totals `mem_peak_allocated_bytes`, `mem_peak_reserved_bytes`, `mem_device_used_bytes`;
`energy_j`, `energy_j_per_token`, `energy_power_w`.

A scenario never computes achieved TFLOP/s or GB/s itself: it passes the analytic `flops` and
`bytes_moved` of the work to `Recorder.time`, and the roofline columns follow from the measured
ceilings.
"""
from __future__ import annotations

import contextlib
import math
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from lab.measure.stats import summarize
from lab.measure.timing import MeasureConfig, Timing, time_fn, time_stream

ROW_COLUMNS = ("run_id", "experiment", "scenario", "metric", "value", "unit", "method", "status", "error")


@dataclass(frozen=True)
class Ceilings:
    """Measured roofline ceilings of one device (lab.measure.roofline measures and caches them)."""

    device: str
    peak_tflops: float  # a large bf16 matmul (CPU: float32)
    peak_gbps: float  # a large device-to-device copy, bytes read + written
    method: str = ""

    def attainable_tflops(self, intensity: float) -> float:
        return min(self.peak_tflops, intensity * self.peak_gbps / 1e3)


class PointFailed(Exception):
    """Raised by a scenario to mark the current point failed with a reason (e.g. NaN in output)."""


class Recorder:
    def __init__(
        self,
        base: dict[str, Any],
        device: torch.device | str = "cpu",
        measure: MeasureConfig = MeasureConfig(),
        ceilings: Ceilings | None = None,
    ):
        self.base = dict(base)  # run_id, experiment, scenario, variant and parameter columns
        self.device = torch.device(device)
        self.measure = measure
        self.ceilings = ceilings
        self.rows: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self._cols: dict[str, Any] = {}

    # ---- context -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def point(self, **cols: Any) -> Iterator[None]:
        """Columns for every row recorded inside. A failure inside (out of memory, kernel error,
        PointFailed) is recorded as one `failed` row with its reason, and the caller goes on."""
        saved = dict(self._cols)
        self._cols.update(cols)
        try:
            yield
        except (PointFailed, RuntimeError, ValueError, AssertionError, MemoryError) as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            self.failed(e)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        finally:
            self._cols = saved

    # ---- rows ----------------------------------------------------------------------------------
    def _row(self, metric: str, value: float, unit: str, method: str, status: str = "ok", error: str = "", **cols: Any) -> dict:
        row = {**self.base, **self._cols, **cols}
        row.update(metric=metric, value=float(value) if value is not None else math.nan, unit=unit, method=method, status=status, error=error)
        self.rows.append(row)
        return row

    def metric(self, metric: str, value: float, unit: str, *, method: str, **cols: Any) -> None:
        """A measured or computed quantity (perplexity, KL, error vs reference, KV bytes/token …)."""
        if value is not None and isinstance(value, float) and math.isnan(value):
            self._row(metric, value, unit, method, status="failed", error="NaN", **cols)
        else:
            self._row(metric, value, unit, method, **cols)

    def failed(self, error: BaseException | str, metric: str = "point", **cols: Any) -> None:
        if isinstance(error, BaseException):
            last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
            where = f" at {last[0].filename.split('/')[-1]}:{last[0].lineno}" if last else ""
            error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}{where}"
        self._row(metric, math.nan, "", "", status="failed", error=str(error)[:500], **cols)

    def skipped(self, reason: str, metric: str = "point", **cols: Any) -> None:
        """A peer or variant that cannot run here (missing package, no CUDA): shown in reports as
        'not run: reason', never silently dropped."""
        self._row(metric, math.nan, "", "", status="skipped", error=f"not run: {reason}", **cols)

    # ---- latency and roofline ------------------------------------------------------------------
    def time(
        self,
        fn: Callable[[], Any],
        *,
        metric: str = "latency",
        flops: float = 0.0,
        bytes_moved: float = 0.0,
        tokens: int | None = None,
        measure: MeasureConfig | None = None,
        **cols: Any,
    ) -> Timing:
        """Time fn() and record latency (median ms, IQR, 95% CI) plus, from the analytic costs,
        achieved TFLOP/s, GB/s, FLOP/byte and the fraction of the roofline; tokens/s if `tokens`."""
        cfg = measure or self.measure
        t = time_fn(fn, self.device, cfg)
        return self.add_timing(t, metric=metric, flops=flops, bytes_moved=bytes_moved, tokens=tokens, bootstrap=cfg.bootstrap, **cols)

    def time_stream(
        self,
        fns: list[Callable[[], Any]],
        *,
        metric: str = "latency_stream",
        flops: float = 0.0,
        bytes_moved: float = 0.0,
        tokens: int | None = None,
        measure: MeasureConfig | None = None,
        **cols: Any,
    ) -> Timing:
        """Like `time`, per call of `fns` run back to back in one CUDA graph, each on its own input
        copy (lab.measure.timing.time_stream): the kernel's cost inside a captured decode step.
        flops/bytes_moved are those of ONE call."""
        cfg = measure or self.measure
        t = time_stream(fns, self.device, cfg)
        return self.add_timing(t, metric=metric, flops=flops, bytes_moved=bytes_moved, tokens=tokens, bootstrap=cfg.bootstrap, **cols)

    def add_timing(self, t: Timing, *, metric: str = "latency", flops: float = 0.0, bytes_moved: float = 0.0, tokens: int | None = None, bootstrap: int = 2000, **cols: Any) -> Timing:
        s = summarize(t.samples_ms, bootstrap)
        self._row(f"{metric}_ms", s["median"], "ms", t.method, q1=s["q1"], q3=s["q3"], ci_lo=s["ci_lo"], ci_hi=s["ci_hi"], n=s["n"], **cols)
        key = {**self.base, **self._cols, **cols}
        self.samples.extend({**key, "metric": f"{metric}_ms", "sample": i, "value": float(v)} for i, v in enumerate(t.samples_ms))
        host = t.extra.get("host_enqueue_ms")
        if host is not None and "calls_per_sample" not in t.extra:  # a stream's replay enqueues n calls at once: no per-call host time
            # an eager loop runs at max(device, host) a call: enqueueing one Triton launch through
            # Python took 30-600 µs on the lent hosts, more than many kernels take on the GPU
            self._row(f"{metric}_host_enqueue_us", host * 1e3, "µs", "host time to enqueue one call (one graph replay for graph rows; median of the timed reps, no sync)", **cols)
        sec = s["median"] / 1e3
        ci = lambda x: {"ci_lo": x / (s["ci_hi"] / 1e3), "ci_hi": x / (s["ci_lo"] / 1e3)} if s["ci_lo"] > 0 else {}
        if flops:
            self._row(f"{metric}_tflops", flops / sec / 1e12, "TFLOP/s", t.method, **ci(flops / 1e12), **cols)
            self._row(f"{metric}_flops", flops, "FLOP", "analytic", **cols)
        if bytes_moved:
            self._row(f"{metric}_gbps", bytes_moved / sec / 1e9, "GB/s", t.method, **ci(bytes_moved / 1e9), **cols)
            self._row(f"{metric}_bytes", bytes_moved, "B", "analytic", **cols)
        if flops and bytes_moved:
            intensity = flops / bytes_moved
            self._row(f"{metric}_intensity", intensity, "FLOP/B", "analytic", **cols)
            if self.ceilings:
                frac = (flops / sec / 1e12) / self.ceilings.attainable_tflops(intensity)
                self._row(f"{metric}_roofline_frac", frac, "fraction", f"vs measured ceilings ({self.ceilings.method})", **cols)
        elif bytes_moved and self.ceilings:
            self._row(f"{metric}_roofline_frac", bytes_moved / sec / 1e9 / self.ceilings.peak_gbps, "fraction", "vs measured copy bandwidth", **cols)
        if tokens:
            self._row(f"{metric}_tokens_per_s", tokens / sec, "tok/s", t.method, **ci(tokens), **cols)
        return t

    # ---- memory and energy ---------------------------------------------------------------------
    def memory(self, components: dict[str, int], peak: dict | None = None, *, method: str = "sizes of the tensors held", **cols: Any) -> None:
        """Record `mem_<component>_bytes` for each component (weights, kv_cache, activations …; what
        the scenario knows it holds) and, from `lab.measure.memory.measure_peak`'s dict, the measured
        `mem_peak_allocated_bytes`, `mem_peak_reserved_bytes` and `mem_device_used_bytes`. Values
        the device cannot measure (None) are left out."""
        for name, nbytes in components.items():
            self._row(f"mem_{name}_bytes", nbytes, "B", method, **cols)
        if peak:
            how = peak.get("method", "")
            for key in ("peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes"):
                if peak.get(key) is not None:
                    self._row(f"mem_{key}", peak[key], "B", how, **cols)

    def energy(self, fn: Callable[[], Any], *, tokens: int | None = None, metric: str = "energy", min_time_s: float = 1.0, **cols: Any) -> dict:
        """Joules per call of fn() (`<metric>_j`), average board power (`<metric>_power_w`) and,
        with `tokens` (tokens one call produces), `<metric>_j_per_token`. Where no energy counter
        exists (CPU, no NVML) one skipped row says why."""
        from lab.measure.energy import measure_energy

        e = measure_energy(fn, self.device, tokens=tokens, min_time_s=min_time_s)
        if not e["available"]:
            self.skipped(e["reason"], metric=f"{metric}_j", **cols)
            return e
        self._row(f"{metric}_j", e["energy_j"], "J", e["method"], **cols)
        self._row(f"{metric}_power_w", e["power_w"], "W", e["method"], **cols)
        if e["energy_j_per_token"] is not None:
            self._row(f"{metric}_j_per_token", e["energy_j_per_token"], "J/token", e["method"], **cols)
        return e
