"""The decoder: cached decoding equals recomputation, masks, padding, presets' shapes and costs."""
from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch

from lab import registry
from lab.model.generate import chunk_for, decode_step, prefill, prefill_chunked
from lab.model.kv_cache import ContiguousKVCache
from lab.model.llama import AttnContext, ModelArgs, Transformer, apply_rotary, eager_attention
from lab.model.weights import empty_model, init_random_, weight_bytes
from tests.model.conftest import make_tiny

TOL = {torch.float64: 1e-10, torch.float32: 2e-4}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("prompt_len,total", [(1, 9), (5, 17), (13, 40)])
def test_cached_decode_equals_full_recompute(dtype, prompt_len, total):
    model = make_tiny(dtype, n_kv_heads=1)  # MQA here; GQA in the batch test below
    torch.manual_seed(1)
    ids = torch.randint(0, model.args.vocab_size, (2, total))
    with torch.inference_mode():
        full = model(ids)  # [B, T, V], no cache
    cache = ContiguousKVCache(model.args.n_layers, 2, total)
    got = [prefill(model, ids[:, :prompt_len], cache)]
    for t in range(prompt_len, total):
        got.append(decode_step(model, ids[:, t : t + 1], cache, t))
        assert cache.length == t + 1
    got = torch.stack(got, 1)  # [B, total - prompt_len + 1, V]
    ref = full[:, prompt_len - 1 :]
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=TOL[dtype], rtol=TOL[dtype])


def test_chunked_prefill_equals_one_shot():
    model = make_tiny(torch.float64)
    ids = torch.randint(0, 512, (3, 37))
    c1, c2 = ContiguousKVCache(2, 3, 37), ContiguousKVCache(2, 3, 37)
    a = prefill(model, ids, c1)
    b = prefill_chunked(model, ids, c2, chunk=8)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(c1.k[1], c2.k[1], atol=1e-12, rtol=0)
    assert 16 <= chunk_for(32, 32, 8192) <= 8192 and chunk_for(1, 9, 64) == 64


def test_mask_shapes_prefill_then_decode():
    pos = torch.zeros(2, 1, dtype=torch.long)
    ctx = AttnContext(pos=pos, cos=None, sin=None)
    m = ctx.mask(4, 4)
    assert m.shape == (1, 1, 4, 4) and torch.equal(m[0, 0], torch.ones(4, 4).tril().bool())
    m = ctx.mask(1, 5)  # decode: one query at slot 4 sees all 5 slots (the classic bug is [T, T] here)
    assert m.shape == (1, 1, 1, 5) and bool(m.all())
    key_mask = torch.tensor([[False, False, True, True, True], [True] * 5])
    ctx.key_mask = key_mask
    m = ctx.mask(3, 5)  # queries at slots 2..4
    assert m.shape == (2, 1, 3, 5)
    assert m[0, 0, 0].tolist() == [False, False, True, False, False]
    assert m[1, 0, 2].tolist() == [True] * 5
    m = ctx.mask(5, 5)
    assert m[0, 0, 0].tolist() == [True, False, False, False, False]  # a pad query sees only itself: no NaN row


def test_eager_attention_matches_sdpa_with_gqa():
    torch.manual_seed(0)
    B, H, H_kv, T, D = 2, 6, 2, 7, 8
    q, k, v = torch.randn(B, H, T, D, dtype=torch.float64), torch.randn(B, H_kv, T, D, dtype=torch.float64), torch.randn(B, H_kv, T, D, dtype=torch.float64)
    ctx = AttnContext(pos=torch.zeros(B, T, dtype=torch.long), cos=None, sin=None)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), is_causal=True)
    torch.testing.assert_close(eager_attention(q, k, v, ctx), ref, atol=1e-12, rtol=1e-12)


