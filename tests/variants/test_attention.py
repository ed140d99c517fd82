"""Attention variants against the reference on a small random model in float64.

Exact variants (sdpa, mha, gqa at the checkpoint's groups, MLA at full rank, a window covering
the sequence, Linformer with block 1) must equal the reference to float64 rounding; pooled head
layouts must be exact where the pooled heads were equal; approximations (Performer, Linformer,
low-rank MLA) are tested for their own invariants: causality, finiteness, error falling with
more features / rank / finer blocks. For every variant, cached decoding (prefill, chunks, single
steps) must equal one full forward, and the KV bytes each reports must be what it stores.
"""
from __future__ import annotations

import copy
import math
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

import pytest

from lab import registry
from lab.errors import LabError
from lab.model.kv_cache import ContiguousKVCache
from lab.model.llama import AttnContext, ModelArgs, Transformer
from variants.attention._common import model_kv_bytes, state_nbytes

# H=6 query heads over H_kv=3 KV heads (G=2), so that pooling 3 -> 2 groups is uneven, as for
# SmolLM2's 9/3; head_dim 16 is the smallest the Triton kernels take.
ARGS = ModelArgs(dim=48, n_layers=2, n_heads=6, n_kv_heads=3, head_dim=16, ffn_dim=64, vocab_size=97,
                 rope_theta=10000.0, max_seq_len=256)
T = 32
F64 = dict(rtol=1e-9, atol=1e-9)


def make_model(seed: int = 0, args: ModelArgs = ARGS, equal_kv_groups: list[list[int]] | None = None) -> Transformer:
    """Random float64 model with attention peaked enough to matter (q, k scaled 1.5x);
    equal_kv_groups: KV heads to make identical (copies of the group's first head)."""
    torch.manual_seed(seed)
    m = Transformer(args).double().eval()
    D = args.head_dim
    with torch.no_grad():
        for layer in m.layers:
            a = layer.self_attn
            a.q_proj.weight.mul_(1.5)
            a.k_proj.weight.mul_(1.5)
            for grp in equal_kv_groups or []:
                for h in grp[1:]:
                    for w in (a.k_proj.weight, a.v_proj.weight):
                        w[h * D : (h + 1) * D] = w[grp[0] * D : (grp[0] + 1) * D]
    return m


def converted(base: Transformer, name: str, **cfg) -> Transformer:
    entry = registry.get("attention", name)
    m = copy.deepcopy(base)
    entry.fn(m, entry.make_config(cfg))
    return m.eval()


