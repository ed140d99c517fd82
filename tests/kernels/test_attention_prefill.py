"""kernels.attention_prefill: flash_attention against the float64 eager reference.

On CPU the kernel runs under TRITON_INTERPRET=1 with 16×16 tiles, so these small odd shapes
(37, 129 …) cross every kind of block edge: causal diagonal, window edge, sinks, sequence end.
On a GPU (no TRITON_INTERPRET) the same tests run compiled, bf16 included.
"""
from __future__ import annotations

import math

import torch

import pytest

from kernels.attention_prefill import (
    GPU_CONFIGS,
    TMA_2CTA,
    WARP_SPECIALIZED,
    PrefillConfig,
    _prune,
    _tma_ok,
    default_config,
    alibi_slopes_for,
    attention_reference,
    bytes_moved,
    flash_attention,
    flops,
    visible_pairs,
)
from lab.model.llama import AttnContext, eager_attention
from kernel_env import DEVICE, GPU

DTYPES = [torch.float16, torch.bfloat16] if GPU else [torch.float16, torch.float32]  # fp32 still runs in the tests below
TOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2.5e-2}  # atol = rtol


def rand(*shape, dtype, seed_gen):
    return torch.randn(*shape, generator=seed_gen, dtype=torch.float32).to(device=DEVICE, dtype=dtype)


def make(B, H, H_kv, T, S, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return rand(B, H, T, D, dtype=dtype, seed_gen=g), rand(B, H_kv, S, D, dtype=dtype, seed_gen=g), rand(B, H_kv, S, D, dtype=dtype, seed_gen=g)


def run_and_check(q, k, v, **kw):
    out = torch.full_like(q, float("nan"))  # poisoned: an element the kernel skips stays NaN
    o = flash_attention(q, k, v, out=out, **kw)
    assert o.data_ptr() == out.data_ptr()
    ref = attention_reference(q, k, v, **{n: x for n, x in kw.items() if n != "config"})
    assert not torch.isnan(o).any(), "unwritten or NaN outputs"
    tol = TOL[q.dtype]
    torch.testing.assert_close(o.double(), ref, atol=tol, rtol=tol)
    return o


# ---- dense, padded layout -------------------------------------------------------------------
CASES = [  # B, H, H_kv, T, S, D, causal
    (2, 4, 4, 37, 37, 64, True),  # MHA, odd length
    (1, 6, 2, 37, 37, 64, False),  # G = 3
    (2, 4, 1, 29, 129, 64, True),  # MQA, cache prefix: bottom-right causal
    (1, 4, 1, 40, 23, 64, True),  # T > S: the first 17 queries see no key -> zeros
    (1, 8, 2, 33, 50, 128, True),  # D = 128, G = 4
    (1, 2, 1, 21, 18, 16, False),  # D = 16, cross-attention-like T != S
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}H{}Hkv{}T{}S{}D{}{}".format(*c[:6], "causal" if c[6] else "full"))
def test_matches_reference(case, dtype):
    B, H, H_kv, T, S, D, causal = case
    if dtype == torch.float32 and D == 128 and not GPU:
        pytest.skip("one fp32 run of D=128 is enough on the interpreter")
    q, k, v = make(B, H, H_kv, T, S, D, dtype, seed=hash(case) % 2**31)
    run_and_check(q, k, v, causal=causal)


def test_zero_rows_when_query_sees_no_key():
    q, k, v = make(1, 2, 2, 20, 5, 32, torch.float32, seed=1)
    o = run_and_check(q, k, v, causal=True)
    assert o[:, :, :15].abs().max() == 0 and o[:, :, 15:].abs().min() > 0


def test_strided_inputs_as_the_model_makes_them():
    # Attention.forward views [B, T, H, D] and transposes: q/k/v are not contiguous
    g = torch.Generator().manual_seed(7)
    B, T, H, H_kv, D = 2, 37, 4, 2, 64
    q = rand(B, T, H, D, dtype=torch.float16, seed_gen=g).transpose(1, 2)
    kv = rand(B, T, 2 * H_kv, D, dtype=torch.float16, seed_gen=g).transpose(1, 2)  # k, v interleaved in one buffer
    k, v = kv[:, :H_kv], kv[:, H_kv:]
    assert not q.is_contiguous() and not k.is_contiguous()
    run_and_check(q, k, v, causal=True, scale=0.3)


def test_agrees_with_the_models_eager_attention():
    # same bottom-right alignment as AttnContext.mask, with a cache prefix (start = S - T)
    q, k, v = make(2, 6, 2, 19, 45, 64, torch.float32, seed=3)
    ctx = AttnContext(pos=torch.zeros(2, 19, dtype=torch.long), cos=torch.zeros(1), sin=torch.zeros(1), start=45 - 19)
    torch.testing.assert_close(flash_attention(q, k, v, causal=True), eager_attention(q, k, v, ctx), atol=2e-5, rtol=2e-5)


# ---- window and sinks -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "T,S,window,sinks,causal",
    [(45, 45, 9, 0, True), (45, 45, 9, 4, True), (30, 77, 20, 18, True), (45, 45, 7, 3, False), (37, 37, 64, 2, True)],
)
def test_window_and_sinks(T, S, window, sinks, causal):
    q, k, v = make(1, 4, 2, T, S, 64, torch.float16, seed=T * 1000 + window * 10 + sinks)
    run_and_check(q, k, v, causal=causal, window=window, sinks=sinks)


