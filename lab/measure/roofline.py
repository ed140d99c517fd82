"""Roofline ceilings measured on this machine, cached per device name.

Bandwidth: a large device-to-device copy, counting bytes read plus bytes written (what a
memory-bound kernel moves). Compute: a large bf16 matmul on CUDA (2·M·N·K FLOPs), float32 on CPU.
Datasheet peaks are never used: a roofline fraction against a number the chip cannot reach would
flatter nothing and mislead everyone.

The cache lives in $LAB_CACHE_DIR/ceilings/<device>.json (default ~/.cache/inference-lab) so a run
pays for the measurement once per machine; `refresh=True` measures again.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

import torch

from lab.measure.timing import MeasureConfig, time_fn
from lab.records import Ceilings


def cache_dir() -> Path:
    """$LAB_CACHE_DIR, else ~/.cache/inference-lab."""
    return Path(os.environ.get("LAB_CACHE_DIR") or Path.home() / ".cache" / "inference-lab")


def device_name(device: torch.device | str) -> str:
    """What the ceilings are keyed by: the GPU's name, or the CPU model and torch's thread count
    (a CPU matmul's speed depends on how many threads it may use)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _cache_file(name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "device"
    return cache_dir() / "ceilings" / f"{slug}.json"


def cached_ceilings(device: torch.device | str) -> Ceilings | None:
    """The cached ceilings of this device, or None; never measures."""
    path = _cache_file(device_name(device))
    try:
        d = json.loads(path.read_text())
        return Ceilings(d["device"], float(d["peak_tflops"]), float(d["peak_gbps"]), d.get("method", ""))
    except (OSError, ValueError, KeyError):
        return None


def ceilings(device: torch.device | str, *, refresh: bool = False) -> Ceilings:
    """Measured peak TFLOP/s and GB/s of `device`, from the cache when present (CPU: < 2 s)."""
    device = torch.device(device)
    if not refresh:
        c = cached_ceilings(device)
        if c is not None:
            return c
    name = device_name(device)
    c = _measure(device, name)
    path = _cache_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({
        "device": c.device, "peak_tflops": c.peak_tflops, "peak_gbps": c.peak_gbps, "method": c.method,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__,
    }, indent=1))
    os.replace(tmp, path)  # atomic: a concurrent run reads the old file or the new one, never half
    return c


def _measure(device: torch.device, name: str) -> Ceilings:
    cuda = device.type == "cuda"
    # Sizes: the copy far beyond any cache (L2 is 50-60 MB on H100/H200; CPU LLCs up to ~100 MB
    # on servers, but 2 × 64 MB keeps the CPU measurement quick); the matmul large enough to
    # saturate the tensor cores, small enough on CPU to take tens of milliseconds.
    copy_bytes = 2**30 if cuda else 64 * 2**20
    n = 8192 if cuda else 1024
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = MeasureConfig(reps=20 if cuda else 8, min_reps=3, warmup_ms=100 if cuda else 20, max_time_s=2.0 if cuda else 0.6, l2_flush=False)

    src = torch.empty(copy_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t_copy = time_fn(lambda: dst.copy_(src), device, cfg)
    # Best repetition, not the median: a ceiling is what the chip can reach, and a kernel measured
    # at boost clocks must not land above its own roofline.
    gbps = 2 * copy_bytes / (float(t_copy.samples_ms.min()) / 1e3) / 1e9
    del src, dst

    # Random data, not zeros: tensor cores draw less power (and clock higher) on zeros.
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    t_mm = time_fn(lambda: torch.matmul(a, b, out=c), device, cfg)
    tflops = 2 * n**3 / (float(t_mm.samples_ms.min()) / 1e3) / 1e12
    del a, b, c

    dt = "bf16" if cuda else "fp32"
    method = (f"measured: copy of {copy_bytes / 2**20:.0f} MiB (read+write) {t_copy.samples_ms.min():.3f} ms, "
              f"{dt} matmul {n}^3 {t_mm.samples_ms.min():.3f} ms; best of {len(t_mm.samples_ms)} reps")
    return Ceilings(name, tflops, gbps, method)
