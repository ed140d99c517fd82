"""kernels.attention_decode_hopper: the persistent Hopper kernel against the float64 reference.

Gluon does not run under TRITON_INTERPRET, so the kernel's tests need an sm_90 GPU; the dispatch
rule and the launcher's errors run everywhere.
"""
from __future__ import annotations

import pytest
import torch

import kernels.attention_decode as ad
import kernels.attention_decode_hopper as hopper
from kernels.attention_decode import decode_reference, paged_decode_attention, paged_from_contiguous
from kernel_env import DEVICE, GPU

SM90 = GPU and torch.cuda.get_device_capability() == (9, 0)
needs_sm90 = pytest.mark.skipif(not SM90, reason="Gluon's Hopper kernel needs an sm_90 GPU (it does not run under the interpreter)")
TOL = {torch.bfloat16: 2.5e-2, torch.float16: 3e-3}


def test_plan_follows_the_work_an_sm_gets():
    # 132 SMs (H100/H200): the fewest tiles on the busiest program, ties to longer items while
    # (at D = 128) that program still takes two; at D = 64 two programs an SM where the chosen
    # items give each 2-4 tiles; none past MAX_TILES_PER_SM tiles an SM
    p = hopper.plan(1, 8, 8192, 128, 132)  # 64 tiles a pair: C = 1, 2 and 4 all put 4 on the busiest
    assert (p.chunk_tiles, p.stages, p.n_chunks, p.programs) == (2, 2, 32, 132)
    assert str(hopper.plan(1, 8, 2048, 128, 132)) == "persistent c1s2x128"  # 128 items: one each
    # D = 64: one item of 2 over two of 1 (at two an SM, 192 items of one tile: one each)
    assert str(hopper.plan(1, 3, 8192, 64, 132)) == "persistent c2s2x96"
    assert str(hopper.plan(1, 3, 16384, 64, 132)) == "persistent c2s2x192"  # two an SM: 192 items of 2 tiles
    # one item a program on 70-100 % of the 264 two-an-SM slots, the longest such items: 192 of 2 tiles,
    # not 144 of 3 (C = 4 leaves 96 items: fewer than SMs); 216 of 3; none at B = 12 (288 of 1, 144 of
    # 2), so the longest items that outnumber the SMs
    assert str(hopper.plan(16, 3, 1024, 64, 132)) == "persistent c2s2x192"
    assert str(hopper.plan(24, 3, 1024, 64, 132)) == "persistent c3s2x216"
    assert str(hopper.plan(12, 3, 1024, 64, 132)) == "persistent c2s2x144"
    assert str(hopper.plan(1, 3, 65536, 64, 132)) == "persistent c4s3x132"  # two an SM would take 8 tiles each
    assert str(hopper.plan(16, 8, 1024, 128, 132)) == "persistent c4s3x132"  # D = 128: one an SM
    assert hopper.sized_plan(2, 1, 3, 16384, 132, per_sm=2) == hopper.PersistentPlan(2, 2, 64, 192)
    assert hopper.plan(1, 8, 32768, 128, 132) is None and hopper.plan(4, 8, 8192, 128, 132) is None  # 15.5 tiles an SM
    assert hopper.plan(1, 8, 8192, 128, 132, box=16) is None  # blocks of 16 keys: the split kernel walks them faster
    assert hopper.plan(1, 8, 8192, 128, 132, box=16, force=True) == p
    forced = hopper.plan(4, 8, 8192, 128, 132, force=True)
    assert forced.chunk_tiles == hopper.MAX_CHUNK_TILES and forced.n_chunks * forced.chunk_tiles * hopper.BLOCK_N >= 8192
    for B, H_kv, cap, D in ((1, 1, 1, 64), (3, 3, 1000, 64), (2, 8, 129, 128), (1, 2, 40000, 128), (64, 8, 131072, 128),
                            (8, 3, 4096, 64)):
        p = hopper.plan(B, H_kv, cap, D, 132, force=True)
        assert p.n_chunks * p.chunk_tiles * hopper.BLOCK_N >= cap > (p.n_chunks - 1) * p.chunk_tiles * hopper.BLOCK_N
        assert 1 <= p.programs <= min((2 if D == hopper.TWO_PER_SM_D else 1) * 132, B * H_kv * p.n_chunks)
    with pytest.raises(ValueError, match="2 <= stages <= chunk_tiles \\+ 1"):
        hopper.PersistentPlan(1, 1, 4, 4)  # no load ahead: the kernel would wait on an item's query rows before asking for them
    with pytest.raises(ValueError, match="2 <= stages <= chunk_tiles \\+ 1"):
        hopper.PersistentPlan(1, 3, 4, 4)