# ---- biases ---------------------------------------------------------------------------------
def test_alibi_slopes_per_head_and_per_batch():
    q, k, v = make(2, 4, 2, 37, 50, 64, torch.float32, seed=11)
    run_and_check(q, k, v, causal=True, alibi_slopes=alibi_slopes_for(4).to(DEVICE))
    per_batch = torch.rand(2, 4, generator=torch.Generator().manual_seed(12)).to(DEVICE)
    run_and_check(q, k, v, causal=False, alibi_slopes=per_batch)


def test_alibi_slopes_match_the_paper():
    s = alibi_slopes_for(8)
    torch.testing.assert_close(s, torch.tensor([2.0 ** (-i) for i in range(1, 9)]))
    assert alibi_slopes_for(12).shape == (12,)


def test_relative_bias_table():
    # T5-style: bucket values for distances -R..R, saturating beyond (here R = 10 < T)
    q, k, v = make(1, 4, 4, 37, 37, 64, torch.float16, seed=13)
    table = torch.randn(4, 21, generator=torch.Generator().manual_seed(14)).to(DEVICE)
    run_and_check(q, k, v, causal=False, rel_bias=table)
    run_and_check(q, k, v, causal=True, rel_bias=table[:1])  # shared by all heads


def test_dense_bias_broadcast_and_masking():
    q, k, v = make(2, 4, 2, 37, 40, 64, torch.float32, seed=15)
    g = torch.Generator().manual_seed(16)
    run_and_check(q, k, v, causal=True, bias=torch.randn(1, 4, 37, 40, generator=g).to(DEVICE))
    bias = torch.randn(2, 1, 37, 40, generator=g)
    bias[bias > 1.0] = float("-inf")  # a bias can mask too (padding masks)
    run_and_check(q, k, v, causal=False, bias=bias.to(DEVICE))


def test_biases_combine_with_window():
    q, k, v = make(1, 4, 1, 33, 33, 64, torch.float16, seed=17)
    g = torch.Generator().manual_seed(18)
    run_and_check(q, k, v, causal=True, window=10, sinks=2, alibi_slopes=alibi_slopes_for(4).to(DEVICE),
                  rel_bias=torch.randn(4, 9, generator=g).to(DEVICE), bias=torch.randn(1, 1, 33, 33, generator=g).to(DEVICE))


