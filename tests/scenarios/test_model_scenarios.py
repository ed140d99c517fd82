"""prefill / decode / perplexity / generate on the tiny model: the rows each records, and that
their analytic FLOPs and bytes are the formulas' (so the roofline points are right)."""
from __future__ import annotations

import math

import pytest
import torch

from lab import registry
from lab.context import RunContext
from lab.errors import LabError
from lab.measure.timing import MeasureConfig
from lab.model.generate import decode_cost, prefill_cost
from lab.records import Recorder
from lab.registry import AXES

QUICK = MeasureConfig(reps=3, min_reps=2, warmup_ms=0.0, max_time_s=2.0, bootstrap=100)


def make_ctx(scenario: str, model: str = "tiny", attention: tuple[str, dict] | None = None, **cfg) -> tuple[RunContext, object]:
    choices = {g: registry.reference(g).default_config() for g in AXES if registry.reference(g)}
    if attention:
        choices["attention"] = registry.get("attention", attention[0]).make_config(attention[1])
    choices["model"] = registry.get("model", model).default_config()
    entry = registry.get("scenario", scenario)
    choices["scenario"] = entry.make_config(cfg)
    rec = Recorder({"run_id": "t", "experiment": "t", "scenario": scenario}, "cpu", QUICK)
    ctx = RunContext(choices=choices, device=torch.device("cpu"), dtype=torch.float32, rec=rec, show_progress=False)
    return ctx, entry


def rows(ctx, metric, **where):
    return [r for r in ctx.rec.rows if r["metric"] == metric and all(r.get(k) == v for k, v in where.items())]


def value(ctx, metric, **where) -> float:
    (r,) = rows(ctx, metric, **where)
    assert r["status"] == "ok", r
    return r["value"]


def test_prefill_rows_and_costs():
    ctx, e = make_ctx("prefill", seq_lens=[8, 24], batches=[1, 3])
    e.fn(ctx, ctx.choices["scenario"])
    assert not [r for r in ctx.rec.rows if r["status"] != "ok" and not is_energy_skipped_on_cpu(r)]
    args, model = ctx.args, ctx.loaded().model
    wbytes = args.n_params() * 4
    for T in (8, 24):
        for B in (1, 3):
            flops, nbytes = prefill_cost(args, batch=B, seq_len=T, weight_bytes=wbytes, kv_bytes_per_token=args.kv_bytes_per_token(4))
            assert value(ctx, "ttft_flops", seq_len=T, batch=B) == flops
            assert value(ctx, "ttft_bytes", seq_len=T, batch=B) == nbytes
            assert value(ctx, "ttft_ms", seq_len=T, batch=B) > 0
            ms = value(ctx, "ttft_ms", seq_len=T, batch=B)
            assert value(ctx, "ttft_tokens_per_s", seq_len=T, batch=B) == pytest.approx(B * T / ms * 1e3)
            assert value(ctx, "mem_kv_cache_bytes", seq_len=T, batch=B) == B * T * args.kv_bytes_per_token(4)
            assert value(ctx, "mem_weights_bytes", seq_len=T, batch=B) == wbytes


def test_decode_rows_costs_and_transformers_peer():
    ctx, e = make_ctx("decode", contexts=[16], batches=[1, 2], peers=["transformers"], peer_new_tokens=4)
    e.fn(ctx, ctx.choices["scenario"])
    args = ctx.args
    for B in (1, 2):
        r = rows(ctx, "decode_flops", batch=B, impl="lab")[0]
        mean_ctx = r["context_timed"]
        assert 16 < mean_ctx < 16 + 4 + QUICK.reps + 2  # steps advance from the prefilled context
        flops, nbytes = decode_cost(args, batch=B, context=round(mean_ctx), weight_bytes=args.n_params() * 4,
                                    kv_bytes_per_token=args.kv_bytes_per_token(4))
        assert r["value"] == flops and value(ctx, "decode_bytes", batch=B, impl="lab") == nbytes
        assert value(ctx, "decode_tokens_per_s", batch=B, impl="lab") > 0
        assert value(ctx, "mem_kv_cache_bytes", batch=B, impl="lab") > 0
    assert not rows(ctx, "decode_ms", impl="lab-cudagraph")  # CUDA only
    from lab.model.peers import HAS_TRANSFORMERS

    if HAS_TRANSFORMERS:
        for impl in ("transformers-static", "transformers-dynamic"):
            assert value(ctx, "decode_tokens_per_s", impl=impl, batch=1) > 0
    else:
        assert rows(ctx, "decode_ms", impl="transformers-static")[0]["status"] == "skipped"