def test_fast_divisor_divides_like_integer_division():
    # the kernel's (x * mul) >> 32 >> shr on uint32, here in Python ints: every divisor up to 3000
    # and random ones up to 2**31 - 1, at the edges of the dividend's range and at random inside it
    g = torch.Generator().manual_seed(0)
    divisors = list(range(1, 3001)) + torch.randint(3001, 2**31 - 1, (300,), generator=g).tolist() + [2**31 - 1, 2**30, 2**30 + 1]
    for d in divisors:
        n, mul, shr = hopper.fast_divisor(d)
        assert n == d and -(2**31) <= mul < 2**31 and 0 <= shr < 32
        xs = [0, 1, d - 1, d, d + 1, 2 * d - 1, 2**31 - 1, 2**31 - 1 - d] + torch.randint(0, 2**31 - 1, (50,), generator=g).tolist()
        for x in (x for x in xs if 0 <= x < 2**31):
            q = x if d == 1 else ((x * (mul % 2**32)) >> 32) >> shr
            assert (q, x - q * d) == divmod(x, d), (x, d)
    for bad in (0, -3, 2**31):
        with pytest.raises(ValueError, match="1 <= d < 2\\*\\*31"):
            hopper.fast_divisor(bad)


def test_unsupported_names_what_a_call_lacks():
    # each refusal on its own (CPU tensors pass every check but the last, the device's)
    bf = lambda *s: torch.randn(*s, dtype=torch.bfloat16)
    q, k = bf(2, 8, 64), bf(2, 2, 32, 64)
    table = torch.arange(2, dtype=torch.int32)[:, None]
    why = lambda **kw: hopper.unsupported(**{**dict(q=q, k_cache=k, v_cache=k, block_table=table, layout=ad.KVLayout.HND,
                                                     quantized=False), **kw})
    assert "sm_90" in why()
    assert "HND" in why(layout=ad.KVLayout.NHD)
    for P in (8, 24, 96, 200):  # blocks a tile's boxes cannot tile: smaller than 16 keys, or not a power of two nor whole tiles
        c = bf(4, 2, P, 64)
        assert f"2 blocks of {P} keys" in why(k_cache=c, v_cache=c, block_table=table.repeat(1, 2))
    for P in (16, 32, 64, 128, 384):  # accepted (CPU tensors then fail the device check), and one block of any length
        c = bf(4, 2, P, 64)
        assert "sm_90" in why(k_cache=c, v_cache=c, block_table=table.repeat(1, 2))
    c = bf(2, 2, 200, 64)
    assert "sm_90" in why(k_cache=c, v_cache=c)
    nhd = bf(2, 32, 2, 64).transpose(1, 2)  # an NHD cache passed as HND: a block's rows are not dense
    assert "rows dense" in why(k_cache=nhd, v_cache=nhd) and "one layout" in why(v_cache=bf(2, 2, 64, 64)[:, :, :32])
    assert "sm_90" in why(k_cache=bf(2, 2, 64, 64)[:, :, :32], v_cache=bf(2, 2, 64, 64)[:, :, :32])  # a slice of a longer buffer
    assert "bfloat16/float16" in why(q=q.float()) and "without scales" in why(quantized=True)
    assert "at most 8 query heads" in why(q=bf(2, 18, 64)) and "D in [64, 128]" in why(q=bf(2, 8, 32), k_cache=bf(2, 2, 32, 32))
    assert "at least one key slot" in why(k_cache=bf(2, 2, 0, 64))
    with pytest.raises(ValueError, match="covers 128 keys a sequence, fewer than the block table's 200"):
        hopper.decode_persistent(q, bf(2, 2, 200, 64), bf(2, 2, 200, 64), table, torch.tensor([5, 5], dtype=torch.int32), 0.1,
                                 torch.empty_like(q), hopper.PersistentPlan(1, 2, 1, 4))


def test_launcher_says_why_it_cannot_take_the_persistent_kernel():
    q = torch.randn(1, 4, 64, device=DEVICE, dtype=torch.bfloat16 if GPU else torch.float32)
    k = torch.randn(1, 2, 32, 64, device=DEVICE, dtype=q.dtype)
    paged = paged_from_contiguous(k, k.clone(), block_size=8)  # blocks of 8 keys: refused on every device
    with pytest.raises(ValueError, match="persistent is True, but the persistent kernel needs the HND layout, and blocks of"):
        paged_decode_attention(q, **paged.kwargs(), persistent=True)
    with pytest.raises(ValueError, match="persistent is True: the persistent kernel takes its own plan"):
        paged_decode_attention(q, **paged.kwargs(), persistent=True, num_splits=2)
    with pytest.raises(ValueError, match="persistent must be True, False or None"):
        paged_decode_attention(q, **paged.kwargs(), persistent="yes")