def tokens(seed: int = 1, B: int = 2, n: int = T) -> torch.Tensor:
    return torch.randint(0, ARGS.vocab_size, (B, n), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def cached_logits(model: Transformer, tok: torch.Tensor, chunks=(13, 1, 1, 6, 1, 1)) -> torch.Tensor:
    """Prefill and decode through a cache in the given chunk sizes, then single steps to the end."""
    B, n = tok.shape
    cache = ContiguousKVCache(model.args.n_layers, B, n)
    out, start = [], 0
    sizes = list(chunks) + [1] * n
    for c in sizes:
        if start >= n:
            break
        c = min(c, n - start)
        out.append(model(tok[:, start : start + c], cache=cache, start=start))
        start += c
    return torch.cat(out, 1)


# ---------------------------------------------------------------------------------------------
# Registry and validation
# ---------------------------------------------------------------------------------------------
ALL = ("reference", "sdpa", "flash", "mha", "gqa", "mqa", "mla", "sliding_window", "performer", "linformer")


def test_every_variant_is_registered_and_reference_is_marked():
    table = registry.entries("attention")
    assert set(ALL) <= set(table)
    assert registry.reference("attention").name == "reference"
    assert table["flash"].requires == ("triton",)


@pytest.mark.parametrize(
    "name,cfg,match",
    [
        ("gqa", dict(groups=4), "multiple of 3"),
        ("gqa", dict(backend="triton"), "backend"),
        ("mla", dict(rank=10_000), "rank=10000"),
        ("mla", dict(rope_dim=7), "even"),
        ("mla", dict(rank_fraction=1.5), "rank_fraction"),
        ("mla", dict(rope="full", decode="absorbed"), "cannot be absorbed"),
        ("sliding_window", dict(window=0), "window=0"),
        ("performer", dict(features=0), "features=0"),
        ("linformer", dict(projection="learned"), "projection"),
    ],
)
def test_bad_configs_raise_one_clear_error(name, cfg, match):
    entry = registry.get("attention", name)
    with pytest.raises(LabError, match=match):
        entry.make_config(cfg).validate(ARGS)


# ---------------------------------------------------------------------------------------------
# Exact variants equal the reference
# ---------------------------------------------------------------------------------------------
EXACT = [
    ("reference", {}),
    ("sdpa", {}),
    ("mha", {}),
    ("mha", dict(backend="sdpa")),
    ("gqa", {}),  # groups 0 = the checkpoint's 3
    ("gqa", dict(groups=3, backend="sdpa")),
    ("gqa", dict(groups=6)),  # more heads than the checkpoint: repeated, exact
    ("mla", dict(rank=48, rope="full")),  # full rank = min(C, rows) = C
    ("mla", dict(rank=48, rope_dim=16)),  # every key dim decoupled: only V compressed, full rank
    ("mla", dict(rank_fraction=1.0, rope="full", backend="sdpa")),
    ("sliding_window", dict(window=T)),
    ("sliding_window", dict(window=T, rolling=False, backend="sdpa")),
    ("linformer", dict(block=1)),
]


def _layer_out(attn, x, pos):
    cos, sin = attn_rotary(pos)
    return attn(x, AttnContext(pos=pos, cos=cos, sin=sin))


_BASE = make_model()
attn_rotary = _BASE.rotary


@pytest.mark.parametrize("name,cfg", EXACT, ids=[f"{n}-{c}" for n, c in EXACT])
def test_exact_variants_equal_reference(name, cfg):
    tok = tokens()
    m = converted(_BASE, name, **cfg)
    with torch.no_grad():
        ref = _BASE(tok)
        torch.testing.assert_close(m(tok), ref, **F64)
        torch.testing.assert_close(cached_logits(m, tok), ref, **F64)
        # per layer too: logits can round a 1e-16 difference away, a layer output does not hide it
        x = torch.randn(2, 17, ARGS.dim, dtype=torch.float64)
        pos = torch.arange(17).expand(2, 17)
        torch.testing.assert_close(_layer_out(m.layers[0].self_attn, x, pos), _layer_out(_BASE.layers[0].self_attn, x, pos), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Pooled KV heads: exact where the pooled heads were equal, not otherwise
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,cfg,equal",
    [("mqa", {}, [[0, 1, 2]]), ("gqa", dict(groups=1), [[0, 1, 2]]), ("gqa", dict(groups=2), [[0, 1]]), ("gqa", dict(groups=2, backend="sdpa"), [[0, 1]])],
)
def test_pooling_is_exact_when_grouped_heads_are_equal(name, cfg, equal):
    tok = tokens()
    base = make_model(3, equal_kv_groups=equal)
    m = converted(base, name, **cfg)
    with torch.no_grad():
        torch.testing.assert_close(m(tok), base(tok), **F64)
        torch.testing.assert_close(cached_logits(m, tok), base(tok), **F64)
        # and on a checkpoint whose heads differ it is an approximation, not the identity
        general = make_model(4)
        assert (converted(general, name, **cfg)(tok) - general(tok)).abs().max() > 1e-3


def test_uneven_groups_pool_contiguous_heads_and_keep_query_groups():
    m = converted(_BASE, "gqa", groups=2)
    a, src = m.layers[0].self_attn, _BASE.layers[0].self_attn
    D = ARGS.head_dim
    wk = src.k_proj.weight.view(3, D, -1)
    assert a.n_kv_heads == 2
    torch.testing.assert_close(a.k_proj.weight.view(2, D, -1)[0], (wk[0] + wk[1]) / 2)
    torch.testing.assert_close(a.k_proj.weight.view(2, D, -1)[1], wk[2])
    # query heads 0..3 used old KV heads 0, 1 -> group 0; heads 4, 5 used old head 2 -> group 1
    assert a.core.head_map.tolist() == [0, 0, 0, 0, 1, 1]


# ---------------------------------------------------------------------------------------------
# Cached decode equals full recompute, for every variant (approximations included)
# ---------------------------------------------------------------------------------------------
CACHED = [
    ("gqa", dict(groups=2)),
    ("mqa", {}),
    ("mla", dict(rank=20, rope_dim=6)),
    ("mla", dict(rank=20, rope_dim=6, decode="naive")),
    ("mla", dict(rank=20, rope="full")),
    ("mla", dict(rank=12, rope_dim=4, backend="sdpa")),
    ("sliding_window", dict(window=6, sinks=2)),  # the ring wraps several times, across chunk edges
    ("sliding_window", dict(window=7, sinks=0)),
    ("sliding_window", dict(window=5, sinks=3, rolling=False)),
    ("sliding_window", dict(window=6, sinks=2, backend="sdpa")),
    ("performer", dict(features=32, chunk=8)),
    ("linformer", dict(block=4)),
    ("linformer", dict(block=5, projection="random")),
]


@pytest.mark.parametrize("name,cfg", CACHED, ids=[f"{n}-{c}" for n, c in CACHED])
def test_cached_decode_equals_full_recompute(name, cfg):
    tok = tokens(5)
    m = converted(_BASE, name, **cfg)
    with torch.no_grad():
        full = m(tok)
        assert torch.isfinite(full).all()
        torch.testing.assert_close(cached_logits(m, tok), full, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(cached_logits(m, tok, chunks=(1, 2, 3, 17)), full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,cfg", [("sliding_window", dict(window=4, sinks=1)), ("performer", dict(features=16)), ("linformer", dict(block=3)), ("mla", dict(rank=8, rope="full"))])
def test_replaying_the_last_step_gives_the_same_output(name, cfg):
    """Benchmarks time one decode step at the same slot repeatedly; state must not drift."""
    m = converted(_BASE, name, **cfg)
    tok = tokens(6, n=12)
    cache = ContiguousKVCache(ARGS.n_layers, 2, 12)
    with torch.no_grad():
        m(tok[:, :9], cache=cache, start=0)  # 9: a Linformer block (3) just completed
        first = m(tok[:, 9:10], cache=cache, start=9)
        for _ in range(3):
            torch.testing.assert_close(m(tok[:, 9:10], cache=cache, start=9), first, **F64)
        torch.testing.assert_close(m(tok[:, 10:11], cache=cache, start=10), m(tok[:, :11])[:, 10:], **F64)


def test_restarting_a_sequence_resets_compact_state_and_a_gap_raises():
    m = converted(_BASE, "sliding_window", window=4, sinks=1)
    tok = tokens(6, n=12)
    cache = ContiguousKVCache(ARGS.n_layers, 2, 12)
    with torch.no_grad():
        m(tok[:, :8], cache=cache, start=0)
        again = m(tok[:, :8], cache=cache, start=0)  # start 0: a new sequence, not a continuation
        torch.testing.assert_close(again, m(tok[:, :8]), **F64)
        with pytest.raises(ValueError, match="continues at slot 10"):
            m(tok[:, 10:11], cache=cache, start=10)


# ---------------------------------------------------------------------------------------------
# Sliding window: against an independent implementation, and what the ring holds
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window,sinks", [(5, 0), (5, 2), (1, 0), (9, 4)])
def test_window_equals_an_independent_masked_reference(window, sinks):
    from kernels.attention_prefill import attention_reference

    tok = tokens(7)
    ref = copy.deepcopy(_BASE)
    for layer in ref.layers:
        layer.self_attn.core = lambda q, k, v, ctx: attention_reference(q, k, v, causal=True, window=window, sinks=sinks).to(q.dtype)
    with torch.no_grad():
        want = ref(tok)
        for rolling in (True, False):
            m = converted(_BASE, "sliding_window", window=window, sinks=sinks, rolling=rolling)
            torch.testing.assert_close(m(tok), want, **F64)
            torch.testing.assert_close(cached_logits(m, tok), want, **F64)
        assert (want - _BASE(tok)).abs().max() > 1e-3  # the window matters at this length


def test_rolling_cache_holds_sinks_plus_window_and_leaves_the_model_cache_empty():
    window, sinks, n = 6, 2, 30
    m = converted(_BASE, "sliding_window", window=window, sinks=sinks)
    cache = ContiguousKVCache(ARGS.n_layers, 2, n)
    with torch.no_grad():
        m(tokens(8, n=n), cache=cache, start=0)
    assert cache.k[0] is None and cache.nbytes() == 0 and cache.length == n
    per_token = 2 * ARGS.n_kv_heads * ARGS.head_dim * 8  # float64 K and V
    assert state_nbytes(cache) == ARGS.n_layers * 2 * (sinks + window) * per_token  # batch 2
    assert model_kv_bytes(m, n, 2) == ARGS.n_layers * (sinks + window) * 2 * ARGS.n_kv_heads * ARGS.head_dim * 2
    assert model_kv_bytes(m, 5, 2) == ARGS.n_layers * 5 * 2 * ARGS.n_kv_heads * ARGS.head_dim * 2
    unrolled = converted(_BASE, "sliding_window", window=window, sinks=sinks, rolling=False)
    assert model_kv_bytes(unrolled, n, 2) == n * ARGS.kv_bytes_per_token(2)


# ---------------------------------------------------------------------------------------------
# MLA
# ---------------------------------------------------------------------------------------------
def test_mla_absorbed_decode_equals_naive_decode_and_is_the_path_taken():
    tok = tokens(9)
    absorbed = converted(_BASE, "mla", rank=12, rope_dim=6)
    naive = converted(_BASE, "mla", rank=12, rope_dim=6, decode="naive")
    for layer in absorbed.layers:  # a decode step must not reconstruct per-slot K/V
        orig = layer.self_attn.keys_values

        def guarded(c, kr, ctx, orig=orig):
            assert c.shape[2] == ctx.pos.shape[1], "absorbed decode reconstructed K/V"
            return orig(c, kr, ctx)

        layer.self_attn.keys_values = guarded
    with torch.no_grad():
        a = cached_logits(absorbed, tok, chunks=(11,))
        torch.testing.assert_close(a, cached_logits(naive, tok, chunks=(11,)), **F64)
        torch.testing.assert_close(a, naive(tok), **F64)


def test_mla_error_falls_with_rank_and_vanishes_at_full_rank():
    tok = tokens(10)
    with torch.no_grad():
        ref = _BASE(tok)
        errs = [(converted(_BASE, "mla", rank=r, rope="full")(tok) - ref).abs().max().item() for r in (4, 16, 32, 48)]
    assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-9, errs


def test_mla_partial_rope_keeps_the_fastest_pairs_and_its_full_rank_error_is_only_the_dropped_rotation():
    m = converted(_BASE, "mla", rank=48, rope_dim=6)
    a = m.layers[0].self_attn
    assert a.rope_idx.tolist() == [0, 1, 2, 8, 9, 10]  # pairs (i, i + D/2) with the largest inv_freq
    # with every rotary frequency set to zero, dropping rotations changes nothing: exact again
    base = copy.deepcopy(_BASE)
    base.rotary.inv_freq.zero_()
    base.rotary.inv_freq[:3] = torch.tensor([1.0, 0.5, 0.25])  # only the kept pairs turn
    m2 = converted(base, "mla", rank=48, rope_dim=6)
    tok = tokens(11)
    with torch.no_grad():
        torch.testing.assert_close(m2(tok), base(tok), **F64)
        torch.testing.assert_close(cached_logits(m2, tok), base(tok), **F64)


def test_mla_cache_holds_the_latent_and_rope_key_and_reports_their_bytes():
    r, dr, n = 20, 4, 16
    m = converted(_BASE, "mla", rank=r, rope_dim=dr)
    cache = ContiguousKVCache(ARGS.n_layers, 2, n)
    with torch.no_grad():
        m(tokens(12, n=n), cache=cache, start=0)
    assert cache.k[0].shape == (2, 1, n, r) and cache.v[0].shape == (2, ARGS.n_kv_heads, n, dr)
    assert m.kv_bytes_per_token(2) == ARGS.n_layers * (r + ARGS.n_kv_heads * dr) * 2
    assert cache.nbytes() == m.kv_bytes_per_token(8) * n * 2  # float64 cache, batch 2
    full = converted(_BASE, "mla", rank=r, rope="full")
    assert full.kv_bytes_per_token(2) == ARGS.n_layers * r * 2


# ---------------------------------------------------------------------------------------------
# KV bytes per token of the head layouts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,cfg,heads", [("reference", {}, 3), ("sdpa", {}, 3), ("mha", {}, 6), ("gqa", dict(groups=2), 2), ("gqa", dict(groups=1), 1), ("mqa", {}, 1)])
def test_kv_bytes_per_token_of_head_layouts(name, cfg, heads):
    m = converted(_BASE, name, **cfg)
    assert m.kv_bytes_per_token(2) == 2 * ARGS.n_layers * heads * ARGS.head_dim * 2
    cache = ContiguousKVCache(ARGS.n_layers, 1, 9)
    with torch.no_grad():
        m(tokens(13, B=1, n=9), cache=cache, start=0)
    assert cache.nbytes() == m.kv_bytes_per_token(8) * 9


# ---------------------------------------------------------------------------------------------
# Approximations: causality, finiteness, error against the exact softmax
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,cfg", [("performer", dict(features=64, chunk=8)), ("linformer", dict(block=4)), ("mla", dict(rank=8, rope_dim=4)), ("sliding_window", dict(window=4, sinks=1))])
def test_future_tokens_do_not_change_past_outputs(name, cfg):
    m = converted(_BASE, name, **cfg)
    a, b = tokens(14), tokens(14).clone()
    b[:, 20:] = (b[:, 20:] + 1) % ARGS.vocab_size
    with torch.no_grad():
        la, lb = m(a), m(b)
    assert torch.isfinite(la).all() and la.shape == (2, T, ARGS.vocab_size)
    torch.testing.assert_close(la[:, :20], lb[:, :20], rtol=1e-10, atol=1e-10)
    assert (la[:, 20:] - lb[:, 20:]).abs().max() > 1e-3


def _softmax_attention(q, k, v):
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v


def test_performer_error_falls_with_more_features():
    from variants.attention.performer import favor_causal, orthogonal_features

    errs = []
    for m in (8, 64, 512):
        e = 0.0
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            q, k, v = (torch.randn(1, 2, 32, 16, generator=g, dtype=torch.float64) * 0.6 for _ in range(3))
            w = orthogonal_features(m, 16, torch.Generator().manual_seed(100 + seed))
            e += (favor_causal(q, k, v, w, chunk=8) - _softmax_attention(q, k, v)).abs().mean().item()
        errs.append(e / 4)
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.4 * errs[0]  # Monte Carlo: ~1/sqrt(m), less for the ratio estimator


def test_performer_chunking_and_gqa_grouping_do_not_change_the_result():
    from variants.attention.performer import favor_causal, orthogonal_features

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, 29, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 3, 29, 16, generator=g, dtype=torch.float64) for _ in range(2))
    w = orthogonal_features(40, 16, torch.Generator().manual_seed(1))
    a = favor_causal(q, k, v, w, chunk=4)
    torch.testing.assert_close(a, favor_causal(q, k, v, w, chunk=64), **F64)
    torch.testing.assert_close(a, favor_causal(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), w, chunk=7), **F64)
    # keys far larger than the features' range: the running shift keeps it finite
    assert torch.isfinite(favor_causal(q * 30, k * 30, v, w, chunk=4)).all()


