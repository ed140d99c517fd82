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
    # (at D = 128) that program still takes two; none past MAX_TILES_PER_SM tiles an SM
    p = hopper.plan(1, 8, 8192, 128, 132)  # 64 tiles a pair: C = 1, 2 and 4 all put 4 on the busiest
    assert (p.chunk_tiles, p.stages, p.n_chunks, p.programs) == (2, 2, 32, 132)
    assert str(hopper.plan(1, 8, 2048, 128, 132)) == "persistent c1s2x128"  # 128 items: one each
    assert hopper.plan(1, 3, 8192, 64, 132).chunk_tiles == 2  # D = 64: one item of 2 over two of 1
    assert str(hopper.plan(1, 3, 16384, 64, 132)) == "persistent c3s3x129"  # 3 tiles on the busiest, as C = 1
    assert hopper.plan(1, 8, 32768, 128, 132) is None and hopper.plan(4, 8, 8192, 128, 132) is None  # 15.5 tiles an SM
    forced = hopper.plan(4, 8, 8192, 128, 132, force=True)
    assert forced.chunk_tiles == hopper.MAX_CHUNK_TILES and forced.n_chunks * forced.chunk_tiles * hopper.BLOCK_N >= 8192
    for B, H_kv, cap, D in ((1, 1, 1, 64), (3, 3, 1000, 64), (2, 8, 129, 128), (1, 2, 40000, 128), (64, 8, 131072, 128)):
        p = hopper.plan(B, H_kv, cap, D, 132, force=True)
        assert p.n_chunks * p.chunk_tiles * hopper.BLOCK_N >= cap > (p.n_chunks - 1) * p.chunk_tiles * hopper.BLOCK_N
        assert 1 <= p.programs <= min(132, B * H_kv * p.n_chunks)
    with pytest.raises(ValueError, match="2 <= stages <= chunk_tiles \\+ 1"):
        hopper.PersistentPlan(1, 1, 4, 4)  # no load ahead: the first item's query rows would never be asked for
    with pytest.raises(ValueError, match="2 <= stages <= chunk_tiles \\+ 1"):
        hopper.PersistentPlan(1, 3, 4, 4)


def test_launcher_says_why_it_cannot_take_the_persistent_kernel():
    q = torch.randn(1, 4, 64, device=DEVICE)
    k = torch.randn(1, 2, 32, 64, device=DEVICE)
    paged = paged_from_contiguous(k, k.clone())
    with pytest.raises(ValueError, match="persistent.*(sm_90|bfloat16)"):
        paged_decode_attention(q, **paged.kwargs(), persistent=True)
    with pytest.raises(ValueError, match="persistent is True: the persistent kernel takes its own plan"):
        paged_decode_attention(q, **paged.kwargs(), persistent=True, num_splits=2)
    with pytest.raises(ValueError, match="persistent must be True, False or None"):
        paged_decode_attention(q, **paged.kwargs(), persistent="yes")


def _cache(B, H, H_kv, S, D, lens, dtype, seed, n_blocks=None):
    """q and a one-block-per-sequence HND cache of n_blocks blocks (default B), sequence b in a
    random block, NaN in every row past its length (and in the blocks no sequence uses)."""
    g = torch.Generator().manual_seed(seed)
    n_blocks = n_blocks or B
    q = torch.randn(B, H, D, generator=g).to("cuda", dtype)
    k = torch.full((n_blocks, H_kv, S, D), float("nan"), dtype=dtype, device="cuda")
    v = torch.full_like(k, float("nan"))
    table = torch.randperm(n_blocks, generator=g)[:B].to("cuda", torch.int32)[:, None]
    for b, L in enumerate(lens):
        L = min(L, S)
        k[table[b, 0], :, :L] = torch.randn(H_kv, L, D, generator=g).to("cuda", dtype)
        v[table[b, 0], :, :L] = torch.randn(H_kv, L, D, generator=g).to("cuda", dtype)
    return q, k, v, table, torch.tensor(lens, dtype=torch.int32, device="cuda")


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
@pytest.mark.parametrize("C,stages,programs", [(1, 2, 5), (2, 2, 3), (3, 3, 2), (4, 3, 1), (2, 3, 7), (4, 3, 64), (1, 2, 200)])
def test_every_item_size_and_grid(C, stages, programs):
    # items of 1-4 tiles, 1-2 tiles in flight, programs that walk several items (across pairs and
    # sequences of different lengths), and more programs than items
    B, H, H_kv, S, D = 3, 12, 3, 1500, 128
    q, k, v, table, lens = _cache(B, H, H_kv, S, D, [1500, 611, 130], torch.bfloat16, seed=10 * C + stages)
    tiles = ad._cdiv(S, hopper.BLOCK_N)
    _check(q, k, v, table, lens, plan=hopper.PersistentPlan(C, stages, ad._cdiv(tiles, C), programs), scale=0.3)


def _captured(fn):
    """fn() captured into a CUDA graph (after one eager call) and replayed once."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()


@needs_sm90
def test_dispatch_takes_it_in_graphs_for_small_batches_only(monkeypatch):
    calls = []
    real = hopper.decode_persistent
    monkeypatch.setattr(hopper, "decode_persistent", lambda *a: calls.append(a[-1]) or real(*a))
    q, k, v, table, lens = _cache(1, 32, 8, 8192, 128, [8000], torch.bfloat16, seed=3)
    out = torch.empty_like(q)
    _captured(lambda: paged_decode_attention(q, k, v, table, lens, out=out))
    assert [str(p) for p in calls] == [str(hopper.plan(1, 8, 8192, 128, ad._sm_count(q.device)))]  # the eager call: the split kernel
    torch.testing.assert_close(out, paged_decode_attention(q, k, v, table, lens, persistent=False), atol=2e-2, rtol=2e-2)
    _captured(lambda: paged_decode_attention(q, k, v, table, lens, num_splits=4))  # the split kernel's knobs: the split kernel
    paged = paged_from_contiguous(k, v, lens, block_size=16)
    _captured(lambda: paged_decode_attention(q, **paged.kwargs()))  # a paged walk
    q4, k4, v4, table4, lens4 = _cache(4, 32, 8, 8192, 128, [8192] * 4, torch.bfloat16, seed=4)
    _captured(lambda: paged_decode_attention(q4, k4, v4, table4, lens4))  # 15.5 tiles an SM: the split kernel is faster
    assert len(calls) == 1
    with pytest.raises(ValueError, match="persistent is True, but the persistent kernel needs the HND layout"):
        paged_decode_attention(q, **paged.kwargs(), persistent=True)


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
