"""Energy of a region from NVML's total-energy counter (millijoules since the driver loaded).

The counter is updated by the driver every few tens of milliseconds, so a region must last well
beyond that to be meaningful: `measure_energy` repeats the call until `min_time_s` has passed and
divides. The counter covers the whole board (every process on it), so run nothing else meanwhile.
On a CPU, or where NVML or the counter is missing (pre-Volta boards, containers without NVML), the
result says "not available" with the reason instead of a number.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch


def energy_counter(device: torch.device | str) -> tuple[Callable[[], float] | None, str]:
    """A function returning the board's total energy in joules, or (None, why not)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None, f"no energy counter on {device.type} (NVML measures NVIDIA GPUs only)"
    try:
        import pynvml

        from lab.measure.memory import _nvml_handle

        pynvml.nvmlInit()
        h = _nvml_handle(pynvml, device)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(h)  # raises NotSupported on boards without it
    except Exception as e:
        return None, f"NVML total-energy counter unavailable ({type(e).__name__}: {e})"
    return (lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3), "NVML total-energy counter"


def measure_energy(
    fn: Callable[[], Any],
    device: torch.device | str,
    *,
    tokens: int | None = None,
    min_time_s: float = 1.0,
    max_calls: int = 100_000,
) -> dict[str, Any]:
    """Joules per call of `fn()` (and per token when `tokens`, the tokens one call produces).

    Returns {"available": True, "energy_j", "power_w", "energy_j_per_token" (or None), "calls",
    "seconds", "method"} or {"available": False, "reason"}.
    """
    device = torch.device(device)
    read, how = energy_counter(device)
    if read is None:
        return {"available": False, "reason": how}
    fn()  # compile/allocate outside the measured region
    torch.cuda.synchronize(device)
    e0, t0, calls = read(), time.perf_counter(), 0
    while calls < max_calls and (calls == 0 or time.perf_counter() - t0 < min_time_s):
        fn()
        calls += 1
        if calls % 8 == 0:  # keep the queue short so the wall clock follows the GPU
            torch.cuda.synchronize(device)
    torch.cuda.synchronize(device)
    secs = time.perf_counter() - t0
    joules = read() - e0
    per_call = joules / calls
    return {
        "available": True,
        "energy_j": per_call,
        "power_w": joules / secs if secs > 0 else float("nan"),
        "energy_j_per_token": per_call / tokens if tokens else None,
        "calls": calls,
        "seconds": secs,
        "method": f"{how}, {calls} calls over {secs:.2f} s, whole board",
    }
