"""kernels.attention_decode: paged_decode_attention against gather + float64 softmax.

On CPU the kernel runs under TRITON_INTERPRET=1 with 16-token tiles, so the three ways a tile
meets the table are all exercised: one block per sequence (the contiguous view), tiles inside a
block (P = 16, 32, 48) and tiles across blocks (P = 8, 40), with partially filled last blocks.
Split partials are merged by the last program of each group (fused, the default) or by a second
kernel; under the interpreter the programs run in turn, so the last one in grid order merges.
"""
from __future__ import annotations

import re

import torch

import pytest

import kernels.attention_decode as ad
from kernels.attention_decode import (
    DecodeConfig,
    KVLayout,
    SplitPolicy,
    bytes_moved,
    decode_reference,
    default_num_splits,
    dequantize_kv,
    flops,
    paged_decode_attention,
    paged_from_contiguous,
    quantize_kv,
)
from kernel_env import DEVICE, GPU

TOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2.5e-2}


def make(B, H, H_kv, S, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device=DEVICE, dtype=dtype)
    return r(B, H, D), r(B, H_kv, S, D), r(B, H_kv, S, D)


def check(q, paged, k_scale=None, v_scale=None, k_cache=None, v_cache=None, **kw):
    k_cache = paged.k_cache if k_cache is None else k_cache
    v_cache = paged.v_cache if v_cache is None else v_cache
    out = torch.full_like(q, float("nan"))  # poisoned
    o = paged_decode_attention(q, k_cache, v_cache, paged.block_table, paged.seq_lens, k_scale=k_scale, v_scale=v_scale,
                               layout=paged.layout, out=out, **kw)
    ref = decode_reference(q, k_cache, v_cache, paged.block_table, paged.seq_lens, k_scale=k_scale, v_scale=v_scale,
                           layout=paged.layout, scale=kw.get("scale"))
    assert not torch.isnan(o).any(), "unwritten or NaN outputs"
    tol = TOL[q.dtype]
    torch.testing.assert_close(o.double(), ref, atol=tol, rtol=tol)
    return o


CASES = [  # B, H, H_kv, S, D, block_size (None: contiguous view), layout, seq_lens
    (3, 4, 4, 70, 64, None, KVLayout.HND, [70, 1, 33]),  # MHA (G = 1), one block per sequence
    (2, 9, 3, 61, 64, 16, KVLayout.HND, [61, 40]),  # G = 3 (SmolLM2), partial last blocks
    (2, 8, 2, 61, 64, 8, KVLayout.NHD, [17, 61]),  # G = 4, P < tile: a tile spans blocks
    (2, 8, 1, 100, 64, 40, KVLayout.HND, [100, 49]),  # MQA, P = 40: tiles straddle blocks, not a power of two
    (1, 8, 2, 129, 128, 32, KVLayout.NHD, [129]),  # D = 128, odd length
]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "two-kernel"])
@pytest.mark.parametrize("layout", list(KVLayout), ids=lambda l: l.name)
def test_without_a_table(layout, fused):
    # block_table=None: sequence b is block b of a cache of more blocks than sequences, NaN past
    # each length; an empty sequence, a one-key one and one past the capacity (clamped); float and
    # int8 per token
    B, H, H_kv, S, D, lens = 4, 8, 2, 45, 64, [45, 0, 1, 80]
    q, k, v = make(B, H, H_kv, S, D, torch.float32, seed=31)
    kc, vc = (torch.full((B + 1, H_kv, S, D), float("nan"), device=DEVICE) for _ in range(2))
    for b, L in enumerate(lens):
        kc[b, :, :L], vc[b, :, :L] = k[b, :, :L], v[b, :, :L]
    if layout is KVLayout.NHD:
        kc, vc = kc.transpose(1, 2).contiguous(), vc.transpose(1, 2).contiguous()  # [N, S, H_kv, D]
    lens = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
    paged = ad.PagedKV(kc, vc, None, lens, layout)
    assert paged.capacity == S
    check(q, paged, num_splits=3, fused_merge=fused)
    kq, ks = quantize_kv(kc.nan_to_num(), torch.int8, "token", layout)
    vq, vs = quantize_kv(vc.nan_to_num(), torch.int8, "token", layout)
    check(q, paged, k_scale=ks, v_scale=vs, k_cache=kq, v_cache=vq, num_splits=2, fused_merge=fused)


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}H{}Hkv{}S{}D{}P{}{}".format(*c[:6], c[6].name))
def test_matches_reference(case, splits):
    B, H, H_kv, S, D, P, layout, lens = case
    dtype = torch.float16 if splits == 1 else torch.float32
    q, k, v = make(B, H, H_kv, S, D, dtype, seed=1000 * S + 10 * H + B + splits)
    lens_t = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
    paged = paged_from_contiguous(k, v, lens_t, block_size=P, layout=layout, shuffle=P is not None,
                                  generator=torch.Generator().manual_seed(splits))
    check(q, paged, num_splits=splits)


