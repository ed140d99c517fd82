"""A small but real run for report and regression tests: tiny matmuls timed by the Recorder,
memory peaks measured, quality computed from real (random) logits under simulated quantization
noise, one planted failure and one skipped peer. Also a config string full of HTML."""
from __future__ import annotations

import math

import torch

from lab.measure.memory import measure_peak
from lab.measure.provenance import collect, finish
from lab.measure.timing import MeasureConfig
from lab.records import Ceilings, PointFailed, Recorder
from lab.store import RunStore, point_hash

EVIL = '<img src=x onerror="alert(1)"><b>evil</b>&amp;'
CEIL = Ceilings("test-cpu", peak_tflops=0.2, peak_gbps=30.0, method="measured: test ceilings")
QUICK = MeasureConfig(reps=5, min_reps=3, warmup_ms=20, max_time_s=1, bootstrap=200)


def _quality(noise: float, seed: int) -> tuple[float, float, float]:
    """Perplexity, KL to the clean distribution and max relative error of logits with noise added."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, 97, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, 97, (64,), generator=g)
    noisy = logits + noise * torch.randn(logits.shape, generator=g, dtype=torch.float64)
    ppl = math.exp(torch.nn.functional.cross_entropy(noisy, target).item())
    kl = torch.nn.functional.kl_div(noisy.log_softmax(-1), logits.log_softmax(-1), log_target=True, reduction="batchmean").item()
    err = ((noisy - logits).abs().max() / logits.abs().max()).item()
    return ppl, kl, err


def make_run(run_dir, variants=("mha", "gqa", "mla", EVIL), seq_lens=(16, 64, 256), slow: dict | None = None, run_id="r1"):
    """Write a run with one point per variant into run_dir; `slow` maps a variant to a factor by
    which its timed work is repeated (a real slowdown)."""
    store = RunStore(run_dir)
    slow = slow or {}
    for i, attn in enumerate(variants):
        cfg = {"experiment": "demo", "attention": {"name": attn}, "seed": 0}
        base = {"run_id": run_id, "experiment": "demo", "scenario": "decode", "attention": attn, "device": "cpu"}
        rec = Recorder(base, "cpu", QUICK, CEIL)
        prov = collect(cfg, 0, ceilings=CEIL)
        heads = 8 if attn != "gqa" else 2
        for seq in seq_lens:
            with rec.point(seq_len=seq):
                a = torch.randn(seq, 64)
                b = torch.randn(64, 64 * heads // 2)
                reps = slow.get(attn, 1)
                work = lambda: [a @ b for _ in range(reps)]
                rec.time(work, metric="decode", flops=2 * seq * b.numel(), bytes_moved=4 * (a.numel() + b.numel() + seq * b.shape[1]), tokens=seq)
        kv = 2 * 4 * heads * 16 * 2
        peak = measure_peak(lambda: torch.ones(1 << 18) * 2, "cpu")
        rec.memory({"weights": 4 * 64 * 64 * heads, "kv_cache": kv * max(seq_lens), "activations": 4 * 64 * max(seq_lens)}, peak)
        ppl, kl, err = _quality(0.05 * i, seed=i)
        rec.metric("perplexity", ppl, "", method="cross-entropy of 64 random targets")
        rec.metric("kl_vs_reference", kl, "nats", method="KL(clean || variant) over 64 positions")
        rec.metric("max_rel_err", err, "", method="max |variant - clean| / max |clean|")
        rec.metric("kv_bytes_per_token", kv, "B", method="analytic")
        if attn == "mla":
            with rec.point(seq_len=4096):
                raise PointFailed("out of memory (planted)")
            rec.skipped("needs a CUDA GPU (none visible)", impl="flash_attn")
        store.write_point(point_hash(cfg), rec.rows, rec.samples, f"attention: {attn}\n", finish(prov))
    return store