def test_linformer_is_exact_for_blockwise_constant_keys_and_degrades_with_in_block_spread():
    from variants.attention.linformer import pooled_block_attention

    b, n, D = 4, 24, 16
    tok = tokens(15)
    with torch.no_grad():  # block 1 pools nothing: the reference exactly
        torch.testing.assert_close(converted(_BASE, "linformer", block=1)(tok), _BASE(tok), **F64)
    errs = []
    for eps in (0.0, 0.05, 0.5):
        e = 0.0
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            q = torch.randn(1, 2, n, D, generator=g, dtype=torch.float64)
            k, v = (torch.randn(1, 2, n // b, D, generator=g, dtype=torch.float64).repeat_interleave(b, 2) for _ in range(2))
            k = k + eps * torch.randn(k.shape, generator=g, dtype=torch.float64)
            empty = k[:, :, :0]
            y, _, _ = pooled_block_attention(q, k, v, empty, empty, 0, b, torch.full((b,), 1.0 / b, dtype=torch.float64))
            e += (y - _softmax_attention(q, k, v)).abs().max().item()
        errs.append(e / 3)
    # keys equal within each block: mean pooling + log(block) is exactly the softmax's mass
    assert errs[0] < 1e-12 and errs[0] < errs[1] < errs[2], errs


def test_linformer_cache_holds_pooled_blocks_plus_the_current_block():
    m = converted(_BASE, "linformer", block=8)
    per_layer_token = 2 * ARGS.n_kv_heads * ARGS.head_dim * 2
    assert model_kv_bytes(m, 100, 2) == ARGS.n_layers * (100 // 8 + 100 % 8) * per_layer_token
    cache = ContiguousKVCache(ARGS.n_layers, 2, 37)
    with torch.no_grad():
        m(tokens(16, n=37), cache=cache, start=0)
    assert cache.k[0] is None and state_nbytes(cache) == ARGS.n_layers * 2 * (37 // 8 + 37 % 8) * 2 * ARGS.n_kv_heads * ARGS.head_dim * 8


def test_performer_state_is_fixed_size():
    m = converted(_BASE, "performer", features=24)
    per_layer = 4 * ARGS.n_kv_heads * (24 * ARGS.head_dim + 24 + 1)
    assert model_kv_bytes(m, 10, 2) == model_kv_bytes(m, 10_000, 2) == ARGS.n_layers * per_layer
    assert m.kv_bytes_per_token(2) == 0


# ---------------------------------------------------------------------------------------------
# Left-padded batches: valid rows match the unpadded sequences
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,cfg", [("sdpa", {}), ("mha", {}), ("gqa", dict(groups=2)), ("mla", dict(rank=16, rope_dim=4)), ("mla", dict(rank=16, rope="full")), ("performer", dict(features=16)), ("sliding_window", dict(window=5, rolling=False))])
def test_left_padding_matches_unpadded_rows(name, cfg):
    m = converted(_BASE, name, **cfg)
    tok = tokens(17, B=1, n=20)
    pad = 6
    padded = torch.cat((torch.zeros(1, pad, dtype=tok.dtype), tok), 1)
    key_mask = torch.cat((torch.zeros(1, pad, dtype=torch.bool), torch.ones(1, 20, dtype=torch.bool)), 1)
    pos = (torch.arange(pad + 20) - pad).clamp_min(0)[None]
    with torch.no_grad():
        want = m(tok)
        got = m(padded, key_mask=key_mask, pos=pos)[:, pad:]
        # cached: prefill 14 (pad included), then decode the rest
        cache = ContiguousKVCache(ARGS.n_layers, 1, pad + 20)
        outs = [m(padded[:, :14], cache=cache, start=0, key_mask=key_mask, pos=pos[:, :14])]
        for t in range(14, pad + 20):
            outs.append(m(padded[:, t : t + 1], cache=cache, start=t, key_mask=key_mask, pos=pos[:, t : t + 1]))
    torch.testing.assert_close(got, want, **F64)
    torch.testing.assert_close(torch.cat(outs, 1)[:, pad:], want, **F64)
