"""Benchmark suite: SwiGLU's elementwise half, silu(gate) · up.

Implementations, on the same bf16 inputs:
  impl=triton          kernels.swiglu.swiglu (gate, up separate tensors)
  impl=triton-packed   kernels.swiglu.swiglu_packed on one [N, 2F] gate_up tensor
  impl=eager           F.silu(gate) * up (two kernels, an intermediate [N, F] round trip)
  impl=torch-compile   the eager function through torch.compile (dynamic shapes, compiled once);
                       not run on CPU, on failure, or past a 30 s compile budget
Bytes: gate, up read, y written (kernels.swiglu.bytes_moved); GB/s against the copy bandwidth is
the figure of merit. Error: max|y - y64| / max|y64| against float64 on the same bf16 inputs.
Full (GPU): F = 14336 (Llama-3-8B) at 1, 64, 4096 tokens and F = 1536 (SmolLM2) at 1 and 16384.
Small (CPU, interpreter): two tiny float32 shapes.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from kernels.swiglu import bytes_moved, flops, swiglu, swiglu_packed, swiglu_reference
from lab.benchmarks._common import compare, bench_dtype, bench_measure, rel_err, CompiledPeer
from lab.records import Recorder


def shapes(size: str) -> list[tuple[int, int]]:
    """(N rows, F)."""
    if size == "small":
        return [(3, 77), (4, 600)]
    return [(1, 14336), (64, 14336), (4096, 14336), (1, 1536), (16384, 1536)]


def eager(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up



def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    dtype = bench_dtype(device)
    measure = bench_measure(rec, device)
    gen = torch.Generator(device=device).manual_seed(0)
    peer = CompiledPeer(eager, device)
    for N, Fd in shapes(size):
        cols = dict(kernel="swiglu", N=N, F=Fd, dtype=str(dtype).removeprefix("torch."))
        with rec.point(**cols):
            gate_up = torch.randn(N, 2 * Fd, device=device, dtype=dtype, generator=gen) * 2
            gate, up = gate_up[:, :Fd].contiguous(), gate_up[:, Fd:].contiguous()
            ref = swiglu_reference(gate.double(), up.double())
            cost = dict(flops=flops(N, Fd), bytes_moved=bytes_moved(N, Fd, gate.element_size()))
            impls = {
                "triton": lambda: swiglu(gate, up),
                "triton-packed": lambda: swiglu_packed(gate_up),
                "eager": lambda: eager(gate, up),
            }
            compare(rec, impls, lambda out: rel_err(out, ref), measure, cost, peer, (gate, up))
            del gate_up, gate, up, ref