@pytest.mark.parametrize("scenario, cfg, metric", [
    ("prefill", dict(seq_lens=[8], batches=[1]), "ttft_ms"),
    ("decode", dict(contexts=[16], batches=[1], peers=["transformers"], peer_new_tokens=4), "decode_ms"),
    ("generate", dict(max_new_tokens=3, prompts=["hi"]), "generate_ms"),
    ("perplexity", dict(window=32, stride=16, max_tokens=60), "window_ms"),
])
def test_model_level_timings_are_end_to_end(monkeypatch, scenario, cfg, metric):
    """What a caller of the whole model waits (TTFT, an eager decode step, generate, a scoring
    window) is timed end to end on CUDA, the host's launches inside (the flag each timing gets)."""
    import lab.records
    import lab.scenarios.decode
    from lab.measure import timing

    asked = []

    def spy(fn, device, cfg=MeasureConfig()):
        asked.append(cfg.end_to_end)
        return timing.time_fn(fn, device, cfg)

    monkeypatch.setattr(lab.records, "time_fn", spy)
    monkeypatch.setattr(lab.scenarios.decode, "time_fn", spy)
    ctx, e = make_ctx(scenario, **cfg)
    e.fn(ctx, ctx.choices["scenario"])
    assert rows(ctx, metric) and asked and all(asked), asked