@pytest.mark.skipif(not GPU, reason="bf16 is not faithful under the interpreter")
@pytest.mark.parametrize("splits,fused", [(1, None), (4, True), (4, False), (None, None), (150, True)])
def test_bf16_on_gpu(splits, fused):
    q, k, v = make(4, 32, 8, 1000, 128, torch.bfloat16, seed=5)
    lens = torch.tensor([1000, 999, 513, 7], dtype=torch.int32, device=DEVICE)
    check(q, paged_from_contiguous(k, v, lens, block_size=16, shuffle=True), num_splits=splits, fused_merge=fused)


@pytest.mark.skipif(not GPU, reason="CUDA graphs need a GPU")
def test_fused_merge_in_a_cuda_graph():
    # captured after one eager call (compile, counters); every replay leaves the counters zero
    q, k, v = make(2, 32, 8, 3000, 128, torch.bfloat16, seed=50)
    lens = torch.tensor([3000, 1234], dtype=torch.int32, device=DEVICE)
    paged = paged_from_contiguous(k, v, lens, block_size=16, shuffle=True)
    out = torch.empty_like(q)
    fn = lambda: paged_decode_attention(q, **paged.kwargs(), out=out, num_splits=24, fused_merge=True)
    eager = fn().clone()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
        fn()  # twice in one graph: the second launch finds the counters the first one left at zero
    for _ in range(3):
        out.zero_()
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, eager) and torch.count_nonzero(_counters()) == 0


PDL_POLICIES = {"pdl-wait": SplitPolicy(pdl=True), "pdl-prefetch2": SplitPolicy(pdl=True, prefetch_tiles=2),
                "merge-pdl": SplitPolicy(), "no-pdl": SplitPolicy(merge_pdl=False)}


@pytest.mark.parametrize("policy", list(PDL_POLICIES))
@pytest.mark.parametrize("P", [None, 16], ids=["view", "P16"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "two-kernel"])
@pytest.mark.parametrize("splits", [5, 17], ids=["runs", "in-turn"])
def test_programmatic_dependent_launch(monkeypatch, fused, P, policy, splits):
    # POLICY.pdl: on sm_90+ both kernels wait for the previous grid before reading anything for
    # real (the split kernel may first prefetch its first tiles into L2); POLICY.merge_pdl (the
    # default): only the merge kernel launches early and waits. Either way back-to-back calls in
    # one graph (each launched while the last one runs) give the eager result; elsewhere and
    # under the interpreter the flags are ignored. Both walks: the prefetch takes the main loop's tiles
    monkeypatch.setattr(ad, "POLICY", PDL_POLICIES[policy])
    dtype = torch.bfloat16 if GPU else torch.float32
    q, k, v = make(2, 8, 2, 300, 64, dtype, seed=60)
    lens = torch.tensor([300, 123], dtype=torch.int32, device=DEVICE)
    paged = paged_from_contiguous(k, v, lens, block_size=P, shuffle=P is not None, generator=torch.Generator().manual_seed(60))
    eager = check(q, paged, num_splits=splits, fused_merge=fused).clone()
    if GPU:
        out = torch.empty_like(q)
        fn = lambda: paged_decode_attention(q, **paged.kwargs(), out=out, num_splits=splits, fused_merge=fused)
        fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(3):
                fn()
        out.zero_()
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, eager)


