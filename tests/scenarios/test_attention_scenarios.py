"""The attention scenarios called directly with a RunContext, at the smallest sizes: every row they
promise is there, nothing failed, and the numbers are the right ones where they can be checked."""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

import pandas as pd
import pytest

from lab import registry
from lab.context import RunContext
from lab.measure.timing import MeasureConfig
from lab.records import Recorder

QUICK = MeasureConfig(reps=3, min_reps=2, warmup_ms=0.0, max_time_s=0.5, bootstrap=50)


def make_ctx(scenario: str, scenario_cfg: dict | None = None, attention: tuple[str, dict] = ("reference", {}), model: str = "tiny") -> RunContext:
    registry.load()
    choices = {g: registry.reference(g).default_config() for g in registry.AXES}
    choices["attention"] = registry.get("attention", attention[0]).make_config(attention[1])
    choices["model"] = registry.get("model", model).default_config()
    choices["scenario"] = registry.get("scenario", scenario).make_config(scenario_cfg or {})
    rec = Recorder({"run_id": "test", "experiment": "test", "scenario": scenario}, "cpu", QUICK)
    return RunContext(choices=choices, device=torch.device("cpu"), dtype=torch.float32, rec=rec, size="small", show_progress=False)


def run(ctx: RunContext) -> pd.DataFrame:
    entry, cfg = ctx.variant("scenario")
    entry.fn(ctx, cfg)
    df = pd.DataFrame(ctx.rec.rows)
    failed = df[df.status == "failed"]
    assert failed.empty, failed[["metric", "error"]].to_string()
    return df


def test_attention_op_rows_errors_and_skips():
    ctx = make_ctx("attention_op", dict(shapes=["tiny"], seq_lens=[24], decode_batch=2, cross_ratio=3))
    df = run(ctx)
    err = df[df.metric == "max_rel_err"]
    assert set(zip(err["mode"], err["impl"])) == {(m, i) for m in ("prefill", "decode", "cross") for i in ("reference", "sdpa", "flash")}
    assert (err.value < 1e-5).all(), err[["mode", "impl", "value"]]
    lat = df[df.metric == "latency_ms"]
    assert (lat[lat.impl != "flash"].status == "ok").all() and (lat[lat.impl == "flash"].status == "skipped").all()
    ok = lat[lat.status == "ok"]
    assert len(ok) == 6 and (ok.value > 0).all()
    # the roofline columns: decode sits far left of prefill (memory- vs compute-bound)
    inten = df[(df.metric == "latency_intensity") & (df.impl == "sdpa")].set_index("mode").value
    assert inten["decode"] < inten["prefill"]
    cross = df[(df["mode"] == "cross")].iloc[0]
    assert cross.q_len == 8 and cross.kv_len == 24


def test_attention_op_claim_is_measured_and_held_at_small_size():
    ctx = make_ctx("attention_op", dict(shapes=["tiny"], impls=[], claim=True))
    df = run(ctx)
    claim = df[df.metric == "claim_held"].iloc[0]
    assert claim.value == 1.0 and "4.3 GB" in claim.method and "measured naive" in claim.method
    assert claim.naive_peak_bytes >= 8 * 8 * 512 * 512 * 4  # the scores were really materialized
    assert claim.tiled_peak_bytes < 12.5e6
    peaks = df[(df.metric == "mem_peak_extra_bytes") & (df["mode"] == "claim")].set_index("impl")
    assert "fresh python process" in peaks.method["sdpa"]  # measured where no allocator history can leak in
    assert peaks.value["sdpa"] >= 8 * 8 * 512 * 64 * 4  # and it saw the call's own output


@pytest.mark.parametrize("attention", [("reference", {}), ("sliding_window", dict(window=8, sinks=2)), ("performer", dict(features=16)), ("mla", dict(rank_fraction=0.5))])
def test_attention_layer_times_prefill_and_decode_with_memory(attention):
    ctx = make_ctx("attention_layer", dict(shapes=["tiny"], contexts=[24]), attention=attention)
    df = run(ctx)
    for metric in ("prefill_ms", "decode_ms", "decode_intensity", "prefill_intensity"):
        assert (df.metric == metric).sum() == 1, metric
    for metric in ("mem_weights_bytes", "mem_kv_cache_bytes", "mem_activations_bytes"):
        assert (df.metric == metric).sum() == 2, metric  # prefill and decode
    kv = df[(df.metric == "mem_kv_cache_bytes") & (df["mode"] == "decode")].value.iloc[0]
    if attention[0] == "sliding_window":  # the ring: sinks + window slots of K and V, float32, one layer
        assert kv == (2 + 8) * 2 * 2 * 16 * 4


def test_attention_quality_records_the_pareto_rows():
    scen = dict(window=32, max_tokens=96, contexts=[64, 1024], time_window=False)
    ref = run(make_ctx("attention_quality", scen))
    win = run(make_ctx("attention_quality", scen, attention=("sliding_window", dict(window=8))))
    get = lambda df, m: df[df.metric == m].value.iloc[0]
    for df in (ref, win):
        for m in ("perplexity", "kl_to_reference", "top1_agreement", "kv_bytes_per_token", "kv_bytes_vs_reference"):
            assert (df.metric == m).sum() == 1, m
    assert get(ref, "kl_to_reference") == 0.0 and get(ref, "kv_bytes_vs_reference") == 1.0
    per_token = 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads, D 16, float32
    assert get(ref, "kv_bytes_per_token") == per_token
    assert get(win, "kv_bytes_per_token") == per_token * 8 / 32  # the ring holds 8 of 32 tokens
    assert get(win, "kl_to_reference") > 0
    assert set(win[win.metric == "kv_cache_bytes"].context) == {64, 1024}