# ---- varlen ---------------------------------------------------------------------------------
def cu(lengths):
    return torch.tensor([0] + list(lengths), dtype=torch.int32).cumsum(0).to(torch.int32).to(DEVICE)


@pytest.mark.parametrize("causal", [True, False])
def test_varlen_ragged(causal):
    lq, lk = [5, 37, 1, 0, 20], [5, 50, 17, 3, 20]  # prefixes, a 1-token and an empty query sequence
    g = torch.Generator().manual_seed(19 + causal)
    H, H_kv, D = 6, 2, 64
    q = rand(sum(lq), H, D, dtype=torch.float16, seed_gen=g)
    k = rand(sum(lk), H_kv, D, dtype=torch.float16, seed_gen=g)
    v = rand(sum(lk), H_kv, D, dtype=torch.float16, seed_gen=g)
    run_and_check(q, k, v, causal=causal, cu_seqlens_q=cu(lq), cu_seqlens_k=cu(lk))


def test_varlen_with_window_alibi_and_bias():
    lengths = [9, 40, 23]
    g = torch.Generator().manual_seed(21)
    q = rand(sum(lengths), 4, 32, dtype=torch.float32, seed_gen=g)
    k = rand(sum(lengths), 4, 32, dtype=torch.float32, seed_gen=g)
    v = rand(sum(lengths), 4, 32, dtype=torch.float32, seed_gen=g)
    bias = torch.randn(3, 4, 40, 40, generator=g).to(DEVICE)
    run_and_check(q, k, v, causal=True, window=12, sinks=1, cu_seqlens_q=cu(lengths), max_seqlen_q=40,
                  alibi_slopes=torch.rand(3, 4, generator=g).to(DEVICE), bias=bias)


def test_varlen_equals_padded_per_sequence():
    lengths = [13, 31]
    g = torch.Generator().manual_seed(22)
    q = rand(sum(lengths), 4, 64, dtype=torch.float32, seed_gen=g)
    k = rand(sum(lengths), 2, 64, dtype=torch.float32, seed_gen=g)
    v = rand(sum(lengths), 2, 64, dtype=torch.float32, seed_gen=g)
    packed = flash_attention(q, k, v, cu_seqlens_q=cu(lengths))
    s = lengths[0]
    second = flash_attention(q[s:].transpose(0, 1)[None], k[s:].transpose(0, 1)[None], v[s:].transpose(0, 1)[None])
    torch.testing.assert_close(packed[s:], second[0].transpose(0, 1), atol=1e-6, rtol=1e-6)


# ---- Hopper options (PrefillConfig) ---------------------------------------------------------
# On the GPU the configs the sweep times; on the CPU the interpreter runs the same code paths
# (descriptor loads with their zero fill, the single loop of the warp-specialized path, the lazy
# rescale's branch) with 32×32 tiles.
if GPU:
    OPTION_CONFIGS = [PrefillConfig(128, 64, 8, 3, tma=True), WARP_SPECIALIZED, PrefillConfig(128, 64, 8, 3, lazy_rescale=True), TMA_2CTA]
else:
    OPTION_CONFIGS = [PrefillConfig(32, 32, 1, 1, tma=True), PrefillConfig(32, 32, 1, 1, tma=True, warp_specialize=True),
                      PrefillConfig(32, 32, 1, 1, lazy_rescale=True)]
OPTION_CASES = [  # B, H, H_kv, T, S, D, causal
    (2, 4, 2, 150, 150, 128, True),  # GQA, several 128-row blocks, ragged end (causal: not warp-specialized)
    (1, 4, 4, 40, 256, 64, False),  # S % 256 == 0: the warp-specialized loop runs unmasked
    (1, 4, 1, 70, 300, 128, False),  # MQA, sequence end inside a key block (masked on every block)
]


