"""Benchmark suite: RoPE on q and k (rotate-half, tables as input), as one attention layer needs it.

Implementations, on the same bf16 q [B, H, T, D], k [B, H_kv, T, D] and float32 tables [B, T, R]:
  impl=triton-qk       kernels.rope.rope_qk: q and k in one launch, tables read once per position
  impl=triton          kernels.rope.rope twice (one launch each)
  impl=eager           lab.model.llama.apply_rotary on q and on k (slices, cat, 4 multiplies each)
  impl=torch-compile   the eager pair through torch.compile (dynamic shapes, compiled once); not
                       run on CPU, on failure, or past a 30 s compile budget
Bytes: q and k read and written, the tables read once per position (kernels.rope.bytes_moved);
GB/s against the copy bandwidth is the figure of merit. Error: max|out - out64| / max|out64| over
q and k against apply_rotary in float64 on the same inputs.
Full (GPU): decode (T = 1) at batch 64, prefill at T = 4096, Llama-3-8B heads (32/8, D = 128),
SmolLM2 heads (9/3, D = 64) and a partial rotary (R = 64 of D = 128).
Small (CPU, interpreter): two tiny float32 shapes.
"""
from __future__ import annotations


import torch

from kernels.rope import bytes_moved, flops, rope, rope_qk
from lab.model.llama import apply_rotary
from lab.benchmarks._common import compare, bench_dtype, bench_measure, rel_err, CompiledPeer
from lab.records import Recorder


def shapes(size: str) -> list[tuple[int, int, int, int, int, int]]:
    """(B, H, H_kv, T, D, R)."""
    if size == "small":
        return [(2, 4, 2, 5, 32, 32), (1, 3, 1, 7, 64, 32)]
    return [
        (64, 32, 8, 1, 128, 128),  # decode, Llama-3-8B
        (1, 32, 8, 4096, 128, 128),  # prefill
        (8, 9, 3, 1024, 64, 64),  # SmolLM2 prefill
        (256, 9, 3, 1, 64, 64),  # SmolLM2 decode, large batch
        (1, 32, 8, 4096, 128, 64),  # partial rotary
    ]


def eager(q, k, cos, sin):
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    dtype = bench_dtype(device)
    measure = bench_measure(rec, device)
    gen = torch.Generator(device=device).manual_seed(0)
    peer = CompiledPeer(eager, device)
    for B, H, H_kv, T, D, R in shapes(size):
        cols = dict(kernel="rope", B=B, H=H, H_kv=H_kv, T=T, D=D, R=R, dtype=str(dtype).removeprefix("torch."))
        with rec.point(**cols):
            # q, k as the model makes them: views of [B, T, heads, D] projections
            q = torch.randn(B, T, H, D, device=device, dtype=dtype, generator=gen).transpose(1, 2)
            k = torch.randn(B, T, H_kv, D, device=device, dtype=dtype, generator=gen).transpose(1, 2)
            pos = torch.randint(0, 8192, (B, T), device=device, generator=gen)
            inv_freq = 1.0 / (500000.0 ** (torch.arange(0, R, 2, device=device, dtype=torch.float32) / R))
            freqs = pos[..., None].float() * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos(), emb.sin()  # [B, T, R] float32
            refs = eager(q.double(), k.double(), cos.double(), sin.double())
            nbytes = bytes_moved(B, H + H_kv, T, D, R, q.element_size(), cos.element_size())
            cost = dict(flops=flops(B, H + H_kv, T, R), bytes_moved=nbytes)
            impls = {
                "triton-qk": lambda: rope_qk(q, k, cos, sin),
                "triton": lambda: (rope(q, cos, sin), rope(k, cos, sin)),
                "eager": lambda: eager(q, k, cos, sin),
            }
            compare(rec, impls, lambda outs: max(rel_err(o, r) for o, r in zip(outs, refs)), measure, cost, peer, (q, k, cos, sin),
                    method="max|out - ref| / max|ref| over q and k vs apply_rotary in float64 on the benchmark inputs")
            del q, k, cos, sin, refs