def test_splits_more_than_tiles_and_empty_sequence():
    # 9 splits of a 20-token sequence leave empty splits; a length-0 sequence outputs zeros
    q, k, v = make(2, 4, 2, 20, 32, torch.float32, seed=6)
    paged = paged_from_contiguous(k, v, torch.tensor([20, 0], dtype=torch.int32, device=DEVICE), block_size=16)
    o = check(q, paged, num_splits=9)
    assert o[1].abs().max() == 0


def test_default_splits_and_custom_scale():
    q, k, v = make(1, 4, 2, 300, 64, torch.float16, seed=7)
    paged = paged_from_contiguous(k, v, block_size=48, shuffle=True)  # 3 tiles per block
    assert default_num_splits(1, 2, 304, torch.device("cpu")) > 1  # short batch: split the length
    check(q, paged, scale=0.05)


def _record_launches(monkeypatch, sms: int) -> list:
    """The SM count stubbed to `sms` (the same split counts on CPU and GPU); returns the list each
    split-kernel launch appends (splits, tile config, INTERLEAVE) to."""
    monkeypatch.setattr(ad, "_sm_count", lambda device: sms)
    launched = []
    real = ad._launch_split
    monkeypatch.setattr(ad, "_launch_split",
                        lambda grid, cfg, *a, **kw: (launched.append((grid[2], cfg, kw["INTERLEAVE"])), real(grid, cfg, *a, **kw)))
    return launched


@pytest.mark.parametrize("P,config,splits", [(None, None, 8), (16, None, 8), (64, DecodeConfig(64, 4, 3), 6), (48, DecodeConfig(32, 4, 3), 8)],
                         ids=["contiguous", "paged", "paged-cut-at-tile", "paged-tile-spans-blocks"])
def test_decode_plan_is_what_the_launcher_runs(monkeypatch, P, config, splits):
    # decode_plan (what benchmarks and probes print) names the grid and tile the launcher takes.
    # 8 runs of 1088 keys cut at 16 are 144 keys each; where 64-key tiles lie inside 64-key
    # blocks, runs are cut at 64: 192 keys, 6 splits with keys (the policy counts no empty one)
    q, k, v = make(1, 8, 1, 1088, 64, torch.float32, seed=8)
    paged = paged_from_contiguous(k, v, block_size=P, shuffle=P is not None)
    launched = _record_launches(monkeypatch, 4)  # the CPU's stand-in count
    check(q, paged, config=config)
    capacity = paged.capacity
    plan = ad.decode_plan(1, 1, capacity, 64, 4, q.device, paged=P is not None, block_size=paged.block_size, config=config)
    assert [run[:2] for run in launched] == [plan] and plan[0] == splits


def test_decode_plan_in_turn_is_what_the_launcher_runs(monkeypatch):
    # past 16 splits the count is weighed in whole tiles taken in turn: 2200 keys are 138 16-key
    # tiles; 18 splits (the 2200 / 128 cap) put 8 on the busiest, 16 runs put 9 (32 SMs: one
    # program each), so 18, and that is the grid launched
    q, k, v = make(1, 8, 1, 2200, 64, torch.float32, seed=9)
    launched = _record_launches(monkeypatch, 32)
    config = DecodeConfig(16, 4, 3)
    check(q, paged_from_contiguous(k, v), config=config)
    plan = ad.decode_plan(1, 1, 2200, 64, 4, q.device, paged=False, config=config)
    assert plan[0] == 18 and [(run[0], run[2]) for run in launched] == [(18, True)]
    with pytest.raises(ValueError, match="block_size"):
        ad.decode_plan(1, 1, 2200, 64, 4, q.device, paged=True)