@pytest.mark.parametrize("config", OPTION_CONFIGS, ids=str)
@pytest.mark.parametrize("case", OPTION_CASES, ids=lambda c: "B{}H{}Hkv{}T{}S{}D{}{}".format(*c[:6], "causal" if c[6] else "full"))
def test_options_match_reference(case, config):
    B, H, H_kv, T, S, D, causal = case
    q, k, v = make(B, H, H_kv, T, S, D, torch.bfloat16 if GPU else torch.float16, seed=hash(case) % 2**31)
    assert _tma_ok(q, k, v)
    run_and_check(q, k, v, causal=causal, config=config)


@pytest.mark.parametrize("config", OPTION_CONFIGS, ids=str)
def test_options_with_window_sinks_bias_and_varlen(config):
    # window, sinks, biases and varlen leave the warp-specialized path for the general one
    q, k, v = make(1, 4, 2, 150, 150, 64, torch.float16, seed=31)
    g = torch.Generator().manual_seed(32)
    run_and_check(q, k, v, causal=True, window=40, sinks=3, config=config)
    run_and_check(q, k, v, causal=False, window=33, bias=torch.randn(1, 4, 150, 150, generator=g).to(DEVICE), config=config)
    lengths = [37, 150, 1]
    qv = rand(sum(lengths), 4, 64, dtype=torch.float16, seed_gen=g)
    kv = rand(sum(lengths), 2, 64, dtype=torch.float16, seed_gen=g)
    run_and_check(qv, kv, kv, causal=True, cu_seqlens_q=cu(lengths), config=config)


@pytest.mark.parametrize("config", OPTION_CONFIGS, ids=str)
def test_options_when_the_max_keeps_growing(config):
    # later keys score ever higher: the running max moves by more than RESCALE_SLACK many times,
    # so the lazy rescale takes both sides of its branch
    q, k, v = make(1, 2, 2, 130, 400, 64, torch.float16, seed=33)
    q, k = q.abs(), (k.abs().float() * torch.linspace(0.5, 6.0, 400, device=DEVICE)[:, None]).to(k.dtype)
    run_and_check(q, k, v, causal=False, config=config)


def test_tma_config_on_unaligned_rows_takes_the_pointer_path():
    # rows of 68 halves (136 bytes) cannot be TMA rows: the config falls back, same answer
    q, k, v = make(1, 2, 2, 33, 33, 68, torch.float16, seed=34)
    q, k, v = (x[..., :64] for x in (q, k, v))
    assert not _tma_ok(q, k, v)
    cfg = OPTION_CONFIGS[0]
    assert cfg.tma
    run_and_check(q, k, v, causal=True, config=cfg)


def test_default_and_autotuned_configs_follow_what_the_inputs_allow():
    assert default_config(128, 4096, warp_specialized=True) == WARP_SPECIALIZED
    assert default_config(128, 4096) == TMA_2CTA
    assert default_config(128, 4096, biased=True) == default_config(64, 4096) == PrefillConfig(128, 64, 8, 3)
    assert default_config(128, 40) == PrefillConfig(64, 64, 4, 3)
    configs = [c.triton_config() for c in GPU_CONFIGS]
    meta = dict(HEAD_DIM=128, CAUSAL=False, HAS_WINDOW=False, HAS_ALIBI=False, VARLEN=False, HAS_SINKS=False,
                HAS_BIAS=False, HAS_REL=False, DOT_PRECISION="tf32")
    kinds = lambda tma_ok, **kw: {(c.kwargs["USE_TMA"], c.kwargs["WARP_SPEC"]) for c in _prune(configs, dict(T=4096, tma_ok=tma_ok), **(meta | kw))}
    assert kinds(1) == {(False, False), (True, False), (True, True)}
    assert kinds(0) == {(False, False)}
    for name in ("CAUSAL", "HAS_WINDOW", "HAS_ALIBI", "VARLEN", "HAS_SINKS", "HAS_BIAS", "HAS_REL"):
        assert kinds(1, **{name: True}) == {(False, False), (True, False)}, name
    assert kinds(1, DOT_PRECISION="ieee") == {(False, False), (True, False)}


