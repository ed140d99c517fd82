"""Peak memory of one call, and the device memory NVML sees.

CUDA: the caching allocator's own peak counters (reset before the call), so the numbers are
exact and include every temporary tensor, but not cuBLAS/Triton workspaces outside the allocator
nor the CUDA context; NVML's `used` shows the whole device (context and other processes
included). CPU: the process's resident set size, whose high-water mark Linux can reset
(/proc/self/clear_refs, "5"); where it cannot, a thread samples /proc/self/statm every ~0.5 ms
and may miss a peak shorter than that. `method` says which was used.

On Linux/glibc the RSS only follows tensors if freed memory leaves the process: glibc's dynamic
mmap threshold rises to 32 MiB after the first big free (and the trim threshold to 64 MiB), after
which large tensors come from the heap and a freed one stays resident, so a later call that
reuses it adds nothing to the RSS (an 8 MB output measured as 4 KB, a 67 MB score tensor as 0).
So the first CPU measurement fixes the mmap threshold at 256 KiB (mallopt; process-wide, once),
and every CPU measurement first hands the free heap pages back (malloc_trim(0)), so whatever the
process did before, each allocation during the call touches fresh pages and shows in the RSS.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import torch


def measure_peak(fn: Callable[[], Any], device: torch.device | str) -> dict[str, Any]:
    """Run `fn()` once and return its peak memory.

    Keys: `peak_allocated_bytes` (CUDA: allocator peak of live tensors; CPU: peak RSS minus RSS
    before the call, i.e. what the call added), `peak_reserved_bytes` (CUDA: allocator peak of
    reserved segments; CPU: peak RSS of the process), `baseline_bytes` (allocated/RSS before the
    call), `device_used_bytes` (NVML, CUDA only; None where NVML is unavailable), `method`.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return _peak_cuda(fn, device)
    return _peak_cpu(fn)


def _peak_cuda(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    used, nvml_note = nvml_used_bytes(device)
    return {
        "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
        "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
        "baseline_bytes": int(base),
        "device_used_bytes": used,
        "method": "torch.cuda max_memory_allocated/reserved after reset_peak_memory_stats; " + nvml_note,
    }


def nvml_used_bytes(device: torch.device | str) -> tuple[int | None, str]:
    """Device memory in use as NVML reports it (all processes and the CUDA context), and a note."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = _nvml_handle(pynvml, torch.device(device))
        return int(pynvml.nvmlDeviceGetMemoryInfo(h).used), "device used from NVML"
    except Exception as e:  # no NVML library, no driver, a container without access
        return None, f"NVML unavailable ({type(e).__name__})"


def _nvml_handle(pynvml, device: torch.device):
    """NVML handle of the torch device: by PCI bus id, since CUDA_VISIBLE_DEVICES renumbers torch's
    devices but not NVML's."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    try:
        props = torch.cuda.get_device_properties(idx)
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus.encode())
    except Exception:
        return pynvml.nvmlDeviceGetHandleByIndex(idx)


# ---- CPU ---------------------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm, rss = _hwm_bytes(), _rss_bytes()
        # A reset that took leaves VmHWM at about the current RSS, not at an earlier, larger peak.
        return hwm is not None and hwm <= rss + 16 * _PAGE
    except OSError:
        return False


class _RssSampler(threading.Thread):
    def __init__(self, period_s: float = 0.0005):
        super().__init__(daemon=True)
        self.period_s = period_s
        self.peak = _rss_bytes()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.period_s)

    def stop(self) -> int:
        self._done.set()
        self.join()
        self.peak = max(self.peak, _rss_bytes())
        return self.peak


_GLIBC: list = []  # [libc handle or None, note]: the allocator set up once per process


def cpu_allocator_setup() -> str:
    """Fix glibc's mmap threshold at 256 KiB (once per process): every larger allocation gets its own
    mmap, unmapped when freed, so the RSS rises and falls with tensors. Returns a note for the method
    column. Harmless for timing at the sizes measured here (an mmap costs ~µs per MB-sized tensor)."""
    if not _GLIBC:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            ok = libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD (also stops the dynamic raise)
            libc.mallopt(-1, 256 * 1024)  # M_TRIM_THRESHOLD: free heap tops go back too
            note = "glibc mmap threshold fixed at 256 KiB" if ok == 1 else "glibc mallopt refused: RSS may miss reused memory"
            _GLIBC[:] = [libc, note]
        except (OSError, AttributeError):
            _GLIBC[:] = [None, "not glibc: RSS may miss reused memory"]
    return _GLIBC[1]


def _trim() -> str:
    """Return every free heap page to the OS, so memory reused by the call is counted again."""
    libc = _GLIBC[0] if _GLIBC else None
    if libc is None:
        return ""
    try:
        libc.malloc_trim(0)
        return ", free heap pages returned (malloc_trim) before the call"
    except AttributeError:
        return ""


def _peak_cpu(fn: Callable[[], Any]) -> dict[str, Any]:
    if not os.path.exists("/proc/self/statm"):
        fn()
        return {"peak_allocated_bytes": None, "peak_reserved_bytes": None, "baseline_bytes": None,
                "device_used_bytes": None, "method": "not available: no /proc/self/statm on this OS"}
    alloc_note = cpu_allocator_setup() + _trim()
    base = _rss_bytes()
    hwm_ok = _reset_hwm()
    sampler = _RssSampler()
    sampler.start()
    try:
        fn()
    finally:
        peak = sampler.stop()
    how = "RSS sampled from /proc/self/statm every 0.5 ms"
    if hwm_ok:
        hwm = _hwm_bytes()
        if hwm is not None:
            peak = max(peak, hwm)
            how = "RSS high-water mark (VmHWM after clear_refs reset) and a 0.5 ms /proc/self/statm sampler"
    return {
        "peak_allocated_bytes": int(max(0, peak - base)),
        "peak_reserved_bytes": int(peak),
        "baseline_bytes": int(base),
        "device_used_bytes": None,
        "method": f"cpu process {how}; allocated = peak RSS - RSS before the call; {alloc_note}",
    }
