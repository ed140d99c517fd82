"""Benchmark suite: RMSNorm fused with the residual add (h = x + r; y = rmsnorm(h)·w, returns y, h).

Implementations, on the same bf16 inputs:
  impl=triton          kernels.rmsnorm.rmsnorm (one pass: read x, r; write h, y)
  impl=eager           the model's eager math (`x + r`, then lab.model.llama.RMSNorm's ops)
  impl=torch-compile   the eager function through torch.compile (dynamic shapes, compiled once);
                       recorded as not run on CPU, on failure, or once compiling took > 30 s
Bytes: x, r read, h, y written, w read once (kernels.rmsnorm.bytes_moved): achieved GB/s against
the measured copy bandwidth is the figure of merit. Error: max|y - y64| / max|y64| against the
reference computed in float64 from the same bf16 inputs.
Full (GPU): decode rows (1, 64 tokens) and prefill rows (4K-16K tokens) at C = 576 (SmolLM2),
4096 and 8192. Small (CPU, interpreter): two tiny float32 shapes.
"""
from __future__ import annotations


import torch

from kernels.rmsnorm import bytes_moved, flops, rmsnorm, rmsnorm_reference
from lab.benchmarks._common import compare, bench_dtype, bench_measure, rel_err, CompiledPeer
from lab.records import Recorder

EPS = 1e-5


def shapes(size: str) -> list[tuple[int, int]]:
    """(N rows, C)."""
    if size == "small":
        return [(3, 77), (8, 256)]
    return [(1, 4096), (64, 4096), (4096, 4096), (16384, 4096), (4096, 8192), (16384, 576), (1, 576)]


def eager(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rmsnorm_reference(x, w, EPS, residual=r)



def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    dtype = bench_dtype(device)
    measure = bench_measure(rec, device)
    gen = torch.Generator(device=device).manual_seed(0)
    peer = CompiledPeer(eager, device)
    for N, C in shapes(size):
        cols = dict(kernel="rmsnorm", N=N, C=C, residual=True, dtype=str(dtype).removeprefix("torch."))
        with rec.point(**cols):
            x = torch.randn(N, C, device=device, dtype=dtype, generator=gen)
            r = torch.randn(N, C, device=device, dtype=dtype, generator=gen)
            w = torch.randn(C, device=device, dtype=dtype, generator=gen)
            ref, _ = rmsnorm_reference(x.double(), w.double(), EPS, residual=r.double())
            cost = dict(flops=flops(N, C, residual=True), bytes_moved=bytes_moved(N, C, x.element_size(), residual=True))
            impls = {"triton": lambda: rmsnorm(x, w, EPS, residual=r), "eager": lambda: eager(x, w, r)}
            compare(rec, impls, lambda out: rel_err(out[0], ref), measure, cost, peer, (x, w, r))
            del x, r, w, ref