def _paged(B, H, H_kv, S, D, P, lens, dtype, seed, spare=3):
    """q and an HND cache of blocks of P keys scattered at random among B·ceil(S/P) + spare blocks:
    NaN in every row past a sequence's length and in the blocks no sequence uses, and block table
    entries past a sequence's last block that point nowhere (2**30: a load through one faults)."""
    g = torch.Generator().manual_seed(seed)
    cols = ad._cdiv(S, P)
    n_blocks = B * cols + spare
    q = torch.randn(B, H, D, generator=g).to("cuda", dtype)
    k = torch.full((n_blocks, H_kv, P, D), float("nan"), dtype=dtype, device="cuda")
    v = torch.full_like(k, float("nan"))
    table = torch.randperm(n_blocks, generator=g)[: B * cols].view(B, cols).to(torch.int32)
    for b, L in enumerate(lens):
        L = min(L, cols * P)  # the capacity: a longer length is clamped to it
        for j in range(ad._cdiv(L, P)):
            n = min(P, L - j * P)
            k[table[b, j], :, :n] = torch.randn(H_kv, n, D, generator=g).to("cuda", dtype)
            v[table[b, j], :, :n] = torch.randn(H_kv, n, D, generator=g).to("cuda", dtype)
        table[b, ad._cdiv(L, P):] = 2**30
    return q, k, v, table.cuda(), torch.tensor(lens, dtype=torch.int32, device="cuda")


def _cache(B, H, H_kv, S, D, lens, dtype, seed, n_blocks=None):
    """q and a one-block-per-sequence HND cache (`_paged` with blocks of S keys) of n_blocks blocks
    (default B)."""
    return _paged(B, H, H_kv, S, D, S, lens, dtype, seed, spare=(n_blocks or B) - B)


def _check(q, k, v, table, lens, plan=None, scale=None):
    out = torch.full_like(q, float("nan"))  # an element left unwritten shows
    if plan is None:
        paged_decode_attention(q, k, v, table, lens, scale=scale, out=out, persistent=True)
    else:
        hopper.decode_persistent(q, k, v, table, lens, scale or q.shape[-1] ** -0.5, out, plan)
    ref = decode_reference(q, k, v, table, lens, scale=scale)
    assert not torch.isnan(out).any(), "unwritten or NaN outputs"
    torch.testing.assert_close(out.double(), ref, atol=TOL[q.dtype], rtol=TOL[q.dtype])
    return out


CASES = [  # B, H, H_kv, S, D, seq_lens (S: the block's keys, the capacity)
    (1, 32, 8, 1000, 128, [1000]),  # G = 4, a partial last tile
    (3, 9, 3, 700, 64, [700, 1, 0]),  # G = 3 (SmolLM2), a one-key and an empty sequence
    (2, 8, 1, 300, 128, [300, 5000]),  # MQA, G = 8; a length past the capacity is clamped to it
    (2, 4, 4, 257, 64, [129, 256]),  # MHA (G = 1): query rows of the next head fill the box
]


@needs_sm90
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}H{}Hkv{}S{}D{}".format(*c[:5]))
def test_matches_reference(case, dtype):
    B, H, H_kv, S, D, lens = case
    _check(*_cache(B, H, H_kv, S, D, lens, dtype, seed=S + B, n_blocks=B + 2))


@needs_sm90
@pytest.mark.parametrize("D,dtype", [(128, torch.bfloat16), (64, torch.float16)], ids=["D128-bf16", "D64-fp16"])
@pytest.mark.parametrize("C,stages,programs", [(1, 2, 5), (2, 2, 3), (3, 3, 2), (4, 3, 1), (2, 3, 7), (4, 3, 64), (1, 2, 200)])
def test_every_item_size_and_grid(C, stages, programs, D, dtype):
    # items of 1-4 tiles, 1-2 tiles in flight, programs that walk several items (across pairs and
    # sequences of different lengths), and more programs than items
    B, H, H_kv, S = 3, 12, 3, 1500
    q, k, v, table, lens = _cache(B, H, H_kv, S, D, [1500, 611, 130], dtype, seed=10 * C + stages)
    tiles = ad._cdiv(S, hopper.BLOCK_N)
    _check(q, k, v, table, lens, plan=hopper.PersistentPlan(C, stages, ad._cdiv(tiles, C), programs), scale=0.3)


