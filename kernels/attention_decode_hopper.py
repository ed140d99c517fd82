"""Decode attention at small batches on Hopper (sm_90): a persistent Gluon kernel that
kernels/attention_decode.py's launcher dispatches to, beside the same float64 reference
(`kernels.attention_decode.decode_reference`).

    o = paged_decode_attention(q, k_cache, v_cache, block_table, seq_lens)   # in a CUDA graph capture: takes it where `plan` does

Why a second kernel. At batch 1 an 8K cache is 8-32 MB: a few µs of DRAM time, so the call's
fixed costs decide how close it gets to a copy of the same bytes. The split kernel leaves most SMs
idle in its last µs (each program's pipeline drains alone) and pays Triton's software-pipeliner
restart at each split. This kernel (experiments/probes/decode_gluon.py, sessions 15-18) is written
in Gluon, Triton's explicit-layout language, so that its loads run ahead across work items:

  grid: one program an SM (two at D = 64 where `plan` says), persistent; program p takes items p,
        p + programs, ...
  items: C tiles of BLOCK_N = 128 keys of one (sequence, KV head) (`plan` picks C from the work an SM)
  loads: TMA (cp.async.bulk.tensor) into a ring of STAGES K/V tile buffers, STAGES - 1 tiles ahead,
        across item boundaries; each item's query rows with its first tile, into one of two buffers.
        A box is a tile where a block holds whole tiles (or a sequence is one block), else a block
        (8 boxes of 16 keys); paged, the block table entries are read a tile before the loads that
        use them. The launcher leaves blocks smaller than a tile to the split kernel (see `plan`)
  math: swapped, sᵀ = K qᵀ and Oᵀ += Vᵀ Pᵀ: the 128 keys are wgmma's M and the G <= 8 query rows of
        a group its N of 8, 1/8 of the tensor-core work of q Kᵀ padded to M = 64. The softmax's max
        then runs across the 4 warps (a shared-memory reduction a tile) and P goes through shared
        memory as the B operand of the second product.
  merge: each item leaves a partial (m, l, accᵀ) in the split kernel's layout, and the split
        kernel's merge kernel combines them under programmatic dependent launch (the items of a
        (sequence, KV head) are its splits).

128-key tiles halve the loop's fixed cost a key against 64 (~1.1 µs a tile at one program an SM
is the math's price, not the stream's). Against the split kernel (the decode suite's stream rows,
contiguous bf16 cache; results/baselines/README.md, "Decode, session 19"): B = 1, 32/8 heads 1K
6.51 -> 5.85 µs on an H200, 8K 13.46 -> 13.28 (0.78 -> 0.79 of the same-size copy); 9/3 heads 8K
6.85 -> 6.40, B = 16 1K 9.44 -> 8.68; on an H100 up to 11 % at small caches. The launcher takes it
only in calls captured into a CUDA graph: its launch costs more host time than the split kernel's.
Reading the block table and seq_lens before the first load costs ~0.5 µs against the probe, which
took one L for every sequence (13.62 against 13.07 µs at 32/8, 8K, experiments/probes/decode_dispatch.py).
A contiguous cache needs no table (block_table=None: sequence b is block b), and then the first
loads are issued before seq_lens arrives, as live up to the capacity (session 22, H200: 0.06-0.31
µs faster than the same plan reading a table of one column at 7 of 8 shapes, 0.06 slower at 32/8
16K; B = 1 32/8 8K 13.27 against 13.58, 9/3 32K 11.17 against 11.47). An item's (sequence, KV head)
and chunk come from divisions by H_kv and n_chunks, runtime ints: `fast_divisor`'s multiply-high
and shift instead of ~25 instructions each put the first loads 0.09 µs earlier (session 23,
experiments/probes/decode_timeline_persistent.py; same-process A/B, H200, batch 1: 0.8-3.1 %
faster at 8 shapes, 32/8 8K 13.10 against 13.20 µs, 9/3 8K 5.69 / 5.88, 32K 11.10 / 11.32).

Two warpgroups (8 warps at D = 128, each taking 64 of the 128 rows of both products: half the
wgmma instructions a thread, 113 registers against 178) were correct and no faster at any item
size (session 22, H200: B = 1 32/8 8K c2s2 13.22 against 13.28 µs; at 1K-32K and B = 2-16 the
best 8-warp item within -0.5 to +3 % of the best 4-warp one; commit 2e45683): the latency of a
tile's math is not what keeps batch 1 from the copy.

Paged blocks of whole tiles cost nothing against the contiguous view (session 20, blocks of 128
and 256 keys at B = 1: 1-18 % faster than the split kernel's walk on an H200 and an H100; 8K, 32/8
heads: 13.68 µs against 14.54, the contiguous view 13.43).

What it takes (`unsupported` names what a call lacks): an sm_90 GPU, a bf16/fp16 cache of q's
dtype (no fp8/int8 scales), HND layout with blocks of 16, 32, 64 or a multiple of 128 keys, or
one block per sequence (a block table of one column, or none: the contiguous cache, any length),
each block's [P, D] rows dense (any block and head strides: a slice of a longer buffer, or
head-major blocks), G = H / H_kv <= 8, D = 64 or 128, contiguous q. Gluon does not run under
TRITON_INTERPRET, so its tests need the GPU (tests/kernels/test_attention_decode_hopper.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

import kernels.attention_decode as ad

BLOCK_N = 128  # keys a tile
G_BOX = 8  # query rows a group pads to: wgmma's N
# Keys in the smallest block. A box must span whole 8-row periods of the 128-byte swizzle (8 would);
# at 8, 16 boxes a tile, ptxas spills at 4-tile items.
MIN_BLOCK = 16
# The dispatch rule, from experiments/probes/decode_dispatch.py (session 19: stream timing, the
# split kernel beside this one at every item size, two H200 runs and one H100; results/baselines/
# README.md, "Decode, session 19"). Up to ~12 tiles of 128 keys an SM this kernel, at the best
# item size, is as fast as the split kernel or faster (H200, B = 1, 32/8 heads, 16K: 22.03-22.66
# µs against 22.46-24.00; 9/3 heads, 64K: 18.79-19.07 against 19.43-19.86); at ~16 the split
# kernel is as fast or up to 3 % faster (32/8 heads, 32K; B = 4, 8K).
MAX_TILES_PER_SM = 12
MAX_CHUNK_TILES = 4
# The item size (`plan`): the fewest tiles on the busiest program first. Among sizes that tie, the
# largest whose busiest program still takes MIN_ITEMS[D] items: at D = 128 one item of 4 tiles
# a program ran 9 % slower than two of 2 (H200, B = 1, 32/8 heads, 8K: 14.38-14.82 against
# 13.22-13.62 µs) and one of 2 2-3 % slower than two of 1 (4K); at D = 64, whose tiles are half
# the bytes, fewer, longer items won every tie (9/3 heads, 8K: one item of 2 tiles 6.07-6.18 µs,
# two of 1 7.18-7.28).
MIN_ITEMS = {64: 1, 128: 2}
# Two programs an SM at D = 64, where two rings of 2 stages fit (2 · 68 KB; at D = 128 one ring
# of 2 takes 134 KB): while one program does a tile's math, the other's loads run. `plan` takes
# the largest item size that leaves more items than SMs (unless TWO_PER_SM_FILL, below, finds
# shorter items that fill the two-an-SM slots better), and two programs an SM where that gives
# each program TWO_PER_SM_TILES tiles (session 21, experiments/probes/decode_dispatch.py, stream;
# results/baselines/README.md, "Decode, session 21"). H200, 9/3 heads, against one program an SM
# at the session-19 rule: B = 1 16K 8.00 against 8.35 µs, 32K 11.74 / 12.35, B = 2 8K 7.62 / 8.04,
# B = 16 2K 10.89 / 11.62; as fast or faster at all 10 shapes timed. The H100 gains less and loses
# 1-6 % at 3 of 10 (B = 8 4K 14.09 against 13.32). Not with one tile a program (B = 1 8K: 6.46
# against one program's 2-tile items, 6.07), nor near 12 tiles an SM, where one program of 3
# stages streams as well (64K: 19.97 against 18.91; B = 64 1K 18.72 / 17.79).
TWO_PER_SM_D = 64
TWO_PER_SM_TILES = range(2, 5)
# Among item sizes that give every program one item at two an SM, the longest that still fills at
# least TWO_PER_SM_FILL of those slots comes first (session 24, experiments/probes/decode_dispatch.py,
# stream; results/baselines/README.md, "Decode, session 24"): where session 21's rule (the longest
# items that outnumber the SMs) left 144 items, 12 SMs running two programs and 120 one, shorter
# items on 192-216 programs were faster. H200 / H100, 9/3 heads: B = 16 1K c2s2x192 6.95 against
# c3s2x144's 7.36 µs / 8.46 against 8.73; B = 6 4K c3s2x198 8.85 / 9.17 and 11.16 / 11.32; B = 1
# 24K c3s2x192 8.90 / 9.15 and 10.67 / 11.06; B = 24 1K c3s2x216 8.81 / 9.05 and 11.25 / 11.11.
# Items past two an SM (some programs taking two) were slower (B = 16 2K, 288 items of 3 on 264
# programs: 12.00 against c4s2x192's 10.16 on the H200), and 1-tile items lose to one program an SM (B = 1 8K).
TWO_PER_SM_FILL = 0.7
# Blocks smaller than a tile (one TMA box a block, 8 a tile at 16 keys) are not dispatched: the
# split kernel's walk was faster at every shape but one (H200, session 20, blocks of 16,
# experiments/probes/decode_dispatch.py --block 16: B = 1, 32/8 heads 8K 18.2 against 16.5 µs;
# 9/3 heads 32K 20.1 against 13.4; B = 64, 9/3, 1K 33.7 against 20.9; only B = 1, 32/8, 1K
# 7.44 against 7.72). Not for the CTA barrier Triton puts before every TMA copy (16 a tile): a
# cp.async gather of the rows instead (session 21, commit 937aaff) tied the boxes at D = 128 and,
# faster at D = 64, still lost to the split walk. Blocks of whole tiles run as fast as the
# contiguous view (128 and 256 keys, B = 1, 32/8 heads 8K: 13.50 / 13.89 against the split
# kernel's 14.78 / 15.06).
DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


@dataclass(frozen=True)
class PersistentPlan:
    """chunk_tiles (C): tiles of BLOCK_N keys an item; stages: K/V tiles in the ring (stages - 1
    in flight ahead, at least one: the loads of an item start before it is waited on); n_chunks:
    items a (sequence, KV head), the merge's splits; programs: the grid (one an SM, or two at D = 64:
    TWO_PER_SM_TILES). Shared memory: stages · 2·BLOCK_N·D·2 bytes a program (3 stages at D = 128:
    192 KB of an SM's 227; 2 at D = 64: 64 KB)."""

    chunk_tiles: int
    stages: int
    n_chunks: int
    programs: int

    def __post_init__(self):
        if not (self.chunk_tiles >= 1 and 2 <= self.stages <= self.chunk_tiles + 1 and self.n_chunks >= 1 and self.programs >= 1):
            raise ValueError(f"PersistentPlan: needs chunk_tiles >= 1, 2 <= stages <= chunk_tiles + 1 (the loads run at most one "
                             f"item ahead), n_chunks >= 1 and programs >= 1; got {self!r}")

    def __str__(self) -> str:
        return f"persistent c{self.chunk_tiles}s{self.stages}x{self.programs}"


@functools.lru_cache(maxsize=4096)  # a decode loop asks the same thing every step
def plan(B: int, H_kv: int, capacity: int, D: int, sms: int, force: bool = False, box: int = BLOCK_N) -> PersistentPlan | None:
    """The plan for B·H_kv (sequence, KV head) pairs of `capacity` keys on `sms` SMs, or None where
    the split kernel is as fast: more than MAX_TILES_PER_SM tiles an SM, or boxes (`box_keys`)
    smaller than a tile (force: a plan anyway). At D = TWO_PER_SM_D, two programs an SM where
    the largest item size C that fills TWO_PER_SM_FILL to all of the two-an-SM slots with one item
    each, or else the largest that leaves more items than SMs, gives each TWO_PER_SM_TILES tiles;
    else one program an SM, C minimizing the tiles of the busiest program, ceil(items / sms) · C,
    ties broken by MIN_ITEMS. From the block table's capacity, not seq_lens, as the split count
    is: no device-to-host sync."""
    tiles = ad._cdiv(max(capacity, 1), BLOCK_N)
    pairs = B * H_kv
    if (pairs * tiles / sms > MAX_TILES_PER_SM or box < BLOCK_N) and not force:
        return None
    items = {C: pairs * ad._cdiv(tiles, C) for C in range(1, min(MAX_CHUNK_TILES, tiles) + 1)}
    if D == TWO_PER_SM_D:
        slots = 2 * sms
        full = [C for C in items if C in TWO_PER_SM_TILES and TWO_PER_SM_FILL * slots <= items[C] <= slots]  # one item a program
        C = max(full or [C for C in items if items[C] > sms], default=0)  # else the longest items that outnumber the SMs
        if C and ad._cdiv(items[C], slots) * C in TWO_PER_SM_TILES:
            return sized_plan(C, B, H_kv, capacity, sms, per_sm=2)
    busiest = {C: ad._cdiv(n, sms) for C, n in items.items()}  # items on the busiest program
    least = min(busiest[C] * C for C in items)
    tied = [C for C in items if busiest[C] * C == least]
    return sized_plan(max([C for C in tied if busiest[C] >= MIN_ITEMS[D]] or tied), B, H_kv, capacity, sms)


def sized_plan(C: int, B: int, H_kv: int, capacity: int, sms: int, per_sm: int = 1) -> PersistentPlan:
    """The plan at item size C and per_sm programs an SM (what `plan` settles on, and what a sweep
    of item sizes times): 2 stages up to C = 2 or with two programs an SM, 3 otherwise; one
    program per item up to per_sm an SM."""
    n_chunks = ad._cdiv(ad._cdiv(max(capacity, 1), BLOCK_N), C)
    return PersistentPlan(C, 2 if C <= 2 or per_sm > 1 else 3, n_chunks, min(B * H_kv * n_chunks, per_sm * sms))


def unsupported(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor | None,
                layout: ad.KVLayout, quantized: bool) -> str | None:
    """Why this (validated) call cannot take the kernel, or None where it can. Cheapest checks
    first: every decode call on a GPU asks."""
    if k_cache.numel() == 0:
        return f"needs a cache of at least one key slot; got shape {tuple(k_cache.shape)}"
    P = k_cache.shape[2]
    box = box_keys(block_table, P)
    if layout is not ad.KVLayout.HND or BLOCK_N % box or box < MIN_BLOCK:
        return (f"needs the HND layout, and blocks of a multiple of {BLOCK_N} keys, of a power of two from {MIN_BLOCK} to "
                f"{BLOCK_N // 2}, or one block per sequence (a block table of one column, or none); got {layout.name} with "
                f"{ad.table_columns(block_table)} blocks of {P} keys per sequence")
    if q.dtype not in DTYPES or quantized:
        return f"needs a bfloat16/float16 cache of q's dtype, without scales; got q {q.dtype}, cache {k_cache.dtype}"
    B, H, D = q.shape
    H_kv = k_cache.shape[1]
    if H // H_kv > G_BOX or D not in MIN_ITEMS:
        return f"needs at most {G_BOX} query heads per KV head and D in {sorted(MIN_ITEMS)}; got {H}/{H_kv} heads, D = {D}"
    s = k_cache.stride()
    if v_cache.stride() != s or s[2] != D or s[0] % D or s[1] % D:
        return (f"needs k_cache and v_cache of one layout, each block's [P, D] rows dense and every block and head "
                f"starting on a row (strides (a·{D}, b·{D}, {D}, 1)); got {s} and {v_cache.stride()}")
    if _span_rows(k_cache) >= 2**31:
        return f"needs a cache spanning fewer than 2**31 rows of D (TMA coordinates are int32); got {_span_rows(k_cache)}"
    if not q.is_contiguous():
        return f"needs q contiguous, got strides {tuple(q.stride())}"
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if x.data_ptr() % 16:
            return f"needs {name} 16-byte aligned (TMA), got address {x.data_ptr():#x}"
    if not _sm90(q.device):
        return f"needs an sm_90 GPU (Hopper's wgmma and TMA); q is on {q.device}"
    return None


def _span_rows(cache: torch.Tensor) -> int:
    """Rows of D elements from a cache's first element to its last (`unsupported` checked that every
    block and head starts on a row): the [rows, D] view its TMA descriptors address."""
    return sum((n - 1) * st for n, st in zip(cache.shape, cache.stride())) // cache.shape[-1] + 1


@functools.lru_cache(maxsize=None)
def _sm90(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) == (9, 0)


@functools.lru_cache(maxsize=None)
def _smem_layout(rows: int, D: int, dtype: torch.dtype):
    """The 128-byte-swizzled shared layout of a [rows, D] TMA box (built once: it is asked every call)."""
    return gl.NVMMASharedLayout.get_default_for([rows, D], DTYPES[dtype])


# ---------------------------------------------------------------------------------------------
# Pieces shared with experiments/probes/decode_gluon.py
# ---------------------------------------------------------------------------------------------
@gluon.jit
def _lanes(num_warps: gl.constexpr):
    """0 .. 32·num_warps - 1, one a thread."""
    return gl.arange(0, 32 * num_warps, layout=gl.BlockedLayout([1], [32], [num_warps], [0]))


@gluon.jit
def _launch_dependents(num_warps: gl.constexpr):
    """griddepcontrol.launch_dependents (Gluon has no builtin for it): the merge kernel, launched
    with programmatic dependent launch, may be made resident now; it waits for this grid's
    completion before reading a partial."""
    gl.inline_asm_elementwise("griddepcontrol.launch_dependents; mov.u32 $0, $1;", "=r,r", [_lanes(num_warps)],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _barriers(n: gl.constexpr):
    """n mbarriers in shared memory, each completing a phase on one arrival (and the TMA bytes it
    was told to expect)."""
    bars = gl.allocate_shared_memory(gl.int64, [n, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(n):
        mbarrier.init(bars.index(i), count=1)
    return bars


@gluon.constexpr_function
def _wgmma_layout(n):
    """One warpgroup's wgmma accumulator layout, n columns."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, n, 16])


@gluon.jit
def _fresh_state_t(BLOCK_N: gl.constexpr, D: gl.constexpr, ROWS: gl.constexpr, s_layout: gl.constexpr):
    """An item's swapped (m, l, accᵀ) before its first tile: l kept per key row (summed once per item)."""
    m_i = gl.full([ROWS], float("-inf"), gl.float32, gl.SliceLayout(0, s_layout))
    l_i = gl.zeros([BLOCK_N, ROWS], gl.float32, s_layout)
    acc = gl.zeros([D, ROWS], gl.float32, s_layout)
    return m_i, l_i, acc


@gluon.jit
def _zero_rows_from(t, n_live, num_warps: gl.constexpr):
    """Rows >= n_live of a tile in shared memory set to 0 (the caller fences before a wgmma reads it),
    32 rows at a time: 8 registers a thread at D = 64, 16 at 128, where the whole tile took 64 more."""
    BLOCK_N: gl.constexpr = t.type.shape[0]
    D: gl.constexpr = t.type.shape[1]
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [256 // D, D // 8], [num_warps, 1], [1, 0])  # 16 bytes a thread
    for r0 in gl.static_range(0, BLOCK_N, 32):
        part = t.slice(r0, 32)
        x = part.load(layout)
        rows = r0 + gl.arange(0, 32, layout=gl.SliceLayout(1, layout))
        part.store(gl.where((rows < n_live)[:, None], x, gl.zeros_like(x)))


@gluon.jit
def _attend_tile_t(q_s, k_t, v_t, p_s, key0, L, qk_scale, m_i, l_i, acc, s_layout: gl.constexpr, num_warps: gl.constexpr):
    """One K/V tile (keys key0 ..., in shared memory) folded into the swapped online softmax of the
    query rows in q_s: scores sᵀ [BLOCK_N, ROWS], output accᵀ [D, ROWS], l per key row so only the
    max crosses warps. Keys >= L are masked; where the tile reaches past L its V rows there are
    zeroed first (a cache holds anything past a sequence's end, and NaN · 0 is NaN in Pᵀ·V)."""
    BLOCK_N: gl.constexpr = k_t.type.shape[0]
    ROWS: gl.constexpr = q_s.type.shape[0]
    sc = warpgroup_mma(k_t, q_s.permute((1, 0)), gl.zeros([BLOCK_N, ROWS], gl.float32, s_layout), use_acc=False)
    sc = sc * qk_scale  # log2 domain
    keys = key0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, s_layout))
    sc = gl.where((keys < L)[:, None], sc, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(sc, 0))
    p = gl.exp2(sc - m_new[None, :])
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha[None, :] + p
    acc = acc * alpha[None, :]  # the scores' layout and the output's are one (N = ROWS both)
    if key0 + BLOCK_N > L:
        _zero_rows_from(v_t, L - key0, num_warps)
    p_s.store(gl.permute(p.to(p_s.dtype), (1, 0)))
    fence_async_shared()
    gl.thread_barrier()  # every warp's P rows (and zeroed V rows) are in shared memory before the warpgroup reads them
    acc = warpgroup_mma(v_t.permute((1, 0)), p_s.permute((1, 0)), acc)
    return m_new, l_i, acc


@gluon.jit
def _store_partial_t(PO, PM, PL, pair, G, split, n_splits, ml_stride, m_i, l_i, acc, s_layout: gl.constexpr):
    """Columns < G of a (sequence, KV head)'s swapped state, as the split kernel's partial `split`
    (the layout `kernels.attention_decode._decode_merge` reads)."""
    D: gl.constexpr = acc.type.shape[0]
    ROWS: gl.constexpr = acc.type.shape[1]
    dims = gl.arange(0, D, layout=gl.SliceLayout(1, s_layout))
    cols = gl.arange(0, ROWS, layout=gl.SliceLayout(0, s_layout))
    head_row = (pair * G + cols).to(gl.int64)
    gl.store(PO + ((head_row * n_splits + split) * D)[None, :] + dims[:, None], acc, mask=(cols < G)[None, :])
    hr = head_row * ml_stride + split
    gl.store(PM + hr, m_i, mask=cols < G)
    gl.store(PL + hr, gl.sum(l_i, 0), mask=cols < G)


# ---------------------------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------------------------
def fast_divisor(d: int) -> tuple[int, int, int]:
    """(d, mul, shr) such that x // d == umulhi(x, mul) >> shr for every 0 <= x < 2**31 (d > 1;
    Granlund and Montgomery's round-up method, as CUTLASS's FastDivmod), for `_divmod`. mul is
    passed as the int32 of its bits (Triton would type an int >= 2**31 as int64)."""
    if d < 1 or d >= 2**31:
        raise ValueError(f"fast_divisor: needs 1 <= d < 2**31, got {d}")
    if d == 1:
        return 1, 0, 0
    p = 31 + (d - 1).bit_length()  # 31 + ceil(log2 d): mul < 2**32
    mul = (2**p + d - 1) // d
    return d, mul - 2**32 if mul >= 2**31 else mul, p - 32


@gluon.jit
def _divmod(x, d):
    """(x // d, x % d) for 0 <= x < 2**31 and d = fast_divisor(divisor): a multiply-high and a
    shift where a division by a runtime int is ~25 instructions on two dependent MUFU ops; the
    prologue's took ~0.2 µs between a program's start and its first loads (H200,
    experiments/probes/decode_timeline_persistent.py)."""
    n, mul, shr = d
    if n == 1:
        q = x
    else:
        q = (gl.umulhi(x.to(gl.uint32), gl.to_tensor(mul).to(gl.uint32, bitcast=True)) >> gl.to_tensor(shr).to(gl.uint32)).to(gl.int32)
    return q, x - q * n


@gluon.jit
def _locate(item, BT, LENS, bt_stride, kv_heads, block_rows, head_rows, capacity, chunks, total, ONE_BLOCK: gl.constexpr,
            NO_TABLE: gl.constexpr):
    """(keys, base, pair, chunk) of item = pair · n_chunks + chunk, pair = b · H_kv + KV head (items
    past the last one as the last; kv_heads and chunks: `fast_divisor` of H_kv and n_chunks). keys:
    sequence b's length clamped to the capacity, 0 past the last item. base: with ONE_BLOCK (one
    block a sequence) the cache row of its key 0, its block read here, an item before its loads
    (NO_TABLE: sequence b is block b, nothing read); else (its block table row's offset, its KV
    head's row in a block), for `_tile_rows`, which reads the table a tile before each tile's loads."""
    pair, chunk = _divmod(gl.minimum(item, total - 1), chunks)
    b, h = _divmod(pair, kv_heads)
    L = gl.minimum(gl.load(LENS + b), capacity) * (item < total).to(gl.int32)
    if ONE_BLOCK:
        if NO_TABLE:
            blk = b
        else:  # one table read an item: a read a tile cost 2-6 % at D = 64 (results/baselines/README.md, "Decode, session 20")
            blk = gl.load(BT + b * bt_stride)
        return L, blk * block_rows + h * head_rows, pair, chunk
    else:
        return L, (b * bt_stride, h * head_rows), pair, chunk


@gluon.jit
def _tile_rows(BT, base, key0, block_rows, block, capacity, PAGE: gl.constexpr, PAGES: gl.constexpr, ONE_BLOCK: gl.constexpr):
    """The cache rows (of its [rows, D] view) where the PAGES boxes of PAGE keys of the tile at
    key0 start, every thread holding all of them. With ONE_BLOCK, base (`_locate`) + keys; else
    block n starts at row n·block_rows and the KV head's rows head_row further, n from block table
    entries read a tile before the loads that use them (`_issue`), so that no table read stands
    between a stage's release and its next load. Entries past the table's width read as block 0;
    past the sequence, `_issue` loads row 0 instead (a valid address; those rows are masked)."""
    pages = gl.arange(0, PAGES, layout=gl.BlockedLayout([PAGES], [32], [gl.num_warps()], [0]))
    keys = key0 + pages * PAGE
    if ONE_BLOCK:
        return base + keys
    else:
        bt_row, head_row = base
        ids = gl.load(BT + bt_row + keys // block, mask=keys < capacity, other=0)
        return ids * block_rows + head_row + keys % block


@gluon.jit
def _issue(item, pair, chunk, tt, n, q_slot, L, rows, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready, q_ready,
           total, G, TILES: gl.constexpr, STAGES: gl.constexpr):
    """TMA loads of tile tt of `item` (chunk `chunk` of `pair`: `_locate`), its boxes at `rows`
    (`_tile_rows`), into stage n % STAGES (and, with its first tile, its query rows into q slot q_slot). A tile past L or past the last item
    arrives with no bytes, so the barrier phases stay in step with the tiles consumed; a live
    tile's boxes past L load block 0's rows, so that every live tile brings the same bytes."""
    PAGE: gl.constexpr = k_desc.block_type.shape[0]
    BLOCK_N: gl.constexpr = k_bufs.type.shape[1]
    PAGES: gl.constexpr = BLOCK_N // PAGE
    s = n % STAGES
    key0 = (chunk * TILES + tt) * BLOCK_N
    live = key0 < L  # L is 0 past the last item
    bar = ready.index(s)
    mbarrier.expect(bar, PAGES * (k_desc.block_type.nbytes + v_desc.block_type.nbytes), pred=live)
    mbarrier.arrive(bar, pred=key0 >= L)
    pages = gl.arange(0, PAGES, layout=rows.type.layout)
    rows = gl.where(key0 + pages * PAGE < L, rows, 0)
    for j in gl.static_range(PAGES):
        row = gl.sum(gl.where(pages == j, rows, 0), 0)  # in-thread: every thread holds every row
        tma.async_copy_global_to_shared(k_desc, [row, 0], bar, k_bufs.index(s).slice(j * PAGE, PAGE), pred=live)
        tma.async_copy_global_to_shared(v_desc, [row, 0], bar, v_bufs.index(s).slice(j * PAGE, PAGE), pred=live)
    if tt == 0:
        qb = q_ready.index(q_slot)
        q_live = item < total
        mbarrier.expect(qb, q_desc.block_type.nbytes, pred=q_live)
        mbarrier.arrive(qb, pred=item >= total)
        tma.async_copy_global_to_shared(q_desc, [pair * G, 0], qb, q_bufs.index(q_slot), pred=q_live)


@gluon.jit
def _decode_persistent(q_desc, k_desc, v_desc, BT, LENS, PO, PM, PL, bt_stride, H_kv, hk_mul, hk_shr, block_rows, head_rows, block,
                       capacity, n_chunks, nc_mul, nc_shr, total, G, ml_stride, qk_scale, BLOCK_N: gl.constexpr, TILES: gl.constexpr,
                       STAGES: gl.constexpr, ONE_BLOCK: gl.constexpr, NO_TABLE: gl.constexpr, num_warps: gl.constexpr):
    """Items pid, pid + programs, ...: item = pair · n_chunks + chunk, pair = b · H_kv + KV head, chunk
    c covering keys [c·TILES·BLOCK_N, (c + 1)·TILES·BLOCK_N) of sequence b, whose partial is split c
    (hk_mul, hk_shr and nc_mul, nc_shr: `fast_divisor` of H_kv and n_chunks).
    A tile is BLOCK_N // PAGE boxes of PAGE keys (the descriptors' box, `box_keys`), each within
    one block of `block` keys or, with ONE_BLOCK (a sequence in one block), running past it."""
    PAGE: gl.constexpr = k_desc.block_type.shape[0]
    PAGES: gl.constexpr = BLOCK_N // PAGE
    D: gl.constexpr = k_desc.block_type.shape[1]
    ROWS: gl.constexpr = q_desc.block_type.shape[0]
    gl.static_assert(TILES >= STAGES - 1, "the loads run at most one item ahead")
    gl.static_assert(num_warps == 4, "one warpgroup")
    gl.static_assert(PAGES * PAGE == BLOCK_N, "boxes tile a tile")
    pid = gl.program_id(0)
    programs = gl.num_programs(0)
    _launch_dependents(num_warps)

    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BLOCK_N, D], k_desc.layout)
    v_bufs = gl.allocate_shared_memory(v_desc.dtype, [STAGES, BLOCK_N, D], v_desc.layout)
    q_bufs = gl.allocate_shared_memory(q_desc.dtype, [2, ROWS, D], q_desc.layout)
    p_s = gl.allocate_shared_memory(q_desc.dtype, [ROWS, BLOCK_N], gl.NVMMASharedLayout.get_default_for([ROWS, BLOCK_N], q_desc.dtype))
    ready = _barriers(STAGES)  # a K/V stage's tiles have landed
    q_ready = _barriers(2)  # an item's query rows have landed
    s_layout: gl.constexpr = _wgmma_layout(ROWS)

    # seq_lens are read one item before that item's loads are issued, block table entries one
    # tile before: a table read on the way to a load would stall the stream for an L2 round trip
    kv_heads = (H_kv, hk_mul, hk_shr)
    chunks = (n_chunks, nc_mul, nc_shr)
    cur = pid
    cur_L, cur_at, cur_pair, cur_chunk = _locate(cur, BT, LENS, bt_stride, kv_heads, block_rows, head_rows, capacity, chunks,
                                                 total, ONE_BLOCK, NO_TABLE)
    nxt_L, nxt_at, nxt_pair, nxt_chunk = _locate(cur + programs, BT, LENS, bt_stride, kv_heads, block_rows, head_rows, capacity,
                                                 chunks, total, ONE_BLOCK, NO_TABLE)
    key_c = cur_chunk * TILES * BLOCK_N  # the current item's first key
    key_n = nxt_chunk * TILES * BLOCK_N
    if NO_TABLE:  # the first loads need no read: live up to the capacity (rows past L are masked), issued while L loads
        first_L = capacity * (cur < total).to(gl.int32)
    else:
        first_L = cur_L
    for u in gl.static_range(STAGES - 1):  # the prologue: the first item's first tiles
        rows = _tile_rows(BT, cur_at, key_c + u * BLOCK_N, block_rows, block, capacity, PAGE, PAGES, ONE_BLOCK)
        _issue(cur, cur_pair, cur_chunk, u, u, 0, first_L, rows, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready, q_ready,
               total, G, TILES, STAGES)
    if STAGES - 1 < TILES:  # the next tile to issue
        pend = _tile_rows(BT, cur_at, key_c + (STAGES - 1) * BLOCK_N, block_rows, block, capacity, PAGE, PAGES, ONE_BLOCK)
    else:
        pend = _tile_rows(BT, nxt_at, key_n, block_rows, block, capacity, PAGE, PAGES, ONE_BLOCK)
    n = 0  # tiles consumed
    seq = 0  # items done
    while cur < total:
        fut_L, fut_at, fut_pair, fut_chunk = _locate(cur + 2 * programs, BT, LENS, bt_stride, kv_heads, block_rows, head_rows,
                                                     capacity, chunks, total, ONE_BLOCK, NO_TABLE)
        key_f = fut_chunk * TILES * BLOCK_N
        slot = seq % 2
        m_i, l_i, acc = _fresh_state_t(BLOCK_N, D, ROWS, s_layout)
        mbarrier.wait(q_ready.index(slot), (seq // 2) & 1)
        for t in gl.static_range(TILES):
            gl.thread_barrier()  # every warp is done with the stage the next load overwrites (tile n - 1's)
            fence_async_shared()
            # the tile loaded now is t + STAGES - 1 counted from this item's first (spelt out: a
            # constexpr, so each branch is chosen at compile time), the one loaded next t + STAGES
            if t + STAGES - 1 < TILES:
                _issue(cur, cur_pair, cur_chunk, t + STAGES - 1, n + STAGES - 1, slot, cur_L, pend, k_desc, v_desc, q_desc, k_bufs,
                       v_bufs, q_bufs, ready, q_ready, total, G, TILES, STAGES)
            else:
                _issue(cur + programs, nxt_pair, nxt_chunk, t + STAGES - 1 - TILES, n + STAGES - 1, 1 - slot, nxt_L, pend, k_desc,
                       v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready, q_ready, total, G, TILES, STAGES)
            if t + STAGES < TILES:
                pend = _tile_rows(BT, cur_at, key_c + (t + STAGES) * BLOCK_N, block_rows, block, capacity, PAGE, PAGES, ONE_BLOCK)
            elif t + STAGES < 2 * TILES:
                pend = _tile_rows(BT, nxt_at, key_n + (t + STAGES - TILES) * BLOCK_N, block_rows, block, capacity, PAGE, PAGES,
                                  ONE_BLOCK)
            else:
                pend = _tile_rows(BT, fut_at, key_f, block_rows, block, capacity, PAGE, PAGES, ONE_BLOCK)
            s = n % STAGES
            mbarrier.wait(ready.index(s), (n // STAGES) & 1)
            key0 = key_c + t * BLOCK_N
            if key0 < cur_L:
                m_i, l_i, acc = _attend_tile_t(q_bufs.index(slot), k_bufs.index(s), v_bufs.index(s), p_s, key0, cur_L, qk_scale,
                                               m_i, l_i, acc, s_layout, num_warps)
            n += 1
        _store_partial_t(PO, PM, PL, cur_pair, G, cur_chunk, n_chunks, ml_stride, m_i, l_i, acc, s_layout)
        seq += 1
        cur += programs
        cur_L, cur_at, cur_pair, cur_chunk, key_c = nxt_L, nxt_at, nxt_pair, nxt_chunk, key_n
        nxt_L, nxt_at, nxt_pair, nxt_chunk, key_n = fut_L, fut_at, fut_pair, fut_chunk, key_f
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
    for i in gl.static_range(2):
        mbarrier.invalidate(q_ready.index(i))


# ---------------------------------------------------------------------------------------------
# Launcher (called by kernels.attention_decode.paged_decode_attention, which validated the inputs)
# ---------------------------------------------------------------------------------------------
def decode_persistent(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor | None,
                      seq_lens: torch.Tensor, scale: float, out: torch.Tensor, plan_: PersistentPlan) -> torch.Tensor:
    """o into `out` of one query per sequence (q [B, H, D]) over an HND cache [N, H_kv, P, D] and its
    block table (None: sequence b is block b): the persistent kernel under `plan_` (any plan whose items cover the table's
    max_blocks · P keys), then the split kernel's merge. paged_decode_attention validates the rest
    of its inputs."""
    capacity = ad.table_columns(block_table) * k_cache.shape[2]
    if plan_.n_chunks * plan_.chunk_tiles * BLOCK_N < capacity:
        raise ValueError(f"decode_persistent: {plan_!r} covers {plan_.n_chunks * plan_.chunk_tiles * BLOCK_N} keys a sequence, "
                         f"fewer than the block table's {capacity}")
    why = unsupported(q, k_cache, v_cache, block_table, ad.KVLayout.HND, k_cache.dtype != q.dtype)
    if why is not None:
        raise ValueError(f"decode_persistent: the kernel {why}")
    return _run(q, k_cache, v_cache, block_table, seq_lens, scale, out, plan_)


def box_keys(block_table: torch.Tensor | None, block: int) -> int:
    """Keys a TMA box loads: a tile (BLOCK_N) where a block holds whole tiles or a sequence is one
    block (the box may run past it: those keys are masked), else one block of a tile's BLOCK_N // block."""
    return BLOCK_N if ad.table_columns(block_table) == 1 or block % BLOCK_N == 0 else block


_LOADED: set = set()  # the kernel variants compiled and loaded by warm_only calls


def _run(q, k_cache, v_cache, block_table, seq_lens, scale: float, out, plan_: PersistentPlan, warm_only: bool = False):
    """decode_persistent without its checks (the launcher made them). warm_only: compile and load
    the kernels this call would launch and launch nothing; the launcher does so in eager calls,
    so that a CUDA graph captured later loads no module while capturing."""
    B, H, D = q.shape
    N, H_kv, P, _ = k_cache.shape
    splits = plan_.n_chunks
    ml_stride = ad.ml_row_floats(splits)
    page = box_keys(block_table, P)
    table = seq_lens if block_table is None else block_table  # without a table its pointer is never read
    cols = ad.table_columns(block_table)
    s = k_cache.stride()
    ints = (table.stride(0), *fast_divisor(H_kv), s[0] // D, s[1] // D, P, cols * P, *fast_divisor(splits), B * H_kv * splits,
            H // H_kv, ml_stride)
    if warm_only:
        # what Triton specializes a variant on: ints == 1 or % 16, pointer alignment, the descriptors' types and sizes
        key = (q.device, q.dtype, D, page, cols == 1, block_table is None, plan_.chunk_tiles, plan_.stages,
               *((v == 1, v % 16 == 0) for v in (*ints, _span_rows(k_cache), B * H)),
               table.data_ptr() % 16 == 0, seq_lens.data_ptr() % 16 == 0, out.stride(0) % 16 == 0, out.stride(1) % 16 == 0)
        if key in _LOADED:
            return out
    kv_layout = _smem_layout(BLOCK_N, D, q.dtype)
    rows = (_span_rows(k_cache), D)
    k_desc = TensorDescriptor.from_tensor(k_cache.as_strided(rows, (D, 1)), [page, D], kv_layout)
    v_desc = TensorDescriptor.from_tensor(v_cache.as_strided(rows, (D, 1)), [page, D], kv_layout)
    q_desc = TensorDescriptor.from_tensor(q.view(B * H, D), [G_BOX, D], _smem_layout(G_BOX, D, q.dtype))
    po, pm, pl, _ = ad.partials_buffer(B * H, splits, D, q.device)
    args = (q_desc, k_desc, v_desc, table, seq_lens, po, pm, pl, *ints, scale * ad.LOG2E)
    meta = dict(BLOCK_N=BLOCK_N, ONE_BLOCK=cols == 1, NO_TABLE=block_table is None, TILES=plan_.chunk_tiles, STAGES=plan_.stages,
                num_warps=4)
    grid = (plan_.programs,)
    if warm_only:
        _decode_persistent.warmup(*args, grid=grid, **meta)._init_handles()
        ad.launch_merge(po, pm, pl, out, splits, ml_stride, warm_only=True)
        _LOADED.add(key)
        return out
    _decode_persistent[grid](*args, **meta)
    ad.launch_merge(po, pm, pl, out, splits, ml_stride)
    return out