@pytest.mark.parametrize("attention", [("sliding_window", dict(window=8)), ("performer", dict(features=16))])
def test_decode_and_prefill_kv_bytes_follow_the_attention(attention):
    """Transformer.kv_bytes: a rolling window holds at most `window` tokens, a Performer a fixed
    state; decode/prefill record it as the KV-cache component and in the bytes moved."""
    W = 8
    ctx, e = make_ctx("decode", attention=attention, contexts=[2 * W, 4 * W], batches=[2], memory=True)
    model, args = ctx.model(), ctx.args
    ref = ctx.model(reference=True)
    per_tok = ref.kv_bytes_per_token(4)
    assert ref.kv_bytes(3 * W, 4) == 3 * W * per_tok  # no kv_bytes on the modules: per token × context
    assert model.kv_bytes(2 * W, 4) == model.kv_bytes(W, 4) == model.kv_bytes(5 * W, 4) > 0
    if attention[0] == "sliding_window":
        assert model.kv_bytes(W, 4) == W * per_tok and model.kv_bytes(W // 2, 4) == W // 2 * per_tok
    else:
        assert model.kv_bytes_per_token(4) == 0  # unchanged: nothing grows per token
        assert model.kv_bytes(1, 4) == model.kv_bytes(W, 4) != W * per_tok
    e.fn(ctx, ctx.choices["scenario"])
    assert not [r for r in ctx.rec.rows if r["status"] != "ok" and not is_energy_skipped_on_cpu(r)]
    wbytes = args.n_params() * 4
    for c in (2 * W, 4 * W):
        assert value(ctx, "mem_kv_cache_bytes", context=c, batch=2) == 2 * model.kv_bytes(W, 4)  # bounded, = at context W
        r = rows(ctx, "decode_flops", context=c, batch=2, impl="lab")[0]
        flops, _ = decode_cost(args, batch=2, context=round(r["context_timed"]), weight_bytes=0, kv_bytes_per_token=0)
        assert r["value"] == flops and value(ctx, "decode_bytes", context=c, batch=2, impl="lab") == wbytes + 2 * model.kv_bytes(W, 4)
    ctx, e = make_ctx("prefill", attention=attention, seq_lens=[W, 2 * W], batches=[1])
    e.fn(ctx, ctx.choices["scenario"])
    assert not [r for r in ctx.rec.rows if r["status"] != "ok" and not is_energy_skipped_on_cpu(r)]
    for T in (W, 2 * W):
        assert value(ctx, "mem_kv_cache_bytes", seq_len=T, batch=1) == model.kv_bytes(W, 4)
        assert value(ctx, "ttft_bytes", seq_len=T, batch=1) == wbytes + model.kv_bytes(W, 4)
        assert value(ctx, "ttft_flops", seq_len=T, batch=1) == prefill_cost(args, batch=1, seq_len=T, weight_bytes=0, kv_bytes_per_token=0)[0]


def test_decode_rejects_unknown_peer():
    ctx, e = make_ctx("decode", contexts=[8], batches=[1], peers=["vllm"])
    with pytest.raises(LabError, match="unknown peer"):
        e.fn(ctx, ctx.choices["scenario"])


def test_decode_with_a_failing_point_goes_on(monkeypatch):
    ctx, e = make_ctx("decode", contexts=[8, 2000], batches=[1])  # the 2000-token point is made to fail
    calls = {"n": 0}
    orig = ctx.make_cache

    def flaky(batch, max_len, dtype=None):
        calls["n"] += 1
        if max_len > 1000:
            raise RuntimeError("CUDA out of memory (simulated)")
        return orig(batch, max_len, dtype)

    monkeypatch.setattr(ctx, "make_cache", flaky)
    e.fn(ctx, ctx.choices["scenario"])
    assert value(ctx, "decode_ms", context=8, batch=1, impl="lab") > 0
    (bad,) = [r for r in ctx.rec.rows if r["status"] == "failed"]
    assert bad["context"] == 2000 and "out of memory" in bad["error"]


def test_perplexity_rows_and_kl_when_transformed(monkeypatch):
    from lab.scenarios import perplexity as ppl_scenario

    ctx, e = make_ctx("perplexity", window=32, stride=16, max_tokens=100)
    assert not ppl_scenario.transformed(ctx)
    e.fn(ctx, ctx.choices["scenario"])
    assert value(ctx, "tokens_scored") == 99
    assert value(ctx, "perplexity") == pytest.approx(math.exp(value(ctx, "nll")))
    assert not rows(ctx, "kl_to_reference")
    assert value(ctx, "window_flops") == prefill_cost(ctx.args, batch=1, seq_len=32, weight_bytes=0, kv_bytes_per_token=0)[0]
    ctx2, _ = make_ctx("perplexity", window=32, stride=16, max_tokens=100)
    monkeypatch.setattr(ppl_scenario, "transformed", lambda c: True)
    e.fn(ctx2, ctx2.choices["scenario"])
    assert abs(value(ctx2, "kl_to_reference")) < 1e-6 and value(ctx2, "top1_agreement") == 1.0  # same weights


def test_generate_rows_text_and_costs():
    ctx, e = make_ctx("generate", max_new_tokens=5, prompts=["hello", "a longer prompt here"])
    e.fn(ctx, ctx.choices["scenario"])
    texts = rows(ctx, "new_tokens")
    assert [r["prompt"] for r in texts] == ["hello", "a longer prompt here"] and all(r["value"] == 5 for r in texts)
    assert all(isinstance(r["text"], str) for r in texts)
    assert value(ctx, "generate_tokens_per_s") > 0
    L = len("a longer prompt here")
    args, w, kv = ctx.args, ctx.args.n_params() * 4, ctx.args.kv_bytes_per_token(4)
    f, b = prefill_cost(args, batch=2, seq_len=L, weight_bytes=w, kv_bytes_per_token=kv)
    for i in range(4):
        df, db = decode_cost(args, batch=2, context=L + i, weight_bytes=w, kv_bytes_per_token=kv)
        f, b = f + df, b + db
    assert value(ctx, "generate_flops") == f and value(ctx, "generate_bytes") == b


def test_every_shipped_model_preset_validates_cheaply():
    for name, entry in registry.entries("model").items():
        cfg = entry.default_config()
        if name == "hf":
            with pytest.raises(LabError, match="model.path"):
                cfg.validate(None)
            continue
        args = cfg.model_args()
        assert args.n_heads % args.n_kv_heads == 0 and args.dim > 0
    with pytest.raises(LabError, match="model.source='onnx'"):
        registry.get("model", "tiny").make_config({"source": "onnx"}).model_args()


def is_energy_skipped_on_cpu(row) -> bool:
    """The CPU has no energy counter: decode records that as one skipped row with the reason."""
    return row["status"] == "skipped" and row["metric"] == "decode_energy_j" and "no energy counter" in row["error"]