@needs_sm90
@pytest.mark.parametrize("C,stages,programs", [(1, 2, 5), (2, 2, 132), (3, 3, 2), (4, 3, 64)])
@pytest.mark.parametrize("D,dtype", [(128, torch.bfloat16), (64, torch.float16)], ids=["D128-bf16", "D64-fp16"])
def test_without_a_table(C, stages, programs, D, dtype):
    # block_table=None: sequence b is block b of the cache. Its first tiles are loaded before its
    # length is read, as live up to the capacity: NaN rows past a length, an empty sequence, a
    # one-key one, a length past the capacity, and more blocks than sequences
    B, H, H_kv, S, lens = 4, 12, 3, 700, [700, 0, 1, 5000]
    g = torch.Generator().manual_seed(C + stages + D)
    q = torch.randn(B, H, D, generator=g).to("cuda", dtype)
    k, v = (torch.full((B + 1, H_kv, S, D), float("nan"), dtype=dtype, device="cuda") for _ in range(2))
    for b, L in enumerate(lens):
        L = min(L, S)
        k[b, :, :L], v[b, :, :L] = (torch.randn(H_kv, L, D, generator=g).to("cuda", dtype) for _ in range(2))
    lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    identity = torch.arange(B, dtype=torch.int32, device="cuda")[:, None]
    plan = hopper.PersistentPlan(C, stages, ad._cdiv(ad._cdiv(S, hopper.BLOCK_N), C), programs)
    out = hopper.decode_persistent(q, k, v, None, lens, 0.3, torch.full_like(q, float("nan")), plan)
    ref = decode_reference(q, k, v, identity, lens, scale=0.3)
    assert not torch.isnan(out).any(), "unwritten or NaN outputs"
    torch.testing.assert_close(out.double(), ref, atol=TOL[dtype], rtol=TOL[dtype])


@needs_sm90
def test_two_programs_an_sm():
    # the launcher's own plan where it puts two programs on an SM (D = 64): ragged and empty sequences
    B, H, H_kv, S = 16, 9, 3, 1024
    sms = ad._sm_count(torch.device("cuda"))
    assert hopper.plan(B, H_kv, S, 64, sms).programs > sms
    _check(*_cache(B, H, H_kv, S, 64, [1024, 1, 0, 700, 129, 1000, 640, 3] * 2, torch.float16, seed=21))


@needs_sm90
def test_tensors_smaller_than_a_box():
    # 2 query rows against an 8-row box, 40 cache rows against a 128-row one: TMA fills the rest with zeros
    q, k, v, table, lens = _cache(1, 2, 1, 40, 64, [37], torch.bfloat16, seed=8)
    _check(q, k, v, table, lens)


PAGED = [  # B, H, H_kv, S (the table's capacity), D, P, seq_lens, dtype
    (2, 32, 8, 1000, 128, 16, [1000, 333], torch.bfloat16),  # 8 boxes a tile; a partial last block and tile
    (3, 9, 3, 700, 64, 32, [700, 1, 0], torch.float16),  # a one-key and an empty sequence
    (2, 8, 1, 300, 128, 64, [300, 5000], torch.bfloat16),  # a length past the capacity is clamped to it
    (2, 12, 4, 600, 64, 128, [513, 128], torch.float16),  # one box a tile
    (2, 16, 2, 1100, 128, 256, [1100, 700], torch.bfloat16),  # two tiles a block; capacity 1280
]


@needs_sm90
@pytest.mark.parametrize("case", PAGED, ids=lambda c: "B{}H{}Hkv{}S{}D{}P{}".format(*c[:6]))
def test_paged_matches_reference(case):
    B, H, H_kv, S, D, P, lens, dtype = case
    _check(*_paged(B, H, H_kv, S, D, P, lens, dtype, seed=S + P))


@needs_sm90
@pytest.mark.parametrize("C,stages,programs", [(1, 2, 5), (2, 3, 3), (3, 3, 2), (4, 3, 64), (1, 2, 200)])
def test_paged_every_item_size_and_grid(C, stages, programs):
    # the block table entries are read a tile ahead: across items, pairs and sequences (1-tile
    # items at 2 stages read the one after the next item's)
    B, H, H_kv, S, P = 3, 12, 3, 1500, 16
    q, k, v, table, lens = _paged(B, H, H_kv, S, 128, P, [1500, 611, 130], torch.bfloat16, seed=10 * C + stages)
    tiles = ad._cdiv(table.shape[1] * P, hopper.BLOCK_N)
    _check(q, k, v, table, lens, plan=hopper.PersistentPlan(C, stages, ad._cdiv(tiles, C), programs), scale=0.3)