def test_rotary_preserves_norm_and_relative_positions():
    args = ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16, ffn_dim=32, vocab_size=16)
    from lab.model.llama import RotaryEmbedding

    rot = RotaryEmbedding(args)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)
    dots = []
    for p in (0, 5, 11):
        cq, sq = rot(torch.tensor([[p + 3]]))
        ck, sk = rot(torch.tensor([[p]]))
        qr, kr = apply_rotary(q, cq, sq), apply_rotary(k, ck, sk)
        assert torch.allclose(qr.norm(), q.norm(), atol=1e-6)
        dots.append(float((qr * kr).sum()))
    assert max(dots) - min(dots) < 1e-5  # depends on the offset only


def test_padded_rows_have_no_nan_and_match_unpadded():
    model = make_tiny(torch.float64)
    ids = torch.randint(1, 512, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    key_mask = torch.tensor([[False] * 3 + [True] * 6])
    pos = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4, 5]])
    with torch.inference_mode():
        out = model(padded, key_mask=key_mask, pos=pos)
        ref = model(ids)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 3:], ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["smollm2_135m", "llama3_8b", "llama32_1b", "qwen25_05b", "tiny"])
def test_preset_shapes_and_cost_formulas(name):
    cfg = registry.get("model", name).default_config()
    args = cfg.model_args() if name != "smollm2_135m" else replace(cfg, source="random").model_args()
    with torch.device("meta"):  # no memory: count parameters of the real shape
        model = Transformer(args)
    n = sum(p.numel() for p in model.parameters())
    assert n == args.n_params()
    assert model.kv_bytes_per_token(2) == args.kv_bytes_per_token(2) == 2 * args.n_layers * args.n_kv_heads * args.head_dim * 2
    expected = {"llama3_8b": 8.03e9, "llama32_1b": 1.24e9, "qwen25_05b": 0.494e9, "smollm2_135m": 0.1346e9}
    if name in expected:
        assert abs(n / expected[name] - 1) < 0.01, n  # the published sizes (Qwen2.5 without its biases)
    # decode FLOPs ≈ 2 per parameter (embedding lookup aside) plus attention over the context
    assert args.flops_per_token(0) == 2 * (args.n_params(embeddings=False) + args.vocab_size * args.dim)


def test_tiny_builds_fast_and_random_weights_are_finite():
    e = registry.get("model", "tiny")
    t = time.perf_counter()
    loaded = e.fn(e.default_config(), device="cpu", dtype=torch.float32)
    assert time.perf_counter() - t < 1.0
    assert loaded.tokenizer is None and loaded.source.startswith("random")
    assert loaded.model.embed_tokens.weight.dtype == torch.float32
    assert weight_bytes(loaded.model) == loaded.args.n_params() * 4
    out = loaded.model(torch.randint(0, 512, (2, 9)))
    assert torch.isfinite(out).all()


def test_random_preset_bf16_stays_finite_at_depth():
    args = replace(registry.get("model", "llama32_1b").default_config().model_args(), dim=128, n_heads=8, n_kv_heads=2,
                   head_dim=16, ffn_dim=256, vocab_size=1000, n_layers=24)
    model = init_random_(empty_model(args, device="cpu", dtype=torch.bfloat16))
    assert model.embed_tokens.weight.dtype == torch.bfloat16 and model.lm_head.weight is model.embed_tokens.weight
    with torch.inference_mode():
        out = model(torch.randint(0, 1000, (1, 16)))
    assert torch.isfinite(out.float()).all() and out.float().std() > 0


def test_llama3_rope_scaling_changes_only_low_frequencies():
    base = registry.get("model", "llama32_1b").default_config().model_args()
    from lab.model.llama import RotaryEmbedding

    scaled = RotaryEmbedding(base).inv_freq
    plain = RotaryEmbedding(replace(base, rope_scaling=None)).inv_freq
    assert torch.equal(scaled[:8], plain[:8])  # short wavelengths untouched
    torch.testing.assert_close(scaled[-1], plain[-1] / 32)  # the longest slowed by `factor`
    with pytest.raises(ValueError, match="yarn"):
        RotaryEmbedding(replace(base, rope_scaling=(("rope_type", "yarn"),)))