# ---- many splits: the fused merge (last program of a group) and the two-kernel merge ----------
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "two-kernel"])
def test_many_splits_ragged(fused):
    # the 17-token sequence leaves most splits empty, the empty sequence all; the fused merge of
    # G = 4 heads at D = 128 takes several steps (MERGE_TILE // (4·128) splits a step)
    splits = 2 * (ad.MERGE_TILE // (4 * 128)) + 3
    q, k, v = make(3, 4, 1, 300, 128, torch.float32, seed=20)
    lens = torch.tensor([300, 17, 0], dtype=torch.int32, device=DEVICE)
    paged = paged_from_contiguous(k, v, lens, block_size=16, shuffle=True, generator=torch.Generator().manual_seed(20))
    o = check(q, paged, num_splits=splits, fused_merge=fused)
    assert o[2].abs().max() == 0


def test_more_splits_than_the_old_cap_and_than_tokens():
    # 130 splits (the old policy stopped at 128) of 150 tokens take the tiles in turn, so only
    # the first few hold keys; the partials of the empty splits must weigh nothing
    q, k, v = make(1, 4, 1, 150, 32, torch.float32, seed=21)
    check(q, paged_from_contiguous(k, v), num_splits=130)


def _counters() -> torch.Tensor:
    return ad._COUNTERS[torch.empty(0, device=DEVICE).device]  # keyed as tensors name it ("cuda:0")


def test_fused_merge_leaves_its_counters_zero_and_reuses_them():
    # fresh random inputs each call, shapes that use different counter slots and split counts;
    # after every call the counters are zero again (no memset needed) and the buffer is the same
    calls = [  # B, H, H_kv, S, D, P, lens, splits
        (2, 4, 2, 120, 32, 16, [120, 5], 4),
        (2, 4, 4, 90, 32, None, [90, 33], 3),
        (3, 6, 3, 40, 32, 8, [40, 0, 17], 2),
    ]
    results, buf = [], None
    for i, (B, H, H_kv, S, D, P, lens, splits) in enumerate(calls):
        q, k, v = make(B, H, H_kv, S, D, torch.float32, seed=30 + i)
        lens_t = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
        paged = paged_from_contiguous(k, v, lens_t, block_size=P, shuffle=P is not None, generator=torch.Generator().manual_seed(i))
        results.append((q, paged, splits, check(q, paged, num_splits=splits, fused_merge=True)))
        buf = _counters() if buf is None else buf
        assert _counters() is buf and torch.count_nonzero(buf) == 0
    for q, paged, splits, first in results:  # the same calls again: bit-identical (the merge order is fixed)
        again = paged_decode_attention(q, **paged.kwargs(), num_splits=splits, fused_merge=True)
        assert torch.equal(again, first)
    assert torch.count_nonzero(_counters()) == 0


def test_counter_buffer_grows_and_keeps_the_old_one():
    old = ad.arrival_counters(torch.device(DEVICE), 1)
    bigger = ad.arrival_counters(torch.device(DEVICE), old.numel() + 1)
    assert bigger.numel() > old.numel() and torch.count_nonzero(bigger) == 0
    assert any(t is old for t in ad._RETIRED)  # a captured graph may still point at it: never freed
    assert ad.arrival_counters(torch.device(DEVICE), 5) is bigger


@pytest.mark.parametrize("splits", [5, 15, 17], ids=["runs", "runs-some-empty", "in-turn"])
@pytest.mark.parametrize("P,block_n", [(None, 16), (None, 64), (16, 32), (32, 32), (64, 32)], ids=["view-n16", "view-n64", "P16-n32", "P32-n32", "P64-n32"])
def test_tile_configs_and_walks(P, block_n, splits):
    # up to 16 splits each take one run of keys, more take the tiles in turn (both walks, with
    # splits left empty by the 77-key sequence: 15 runs of 16 keys, 5 of them with keys, or of
    # 32 where blocks hold whole 32-key tiles; a contiguous view's runs start inside 64-key
    # tiles). A tile reads one table entry per key where it spans blocks (P < tile) and one
    # entry where it lies inside a block (P a multiple of block_n)
    assert ad.POLICY.interleave(splits) == (splits > 16)
    q, k, v = make(2, 8, 2, 200, 64, torch.float32, seed=40 + block_n)
    lens = torch.tensor([200, 77], dtype=torch.int32, device=DEVICE)
    paged = paged_from_contiguous(k, v, lens, block_size=P, shuffle=P is not None, generator=torch.Generator().manual_seed(1))
    check(q, paged, num_splits=splits, config=DecodeConfig(block_n, 4, 3))


def test_split_policy():
    p = SplitPolicy(programs_per_sm=4, min_split=128, max_splits=512)
    # floor(528 / 8) = 66, cut short to 8192 / 128 = 64: 16 splits of 512 tokens (1 program an
    # SM), 32 of 256 (2) and 64 of 128 (4) all put 32 tiles of 16 on the busiest SM: the fewest
    assert p.splits(1, 8, 8192, 132) == 16
    assert p.splits(1, 8, 131072, 132) == 66  # not cut short: as many as fit
    # cut short by max_splits (528 -> 512 of 2048 tokens, 4 an SM): 132 of 7952 put one on each SM
    # (497 tiles; 512 splits: 512). What the rule says, not a measured choice (no run has 1 KV
    # head over 1M tokens): it counts an SM's programs as running one after another
    assert p.splits(1, 1, 1 << 20, 132) == 132
    # 9/3 heads at 8K (88 wanted, at most 64): 32 splits of two 128-key tiles, one program on 96
    # SMs; 43 of 192 keys are still 2 tiles, 64 of one tile put 2 programs on 60 SMs
    assert SplitPolicy().splits(1, 3, 8192, 132, block_n=128) == 32
    assert SplitPolicy().splits(1, 3, 8192, 132, block_n=16) == 43  # 512 16-key tiles: 12 a split against 16 (at 32 or 64)
    assert SplitPolicy().splits(1, 3, 4096, 132, block_n=128) == 32  # one tile each
    assert SplitPolicy().splits(1, 8, 8192, 132) == 32  # 512 16-key tiles in turn: 16 on the busiest of 33 splits, and of 32
    assert SplitPolicy().splits(1, 3, 33024, 132, block_n=128) == 86  # 258 tiles: 3 on the busiest of 88, and of 86
    assert SplitPolicy().splits(1, 3, 300, 132, block_n=128) == 3  # 3 tiles: no split without one
    assert p.splits(64, 8, 8192, 132) == 1  # floor(528 / 512): never more programs than fit evenly
    assert p.splits(256, 8, 8192, 132) == 1
    assert p.splits(1, 8, 100, 132) == 1  # shorter than one split
    assert p.splits(1, 8, 0, 132) == 1  # a table of no blocks: one (empty) split
    two = SplitPolicy()
    assert two.splits(16, 3, 8192, 132) == 5  # 240 programs, at most 2 an SM (6 would put 3 on 24 SMs)
    assert two.splits(4, 8, 8192, 132) == 8
    assert two.splits(64, 3, 8192, 132) == 2  # 1 split: 2 programs on 60 SMs, 1 on 72; 2 splits: at most 3 = 1.5 a split
    assert two.splits(64, 8, 8192, 132) == 1  # 512 pairs: 4 an SM either way, the fewer splits
    assert default_num_splits(1, 8, 8192, torch.device("cpu"), p) == p.splits(1, 8, 8192, 4)
    assert [SplitPolicy(fused_merge_up_to=8).fused(s) for s in (1, 2, 8, 9)] == [False, True, True, False]
    assert not SplitPolicy(fused_merge_up_to=0).fused(2)
    assert [SplitPolicy(interleave_above=16).interleave(s) for s in (1, 16, 17)] == [False, False, True]
    # where the merge kernel takes PDL, its own bound (default: never fused)
    assert [SplitPolicy(fused_merge_up_to=8, fused_merge_up_to_pdl=4).fused(s, merge_pdl=True) for s in (2, 4, 5)] == [True, True, False]
    assert not SplitPolicy().fused(2, merge_pdl=True) and SplitPolicy().fused(2)
    for bad in (dict(programs_per_sm=0), dict(prefetch_tiles=-1), dict(fused_merge_up_to=-1), dict(fused_merge_up_to_pdl=-1),
                dict(interleave_above=-1)):
        with pytest.raises(ValueError, match="SplitPolicy"):
            SplitPolicy(**bad)


def test_default_config_holds_a_fixed_number_of_bytes_per_tile():
    # TILE_BYTES of K per tile whatever D and the cache dtype; paged walks pipeline deeper
    for D, kv_bytes, block_n in ((128, 2, 64), (64, 2, 128), (128, 1, 128), (256, 2, 32), (64, 1, 128), (16, 4, 128)):
        c = ad.default_config(D, kv_bytes, paged=False)  # the last two: 256 keys would be 16 KB, at most 128
        assert c.block_n == block_n and c.num_stages == ad.STAGES["contiguous"]
    assert ad.default_config(128, 2, paged=True).num_stages == ad.STAGES["paged"]
    # more programs than run at once: 128-key tiles on a contiguous walk, 3 stages on a paged one
    assert ad.default_config(128, 2, paged=False, waves=True) == DecodeConfig(128, 4, 3)
    assert ad.default_config(128, 2, paged=True, waves=True) == DecodeConfig(64, 4, 3)
    for paged in (False, True):
        ad.default_config(128, 2, paged).check()


@pytest.mark.parametrize("splits", [3, 20], ids=["fused-by-policy", "second-kernel-by-policy"])
def test_policy_merge_path(monkeypatch, splits):
    # the policy fuses the merge up to fused_merge_up_to splits and launches the merge kernel past it
    # (on a GPU whose merge kernel takes PDL, up to fused_merge_up_to_pdl)
    monkeypatch.setattr(ad, "POLICY", SplitPolicy(fused_merge_up_to=8, fused_merge_up_to_pdl=8))
    launches = []

    class CountedMerge:  # the merge kernel, counting its launches
        def __getitem__(self, grid):
            launches.append(grid)
            return merge_kernel[grid]

    merge_kernel = ad._decode_merge
    monkeypatch.setattr(ad, "_decode_merge", CountedMerge())
    q, k, v = make(2, 8, 2, 330, 64, torch.float32, seed=50 + splits)
    lens = torch.tensor([330, 200], dtype=torch.int32, device=DEVICE)
    paged = paged_from_contiguous(k, v, lens, block_size=16, shuffle=True, generator=torch.Generator().manual_seed(splits))
    check(q, paged, num_splits=splits)
    assert len(launches) == (0 if splits <= 8 else 1)


def test_view_of_a_preallocated_cache_needs_no_copy():
    # ContiguousKVCache returns slices of a [B, H_kv, S_max, D] buffer: strided, not contiguous
    q, k, v = make(2, 6, 2, 64, 64, torch.float16, seed=8)
    k_view, v_view = k[:, :, :45], v[:, :, :45]
    paged = paged_from_contiguous(k_view, v_view)
    assert paged.k_cache.data_ptr() == k.data_ptr() and paged.block_size == 45
    check(q, paged, num_splits=2)


# ---- quantized caches ---------------------------------------------------------------------------
QUANT = [
    (torch.float8_e4m3fn, "tensor", KVLayout.HND),
    (torch.float8_e4m3fn, "head", KVLayout.NHD),
    (torch.int8, "head", KVLayout.HND),
    (torch.int8, "token", KVLayout.NHD),
    (torch.int8, "token", KVLayout.HND),
]


@pytest.mark.parametrize("qdtype,per,layout", QUANT, ids=lambda x: getattr(x, "name", str(x)))
def test_quantized_cache_vs_dequantized_reference(qdtype, per, layout):
    q, k, v = make(2, 8, 2, 50, 64, torch.float16, seed=9)
    lens = torch.tensor([50, 29], dtype=torch.int32, device=DEVICE)
    paged = paged_from_contiguous(k, v, lens, block_size=16, layout=layout, shuffle=True)
    kq, ks = quantize_kv(paged.k_cache, qdtype, per, layout)
    vq, vs = quantize_kv(paged.v_cache, qdtype, per, layout)
    o = check(q, paged, k_scale=ks, v_scale=vs, k_cache=kq, v_cache=vq, num_splits=2)
    # and the quantization itself is close to the float cache (SQNR in dB)
    exact = decode_reference(q, paged.k_cache, paged.v_cache, paged.block_table, lens, layout=layout)
    sqnr = 10 * torch.log10(exact.pow(2).sum() / (o.double() - exact).pow(2).sum())
    assert sqnr > (20 if qdtype == torch.float8_e4m3fn else 30), f"SQNR {sqnr:.1f} dB"


def test_scalar_scale_and_dequantize():
    _, k, _ = make(1, 2, 2, 16, 32, torch.float32, seed=10)
    kq, s = quantize_kv(k, torch.int8, "tensor")
    torch.testing.assert_close(dequantize_kv(kq, float(s)), dequantize_kv(kq, s))
    assert (dequantize_kv(kq, s) - k.double()).abs().max() <= s.item() / 2 + 1e-6  # round to nearest


# ---- launcher errors ----------------------------------------------------------------------------
def test_launcher_errors_name_the_argument(monkeypatch):
    q, k, v = make(2, 4, 2, 32, 64, torch.float16, seed=11)
    p = paged_from_contiguous(k, v, block_size=16)
    kq, ks = quantize_kv(p.k_cache, torch.float8_e4m3fn, "head")
    base = dict(q=q, k_cache=p.k_cache, v_cache=p.v_cache, block_table=p.block_table, seq_lens=p.seq_lens)
    bad = [
        (dict(q=q.double()), "q has dtype torch.float64"),
        (dict(q=q[:, None]), "q must be [B, H, D]"),
        (dict(k_cache=p.k_cache.float(), v_cache=p.v_cache.float()), "k_cache has dtype torch.float32"),
        (dict(v_cache=p.v_cache[:, :, :8]), "v_cache must match k_cache"),
        (dict(q=make(2, 3, 3, 32, 64, torch.float16, 0)[0]), "k_cache has 2 KV heads (HND layout); q's 3 heads"),
        (dict(block_table=p.block_table.long()), "block_table must be int32"),
        (dict(block_table=p.block_table.tolist()), "block_table must be a torch.Tensor (or None for a contiguous cache)"),
        (dict(block_table=None, k_cache=p.k_cache[:1], v_cache=p.v_cache[:1]), "k_cache holds 1 blocks; without a block table"),
        (dict(seq_lens=p.seq_lens[:1]), "seq_lens must be int32 [B=2]"),
        (dict(k_cache=kq, v_cache=kq), "k_scale is required for a torch.float8_e4m3fn cache"),
        (dict(k_cache=kq, v_cache=kq, k_scale=ks, v_scale=torch.ones(3, device=DEVICE)), "v_scale must be a scalar, [2] (per head)"),
        (dict(k_scale=1.0), "k_scale is only for fp8/int8 caches"),
        (dict(k_cache=p.k_cache[..., ::2], v_cache=p.v_cache[..., ::2]), "k_cache must be contiguous along D"),
        (dict(num_splits=0), "num_splits must be a positive int"),
        (dict(layout="HND"), "layout must be a KVLayout"),
        (dict(out=torch.empty(2, 4, 64, device=DEVICE)), "out must be"),
        (dict(fused_merge="yes"), "fused_merge must be True, False or None"),
        (dict(config=(64, 4, 3)), "config must be a DecodeConfig"),
        (dict(config=DecodeConfig(48, 4, 3)), "config needs block_n in 16..256"),
    ]
    for change, msg in bad:
        args = base | change
        with pytest.raises(ValueError, match="paged_decode_attention: .*" + re.escape(msg)):
            paged_decode_attention(**args)
    if not GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            paged_decode_attention(**base)


def test_paged_from_contiguous_layouts():
    _, k, v = make(2, 3, 3, 37, 16, torch.float32, seed=12)
    for layout in KVLayout:
        p = paged_from_contiguous(k, v, block_size=16, layout=layout, shuffle=True)
        assert p.k_cache.shape == ((6, 3, 16, 16) if layout is KVLayout.HND else (6, 16, 3, 16))
        kf = p.k_cache if layout is KVLayout.HND else p.k_cache.transpose(1, 2)
        j = torch.arange(37)
        back = kf[p.block_table[1, j // 16].long(), :, j % 16]  # [37, H_kv, D]
        assert torch.equal(back.transpose(0, 1), k[1])
    with pytest.raises(ValueError, match="zero-copy view"):
        paged_from_contiguous(k, v, layout=KVLayout.NHD)


def test_cost_formulas():
    assert flops(32, 128, 1000) == 4 * 32 * 128 * 1000
    assert bytes_moved(2, 32, 8, 128, 1000, kv_dtype_bytes=1, scale_bytes_per_token=4) == 2 * 1000 * 8 * (128 + 4) + 2 * 2 * 32 * 128 * 2