# ---- launcher errors ------------------------------------------------------------------------
def test_launcher_errors_name_the_argument(monkeypatch):
    q, k, v = make(1, 4, 2, 8, 8, 64, torch.float16, seed=23)
    bad = [
        (dict(q=q.double()), "q has dtype torch.float64"),
        (dict(k=k.float()), "k/v dtypes"),
        (dict(k=make(1, 3, 3, 8, 8, 64, torch.float16, 0)[1], v=make(1, 3, 3, 8, 8, 64, torch.float16, 0)[2]), "k has 3 heads"),
        (dict(q=q[..., ::2], k=k[..., ::2], v=v[..., ::2]), "q must be contiguous along D (stride(-1) == 1)"),
        (dict(q=q[..., :48].contiguous(), k=k[..., :48].contiguous(), v=v[..., :48].contiguous()), "q head dim D=48"),
        (dict(q=q[0]), "q must be [B, heads, T or S, D]"),
        (dict(v=v[:, :, :5]), "v shape"),
        (dict(sinks=2), "sinks only mean something with a window"),
        (dict(window=0), "window must be a positive int"),
        (dict(bias=torch.zeros(1, 4, 8, 4, device=DEVICE)), "bias must have shape"),
        (dict(alibi_slopes=torch.ones(3, device=DEVICE)), "alibi_slopes must have shape"),
        (dict(rel_bias=torch.ones(4, 8, device=DEVICE)), "rel_bias must have shape"),
        (dict(out=torch.empty(1, 4, 8, 64, device=DEVICE)), "out must be"),
        (dict(config=dict(block_m=128)), "config must be a PrefillConfig"),
        (dict(config=PrefillConfig(block_m=96)), "config needs block_m, block_n in 16..256"),
        (dict(config=PrefillConfig(warp_specialize=True)), "config warp_specialize needs tma"),
        (dict(config=PrefillConfig(tma=True, warp_specialize=True, lazy_rescale=True)), "config warp_specialize needs tma, no lazy_rescale"),
        (dict(config=PrefillConfig(num_stages=3, tma=True, warp_specialize=True)), "config warp_specialize needs tma, no lazy_rescale and num_stages <= 2"),
    ]
    for change, msg in bad:
        args = dict(q=q, k=k, v=v) | change
        with pytest.raises(ValueError, match="flash_attention: " + re_escape(msg)):
            flash_attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)
    qv = q[0].transpose(0, 1).contiguous()  # [T, H, D]
    kv = k[0].transpose(0, 1).contiguous()
    with pytest.raises(ValueError, match="cu_seqlens_q must be a 1-d int32"):
        flash_attention(qv, kv, kv, cu_seqlens_q=torch.tensor([0, 8], device=DEVICE))
    if not GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            flash_attention(q, k, v)


def re_escape(s):
    import re

    return re.escape(s)


# ---- cost formulas --------------------------------------------------------------------------
def test_cost_formulas():
    assert flops(2, 4, 128, 128, 64, causal=False) == 4 * 2 * 4 * 128 * 128 * 64
    assert flops(2, 4, 128, 128, 64, causal=True) == flops(2, 4, 128, 128, 64, causal=False) / 2
    # a prefix of 100 cached keys: every query sees them all, plus the triangle of the new ones
    assert visible_pairs(28, 128, causal=True) == 28 * 100 + 28 * 28 / 2
    assert visible_pairs(100, 100, causal=True, window=10) == 1000
    assert bytes_moved(2, 8, 2, 16, 32, 64, 2) == (2 * 2 * 8 * 16 * 64 + 2 * 2 * 2 * 32 * 64) * 2
    assert math.isclose(flops(1, 1, 1, 1, 1, causal=False), 4.0)
