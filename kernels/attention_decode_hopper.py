"""Decode attention at small batches on Hopper (sm_90): a persistent Gluon kernel that
kernels/attention_decode.py's launcher dispatches to, beside the same float64 reference
(`kernels.attention_decode.decode_reference`).

    o = paged_decode_attention(q, k_cache, v_cache, block_table, seq_lens)   # in a CUDA graph capture: takes it where `plan` does

Why a second kernel. At batch 1 an 8K cache is 8-32 MB: a few µs of DRAM time, so the call's
fixed costs decide how close it gets to a copy of the same bytes. The split kernel leaves most SMs
idle in its last µs (each program's pipeline drains alone) and pays Triton's software-pipeliner
restart at each split. This kernel (experiments/probes/decode_gluon.py, sessions 15-18) is written
in Gluon, Triton's explicit-layout language, so that its loads run ahead across work items:

  grid: one program an SM, persistent (`programs` of them); program p takes items p, p + programs, ...
  items: C tiles of BLOCK_N = 128 keys of one (sequence, KV head) (`plan` picks C from the work an SM)
  loads: TMA (cp.async.bulk.tensor) into a ring of STAGES K/V tile buffers, STAGES - 1 tiles ahead,
        across item boundaries; each item's query rows with its first tile, into one of two buffers
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

What it takes (`unsupported` names what a call lacks): an sm_90 GPU, a bf16/fp16 cache of q's
dtype (no fp8/int8 scales), HND layout viewed as one block per sequence (the contiguous cache; a
block table of one column), G = H / H_kv <= 8, D = 64 or 128, contiguous q and caches. Gluon does
not run under TRITON_INTERPRET, so its tests need the GPU (tests/kernels/test_attention_decode_hopper.py).
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
DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


@dataclass(frozen=True)
class PersistentPlan:
    """chunk_tiles (C): tiles of BLOCK_N keys an item; stages: K/V tiles in the ring (stages - 1
    in flight ahead, at least one: the loads of an item start before it is waited on); n_chunks:
    items a (sequence, KV head), the merge's splits; programs: the grid. Shared memory: stages ·
    2·BLOCK_N·D·2 bytes (3 stages at D = 128: 192 KB of an SM's 227)."""

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
def plan(B: int, H_kv: int, capacity: int, D: int, sms: int, force: bool = False) -> PersistentPlan | None:
    """The plan for B·H_kv (sequence, KV head) pairs of `capacity` keys on `sms` SMs (one program
    each), or None where the split kernel is as fast (more than MAX_TILES_PER_SM tiles an SM;
    force: a plan anyway). The item size C minimizes the tiles of the busiest program,
    ceil(items / sms) · C, ties broken by MIN_ITEMS. From the block table's capacity, not
    seq_lens, as the split count is: no device-to-host sync."""
    tiles = ad._cdiv(max(capacity, 1), BLOCK_N)
    pairs = B * H_kv
    if pairs * tiles / sms > MAX_TILES_PER_SM and not force:
        return None
    items = {C: pairs * ad._cdiv(tiles, C) for C in range(1, min(MAX_CHUNK_TILES, tiles) + 1)}
    busiest = {C: ad._cdiv(n, sms) for C, n in items.items()}  # items on the busiest program
    least = min(busiest[C] * C for C in items)
    tied = [C for C in items if busiest[C] * C == least]
    return sized_plan(max([C for C in tied if busiest[C] >= MIN_ITEMS[D]] or tied), B, H_kv, capacity, sms)


def sized_plan(C: int, B: int, H_kv: int, capacity: int, sms: int) -> PersistentPlan:
    """The plan at item size C (what `plan` settles on, and what a sweep of item sizes times):
    2 stages up to C = 2, 3 above; one program per item up to one per SM."""
    n_chunks = ad._cdiv(ad._cdiv(max(capacity, 1), BLOCK_N), C)
    return PersistentPlan(C, 2 if C <= 2 else 3, n_chunks, min(B * H_kv * n_chunks, sms))


def unsupported(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                layout: ad.KVLayout, quantized: bool) -> str | None:
    """Why this (validated) call cannot take the kernel, or None where it can. Cheapest checks
    first: every decode call on a GPU asks (a paged walk is refused at the first)."""
    if k_cache.numel() == 0:
        return f"needs a cache of at least one key slot; got shape {tuple(k_cache.shape)}"
    if layout is not ad.KVLayout.HND or block_table.shape[1] != 1:
        return (f"needs the HND layout viewed as one block per sequence (a block table of one column); "
                f"got {layout.name} with {block_table.shape[1]} blocks per sequence")
    if q.dtype not in DTYPES or quantized:
        return f"needs a bfloat16/float16 cache of q's dtype, without scales; got q {q.dtype}, cache {k_cache.dtype}"
    B, H, D = q.shape
    H_kv = k_cache.shape[1]
    if H // H_kv > G_BOX or D not in MIN_ITEMS:
        return f"needs at most {G_BOX} query heads per KV head and D in {sorted(MIN_ITEMS)}; got {H}/{H_kv} heads, D = {D}"
    if not _sm90(q.device):
        return f"needs an sm_90 GPU (Hopper's wgmma and TMA); q is on {q.device}"
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if not x.is_contiguous() or x.data_ptr() % 16:
            return f"needs {name} contiguous and 16-byte aligned (TMA), got strides {tuple(x.stride())}"
    return None


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
@gluon.jit
def _locate(item, BT, LENS, bt_stride, H_kv, capacity, n_chunks, total):
    """(keys, first row in the cache's [N·H_kv·P, D] view) of item's (sequence, KV head): the
    sequence's block (one a sequence) and its length clamped to the capacity; 0 keys past the last item."""
    pair = gl.minimum(item, total - 1) // n_chunks
    b = pair // H_kv
    L = gl.minimum(gl.load(LENS + b), capacity) * (item < total).to(gl.int32)
    row0 = (gl.load(BT + b * bt_stride) * H_kv + pair % H_kv) * capacity
    return L, row0


@gluon.jit
def _issue(item, tt, n, q_slot, L, row0, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready, q_ready,
           n_chunks, total, G, TILES: gl.constexpr, STAGES: gl.constexpr):
    """TMA loads of tile tt of `item` into stage n % STAGES (and, with its first tile, its query
    rows into q slot q_slot). A tile past L or past the last item arrives with no bytes, so the
    barrier phases stay in step with the tiles consumed."""
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    s = n % STAGES
    key0 = ((item % n_chunks) * TILES + tt) * BLOCK_N
    live = key0 < L  # L is 0 past the last item
    bar = ready.index(s)
    mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes, pred=live)
    mbarrier.arrive(bar, pred=key0 >= L)
    tma.async_copy_global_to_shared(k_desc, [row0 + key0, 0], bar, k_bufs.index(s), pred=live)
    tma.async_copy_global_to_shared(v_desc, [row0 + key0, 0], bar, v_bufs.index(s), pred=live)
    if tt == 0:
        qb = q_ready.index(q_slot)
        q_live = item < total
        mbarrier.expect(qb, q_desc.block_type.nbytes, pred=q_live)
        mbarrier.arrive(qb, pred=item >= total)
        tma.async_copy_global_to_shared(q_desc, [(item // n_chunks) * G, 0], qb, q_bufs.index(q_slot), pred=q_live)


@gluon.jit
def _decode_persistent(q_desc, k_desc, v_desc, BT, LENS, PO, PM, PL, bt_stride, H_kv, capacity, n_chunks, total, G,
                       ml_stride, qk_scale, TILES: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr):
    """Items pid, pid + programs, ...: item = pair · n_chunks + chunk, pair = b · H_kv + KV head, chunk
    c covering keys [c·TILES·BLOCK_N, (c + 1)·TILES·BLOCK_N) of sequence b, whose partial is split c."""
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    D: gl.constexpr = k_desc.block_type.shape[1]
    ROWS: gl.constexpr = q_desc.block_type.shape[0]
    gl.static_assert(TILES >= STAGES - 1, "the loads run at most one item ahead")
    gl.static_assert(num_warps == 4, "one warpgroup")
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

    # where the next items live is read one item before their loads are issued: a table read
    # on the way to the first load of an item would stall the stream for an L2 round trip
    cur = pid
    cur_L, cur_row = _locate(cur, BT, LENS, bt_stride, H_kv, capacity, n_chunks, total)
    nxt_L, nxt_row = _locate(cur + programs, BT, LENS, bt_stride, H_kv, capacity, n_chunks, total)
    for u in gl.static_range(STAGES - 1):  # the prologue: the first item's first tiles
        _issue(cur, u, u, 0, cur_L, cur_row, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready, q_ready,
               n_chunks, total, G, TILES, STAGES)
    n = 0  # tiles consumed
    seq = 0  # items done
    while cur < total:
        fut_L, fut_row = _locate(cur + 2 * programs, BT, LENS, bt_stride, H_kv, capacity, n_chunks, total)
        chunk = cur % n_chunks
        slot = seq % 2
        m_i, l_i, acc = _fresh_state_t(BLOCK_N, D, ROWS, s_layout)
        mbarrier.wait(q_ready.index(slot), (seq // 2) & 1)
        for t in gl.static_range(TILES):
            gl.thread_barrier()  # every warp is done with the stage the next load overwrites (tile n - 1's)
            fence_async_shared()
            ahead = t + STAGES - 1  # the tile loaded now, counted from this item's first
            if ahead < TILES:
                _issue(cur, ahead, n + STAGES - 1, slot, cur_L, cur_row, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs,
                       ready, q_ready, n_chunks, total, G, TILES, STAGES)
            else:
                _issue(cur + programs, ahead - TILES, n + STAGES - 1, 1 - slot, nxt_L, nxt_row, k_desc, v_desc, q_desc, k_bufs, v_bufs,
                       q_bufs, ready, q_ready, n_chunks, total, G, TILES, STAGES)
            s = n % STAGES
            mbarrier.wait(ready.index(s), (n // STAGES) & 1)
            key0 = (chunk * TILES + t) * BLOCK_N
            if key0 < cur_L:
                m_i, l_i, acc = _attend_tile_t(q_bufs.index(slot), k_bufs.index(s), v_bufs.index(s), p_s, key0, cur_L, qk_scale,
                                               m_i, l_i, acc, s_layout, num_warps)
            n += 1
        _store_partial_t(PO, PM, PL, cur // n_chunks, G, chunk, n_chunks, ml_stride, m_i, l_i, acc, s_layout)
        seq += 1
        cur += programs
        cur_L, cur_row = nxt_L, nxt_row
        nxt_L, nxt_row = fut_L, fut_row
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
    for i in gl.static_range(2):
        mbarrier.invalidate(q_ready.index(i))


# ---------------------------------------------------------------------------------------------
# Launcher (called by kernels.attention_decode.paged_decode_attention, which validated the inputs)
# ---------------------------------------------------------------------------------------------
def decode_persistent(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                      seq_lens: torch.Tensor, scale: float, out: torch.Tensor, plan_: PersistentPlan) -> torch.Tensor:
    """o into `out` of one query per sequence (q [B, H, D]) over an HND cache [N, H_kv, P, D] viewed
    as one block per sequence: the persistent kernel under `plan_` (any plan whose items cover P
    keys), then the split kernel's merge. paged_decode_attention validates the rest of its inputs."""
    if plan_.n_chunks * plan_.chunk_tiles * BLOCK_N < k_cache.shape[2]:
        raise ValueError(f"decode_persistent: {plan_!r} covers {plan_.n_chunks * plan_.chunk_tiles * BLOCK_N} keys a sequence, "
                         f"fewer than the cache's {k_cache.shape[2]}")
    why = unsupported(q, k_cache, v_cache, block_table, ad.KVLayout.HND, k_cache.dtype != q.dtype)
    if why is not None:
        raise ValueError(f"decode_persistent: the kernel {why}")
    return _run(q, k_cache, v_cache, block_table, seq_lens, scale, out, plan_)


_LOADED: set = set()  # the kernel variants compiled and loaded by warm_only calls


def _run(q, k_cache, v_cache, block_table, seq_lens, scale: float, out, plan_: PersistentPlan, warm_only: bool = False):
    """decode_persistent without its checks (the launcher made them). warm_only: compile and load
    the kernels this call would launch and launch nothing; the launcher does so in eager calls,
    so that a CUDA graph captured later loads no module while capturing."""
    B, H, D = q.shape
    N, H_kv, P, _ = k_cache.shape
    splits = plan_.n_chunks
    ml_stride = ad.ml_row_floats(splits)
    ints = (block_table.stride(0), H_kv, P, splits, B * H_kv * splits, H // H_kv, ml_stride)
    if warm_only:
        # what Triton specializes a variant on: ints == 1 or % 16, pointer alignment, the descriptors' types and sizes
        key = (q.device, q.dtype, D, plan_.chunk_tiles, plan_.stages, *((v == 1, v % 16 == 0) for v in (*ints, N * H_kv * P, B * H)),
               block_table.data_ptr() % 16 == 0, seq_lens.data_ptr() % 16 == 0, out.stride(0) % 16 == 0, out.stride(1) % 16 == 0)
        if key in _LOADED:
            return out
    kv_layout = _smem_layout(BLOCK_N, D, q.dtype)
    k_desc = TensorDescriptor.from_tensor(k_cache.view(N * H_kv * P, D), [BLOCK_N, D], kv_layout)
    v_desc = TensorDescriptor.from_tensor(v_cache.view(N * H_kv * P, D), [BLOCK_N, D], kv_layout)
    q_desc = TensorDescriptor.from_tensor(q.view(B * H, D), [G_BOX, D], _smem_layout(G_BOX, D, q.dtype))
    po, pm, pl, _ = ad.partials_buffer(B * H, splits, D, q.device)
    args = (q_desc, k_desc, v_desc, block_table, seq_lens, po, pm, pl, *ints, scale * ad.LOG2E)
    meta = dict(TILES=plan_.chunk_tiles, STAGES=plan_.stages, num_warps=4)
    grid = (plan_.programs,)
    if warm_only:
        _decode_persistent.warmup(*args, grid=grid, **meta)._init_handles()
        ad.launch_merge(po, pm, pl, out, splits, ml_stride, warm_only=True)
        _LOADED.add(key)
        return out
    _decode_persistent[grid](*args, **meta)
    ad.launch_merge(po, pm, pl, out, splits, ml_stride)
    return out
