"""Provenance: what a number was measured on, with what code, under which settings.

`collect` is called once per point before measuring, `finish` after it (clocks at the end show
whether the GPU throttled during the point). Everything is plain JSON-able data; a field that
cannot be read is None rather than an exception: provenance must never be why a run fails.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "triton", "numpy", "pandas", "pyarrow", "plotly", "hydra-core", "omegaconf",
            "transformers", "safetensors", "gguf", "tokenizers", "nvidia-ml-py")
REPO = Path(__file__).resolve().parents[2]


def collect(resolved_config: dict, seed: int, device: torch.device | str | None = None, ceilings: Any = None) -> dict[str, Any]:
    """Provenance of one point: git SHA/dirty flag, package versions, python, host, CPU model, GPU
    name/driver/CUDA/clocks at start, seed, UTC time, the resolved config and, when given (a
    `records.Ceilings`, else the cached ones of the device, if any), the roofline ceilings that
    the roofline fractions were computed against. Never measures anything itself."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from lab.measure.roofline import cpu_model

    prov: dict[str, Any] = {
        "time_utc": _now(),
        "seed": int(seed),
        "git": _git(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "packages": _versions(),
        "device": _device_info(device),
        "clocks_start": clocks(device),
        "env": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET", "OMP_NUM_THREADS") if k in os.environ},
        "config": _plain(resolved_config),
    }
    if ceilings is None:  # the runner measured them before the point: the cache holds them
        from lab.measure.roofline import cached_ceilings

        ceilings = cached_ceilings(device)
    if ceilings is not None:
        prov["ceilings"] = {"device": ceilings.device, "peak_tflops": ceilings.peak_tflops,
                            "peak_gbps": ceilings.peak_gbps, "method": ceilings.method}
    return prov


def finish(prov: dict[str, Any]) -> dict[str, Any]:
    """Add the clocks and time at the end of the point (same device as `collect`); returns prov."""
    dev = prov.get("device", {}).get("torch_device", "cpu")
    prov["clocks_end"] = clocks(torch.device(dev))
    prov["time_end_utc"] = _now()
    return prov


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git() -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    sha = run("rev-parse", "HEAD")
    if sha is None and os.environ.get("LAB_GIT_SHA"):
        # a copy of the tree without .git (a lent GPU machine): the caller passes what it sent
        return {"sha": os.environ["LAB_GIT_SHA"], "dirty": os.environ.get("LAB_GIT_DIRTY") == "1", "branch": None, "from": "LAB_GIT_SHA"}
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None, "branch": run("rev-parse", "--abbrev-ref", "HEAD")}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def _device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch_device": str(device), "type": device.type}
    if device.type != "cuda":
        from lab.measure.roofline import device_name

        info["name"] = device_name(device)
        return info
    idx = device.index if device.index is not None else torch.cuda.current_device()
    p = torch.cuda.get_device_properties(idx)
    info.update(
        name=p.name,
        capability=f"{p.major}.{p.minor}",
        sm_count=p.multi_processor_count,
        memory_bytes=int(p.total_memory),
        l2_bytes=int(getattr(p, "L2_cache_size", 0) or 0) or None,
        cuda_runtime=torch.version.cuda,
        driver=None,
    )
    nv = _nvml(device)
    if nv is not None:
        pynvml, h = nv
        info["driver"] = _s(pynvml.nvmlSystemGetDriverVersion())
        for key, fn in (("power_limit_w", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3),
                        ("max_sm_clock_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)),
                        ("max_mem_clock_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM))):
            try:
                info[key] = fn()
            except Exception:
                info[key] = None
    return info


def clocks(device: torch.device | str) -> dict[str, Any] | None:
    """SM and memory clocks (MHz), temperature (C) and power (W) now; None on CPU/without NVML."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    nv = _nvml(device)
    if nv is None:
        return None
    pynvml, h = nv
    out: dict[str, Any] = {}
    for key, fn in (("sm_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
                    ("mem_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
                    ("temp_c", lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
                    ("power_w", lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1e3)):
        try:
            out[key] = fn()
        except Exception:
            out[key] = None
    return out


def _nvml(device: torch.device):
    try:
        import pynvml

        from lab.measure.memory import _nvml_handle

        pynvml.nvmlInit()
        return pynvml, _nvml_handle(pynvml, device)
    except Exception:
        return None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _plain(x: Any) -> Any:
    """A JSON-able copy of a (possibly OmegaConf) config."""
    if type(x).__module__.startswith("omegaconf"):  # DictConfig/ListConfig
        from omegaconf import OmegaConf

        return OmegaConf.to_container(x, resolve=True)
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