@needs_sm90
def test_caches_of_other_strides():
    # what paged_from_contiguous makes at B = 1: shuffled blocks laid out head-major (strides (P·D, N·P·D, D, 1)),
    # and a contiguous view of the first S keys of a longer buffer (NaN past them)
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 9, 64, generator=g).to("cuda", torch.bfloat16)
    k, v = (torch.randn(2, 3, 300, 64, generator=g).to("cuda", torch.bfloat16) for _ in range(2))
    lens = torch.tensor([300, 77], dtype=torch.int32, device="cuda")
    paged = paged_from_contiguous(k[:1], v[:1], lens[:1], block_size=16, shuffle=True, generator=g)  # at B = 1 a view
    assert not paged.k_cache.is_contiguous()
    _check(q[:1], paged.k_cache, paged.v_cache, paged.block_table, paged.seq_lens)
    kb, vb = (torch.full((2, 3, 512, 64), float("nan"), dtype=torch.bfloat16, device="cuda") for _ in range(2))
    kb[:, :, :300], vb[:, :, :300] = k, v
    view = paged_from_contiguous(kb[:, :, :300], vb[:, :, :300], lens)
    _check(q, view.k_cache, view.v_cache, view.block_table, view.seq_lens)


def _captured(fn, out=None):
    """fn() captured into a CUDA graph (after one eager call) and replayed once, `out` poisoned first."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    if out is not None:
        out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()


@needs_sm90
def test_dispatch_takes_it_in_graphs_for_small_batches_only(monkeypatch):
    calls = []
    real = hopper._run
    monkeypatch.setattr(hopper, "_run", lambda *a, **kw: calls.append((a[-1], kw.get("warm_only", False))) or real(*a, **kw))
    q, k, v, table, lens = _cache(1, 32, 8, 8192, 128, [8000], torch.bfloat16, seed=3)
    out = torch.empty_like(q)
    _captured(lambda: paged_decode_attention(q, k, v, table, lens, out=out), out)
    rule = hopper.plan(1, 8, 8192, 128, ad._sm_count(q.device))
    assert calls == [(rule, True), (rule, False)]  # eager: loads the kernels, runs the split kernel; captured: runs it
    paged = paged_from_contiguous(k, v, lens, block_size=256, shuffle=True)
    out.fill_(float("nan"))
    _captured(lambda: paged_decode_attention(q, **paged.kwargs(), out=out), out)  # blocks of whole tiles: taken
    assert calls[2:] == [(rule, True), (rule, False)]
    torch.testing.assert_close(out, paged_decode_attention(q, k, v, table, lens, persistent=False), atol=2e-2, rtol=2e-2)
    del calls[2:]
    torch.testing.assert_close(out, paged_decode_attention(q, k, v, table, lens, persistent=False), atol=2e-2, rtol=2e-2)
    _captured(lambda: paged_decode_attention(q, k, v, table, lens, num_splits=4))  # the split kernel's knobs: the split kernel
    for P in (8, 16):  # blocks of 8 keys (unsupported) and of 16 (one box a block: the split kernel is faster)
        paged = paged_from_contiguous(k, v, lens, block_size=P)
        _captured(lambda: paged_decode_attention(q, **paged.kwargs()))
    q4, k4, v4, table4, lens4 = _cache(4, 32, 8, 8192, 128, [8192] * 4, torch.bfloat16, seed=4)
    _captured(lambda: paged_decode_attention(q4, k4, v4, table4, lens4))  # 15.5 tiles an SM: the split kernel is faster
    assert len(calls) == 2  # none of these took it, nor the persistent=False call above


@needs_sm90
def test_in_a_cuda_graph():
    q, k, v, table, lens = _cache(2, 9, 3, 3000, 64, [3000, 1234], torch.bfloat16, seed=7)
    out = torch.empty_like(q)
    fn = lambda: paged_decode_attention(q, k, v, table, lens, out=out, persistent=True)
    eager = fn().clone()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
        fn()
    lens[1] = 1000  # seq_lens are read on the device: a replay sees the new length
    out.zero_()
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out.double(), decode_reference(q, k, v, table, lens), atol=2.5e-2, rtol=2.5e-2)
    assert torch.equal(out[0], eager[0])
