"""Benchmark suite: sampling a token per row from logits [B, V] with temperature, top-k, top-p.

Implementations, on the same float32 logits:
  impl=triton       kernels.sampling.sample: thresholds by multi-pivot bisection, Gumbel-max
                    draw, one program per row, no sort, no host sync (seed passed in)
  impl=torch-sort   kernels.sampling.sample_sorted: topk + sort + softmax + cumsum + scatter +
                    multinomial, as Hugging Face's logits warpers do it (the usual eager path)
Two logit shapes, because the sort-free search costs what the kept set's shape makes it cost:
  dist=peaked  N(0, 2²) plus 32 tokens a row raised by U(10, 16): most of the mass on a few
               tokens, as a trained LM's next-token distribution; T = 0.8, top_k = 50, top_p = 0.9
  dist=flat    N(0, 2²) only, T = 1, top_p = 0.9, no top-k: the kept set holds tens of thousands
               of tokens (the worst case for the search: every pass touches most of the row)
Bytes: one read of the logits (kernels.sampling.bytes_moved, n_passes=1): GB/s is an effective
rate; the kernel itself makes ~3-8 passes (L2-resident at small B). Speedup: median latency of
torch-sort / triton. Quality (no max_rel_err for a sampler): on row 0, 2000 draws from each
implementation against kernels.sampling.reference_probs by a chi-square test: `stat_pvalue`, and
`stat_pass` = 1 when p > 1e-3 and no draw falls outside the reference support.
Full (GPU): V = 32000, 49152, 128256, 151936 (Llama-2, SmolLM2, Llama-3, Qwen2) × B = 1, 32, 256.
Small (CPU, interpreter): V = 300 × B = 2.
"""
from __future__ import annotations


import torch

from kernels.sampling import bytes_moved, chi_square_pvalue, flops, reference_probs, sample, sample_many, sample_sorted
from lab.benchmarks._common import bench_measure
from lab.records import Recorder

SETTINGS = {  # dist -> (temperature, top_k, top_p, min_p)
    "peaked": (0.8, 50, 0.9, 0.0),
    "flat": (1.0, 0, 0.9, 0.0),
}
N_CHECK = 2000
ALPHA = 1e-3


def shapes(size: str) -> list[tuple[int, int]]:
    """(B, V)."""
    if size == "small":
        return [(2, 300)]
    return [(B, V) for V in (32000, 49152, 128256, 151936) for B in (1, 32, 256)]


def make_logits(B: int, V: int, dist: str, device, gen) -> torch.Tensor:
    logits = torch.randn(B, V, device=device, generator=gen) * 2.0
    if dist == "peaked":
        idx = torch.randint(0, V, (B, 32), device=device, generator=gen)
        boost = torch.rand(B, 32, device=device, generator=gen) * 6.0 + 10.0
        logits.scatter_add_(1, idx, boost)
    return logits


def _check(tokens: torch.Tensor, probs: torch.Tensor, rec: Recorder, method: str) -> None:
    inside = bool((probs[tokens] > 0).all())
    pval = chi_square_pvalue(torch.bincount(tokens.cpu(), minlength=probs.numel()), probs)
    rec.metric("stat_pvalue", pval, "", method=method)
    rec.metric("stat_pass", float(inside and pval > ALPHA), "bool", method=method + f"; pass = p > {ALPHA} and no draw outside the support")


def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    measure = bench_measure(rec, device)
    gen = torch.Generator(device=device).manual_seed(0)
    torch_gen = torch.Generator(device=device).manual_seed(1)
    for dist, (T, k, p, mp) in SETTINGS.items():
        for B, V in shapes(size):
            cols = dict(kernel="sampling", B=B, V=V, dist=dist, temperature=T, top_k=k, top_p=p, min_p=mp, dtype="float32")
            with rec.point(**cols):
                logits = make_logits(B, V, dist, device, gen)
                probs = reference_probs(logits[:1], T, k, p, mp)[0]
                rec.metric("kept_tokens_row0", float((probs > 0).sum()), "tokens", method="support of reference_probs, row 0")
                cost = dict(flops=flops(B, V), bytes_moved=bytes_moved(B, V, logits.element_size(), n_passes=1))
                method = f"chi-square of {N_CHECK} draws from row 0 vs reference_probs (sort-based, float64)"
                latency = {}
                with rec.point(impl="torch-sort"):
                    fn = lambda: sample_sorted(logits, T, k, p, mp, generator=torch_gen)
                    _check(sample_sorted(logits[:1].expand(N_CHECK, V).contiguous(), T, k, p, mp, generator=torch_gen), probs, rec, method)
                    latency["torch"] = rec.time(fn, measure=measure, **cost).median_ms
                with rec.point(impl="triton"):
                    fn = lambda: sample(logits, T, k, p, mp, seed=1234)
                    _check(sample_many(logits[:1], N_CHECK, T, k, p, mp, seed=99)[0], probs, rec, method)
                    t = rec.time(fn, measure=measure, **cost).median_ms
                    rec.metric("speedup_vs_torch_sort", latency["torch"] / t, "x", method="median latency, torch-sort / triton")
                del logits, probs
