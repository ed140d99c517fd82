"""Decode attention over a paged KV cache (flash-decoding), beside its float64 reference.

    o = paged_decode_attention(q, k_cache, v_cache, block_table, seq_lens)   # q [B, H, D]

One new token per sequence attends to its seq_lens[b] cached keys (the new token's own K/V
already written, so seq_lens counts it). Token j of sequence b lives in physical block
block_table[b, j // P] at offset j % P; without a table (block_table=None, a contiguous cache)
in block b, of P = the cache's length.

Decode is bound by reading the cache: B·L·H_kv·D·2 values against 4·H·D FLOPs per token. So
  * one program reads one KV head's tiles ONCE for all G query heads of its group: the G query
    rows are loaded together and scored with one tl.dot([G_pad, D] × [D, BLOCK_N]) (G_pad >= 16,
    the smallest tensor-core M; the padded rows cost FLOPs, which are free here, not bytes). Each
    tile's K and V loads are issued together, so both are in flight before the first is used.
  * the KV length is split (grid B × H_kv × splits) so that short batches still fill every SM
    (`SplitPolicy`: about `programs_per_sm` programs per SM, splits of at least `min_split`
    tokens, chosen from the block table's capacity, so without a device-to-host sync). Up to 16
    splits each take one run of keys (cut at 16 keys, or at BLOCK_N where blocks hold whole
    tiles); with more, the splits take the BLOCK_N-key tiles in turn (split s: tiles s,
    s + splits, ...; `SplitPolicy.interleave_above`), so the many programs of one (sequence, KV
    head) read neighbouring tiles at any moment and sweep its K and V front to back. Each split
    leaves a partial (running max m, sum l, unnormalized output) and the partials are merged:
    o = Σ 2^(m_s - M) · acc_s / Σ 2^(m_s - M) · l_s. With one split the program writes o itself.
  * the merge can be fused: each program of a (sequence, KV head) writes its partials and
    bumps an arrival counter (one atomic, acq_rel at GPU scope); the program that arrives last
    reads the group's G·splits partials from L2 and writes o, and resets the counter to 0. That
    saves the second launch (~2 µs before it took PDL) for one atomic per program and a merge
    tail of G·splits·D·4 bytes read by one program. The counters are one
    zeroed int32 buffer per device, allocated once and left zeroed by every launch, so launches
    need no memset and work in CUDA graphs. Two launches running at the same time on different
    streams of one device would share counters: pass fused_merge=False there. Under the
    interpreter the programs run one after another, so the last one merges, as on the GPU.
    Otherwise a second small kernel merges, one warp per program over 16 dims of one head
    (MERGE_DIMS; more where the programs would crowd the SMs). On sm_90+ it takes
    programmatic dependent launch by default, so its launch overlaps the split kernel
    (`SplitPolicy.merge_pdl`), and there it is the default at every split count: on an H200 it
    ran as fast as the fused merge or faster at every batch, head count and split count measured
    (up to 7 % at 9/3 heads). Without PDL the fused merge is the default up to 16 splits (its tail
    grows with the split count, the second launch does not): `SplitPolicy.fused_merge_up_to`.
    fused_merge=False, or no counter buffer yet while a graph is being captured, takes the
    second kernel too.
  * quantized caches are dequantized in registers: fp8 e4m3 and int8 values convert exactly to
    bf16/fp16 (with an fp8 cache the dot products run in fp16 whatever q's dtype: e4m3 -> fp16 is
    one instruction, -> bf16 three; q beyond fp16's ±65504 would overflow, which post-RoPE queries
    never approach), and the scale is applied outside the dot products (per-tensor/per-head scales are
    one scalar per program, folded into the softmax scale for K and into the output for V;
    per-token scales multiply the score columns for K and the probabilities for V).

Scales (`k_scale`, `v_scale`, both required for fp8/int8 caches, absent for float caches):
    a float or 1-element tensor   per tensor
    [H_kv]                        per head
    cache.shape[:-1]              per token and head ([N, H_kv, P] for HND, [N, P, H_kv] for NHD)
  float value = stored value · scale. Any kind works with either dtype; the usual choices are
  fp8 per tensor/head (e4m3's exponent covers the range) and int8 per token (its uniform grid
  needs a scale that tracks each token's outliers).

On sm_90, in calls captured into a CUDA graph where the work is small (at most ~12 tiles of 128
keys an SM) and the cache is a bf16/fp16 HND one (blocks of whole 128-key tiles, or one block
per sequence), the launcher takes a persistent Gluon kernel instead (kernels/
attention_decode_hopper.py: loads that run ahead across work items, swapped wgmma math, this
module's merge kernel); `persistent=` overrides the rule.

Knobs, read at call time and set from split/tile sweeps on an H200 (`lab.benchmarks.
attention_decode.tune()`): `POLICY` (splits, fused merge, programmatic dependent launch) and
`default_config` (the tile: TILE_BYTES of K per tile, STAGES by table walk). No runtime autotuning:
at 5-40 µs a call the autotuner's own timing noise picked slower tiles than the rule.
"""
from __future__ import annotations

import enum
import functools
import math
import os
import warnings
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
QUANT_DTYPES = (torch.float8_e4m3fn, torch.int8)
QMAX = {torch.float8_e4m3fn: 448.0, torch.int8: 127.0}


class KVLayout(enum.Enum):
    """How one block of the paged cache is laid out in memory.

    HND  [N, H_kv, P, D]: one (block, head) is one contiguous P×D tile, so a program streaming
         one head reads long contiguous runs. The default, and the layout of the lab's contiguous
         cache: [B, H_kv, S, D] IS an HND paged cache with one block of P = S per sequence, so
         `paged_from_contiguous` needs no copy.
    NHD  [N, P, H_kv, D]: one token's heads are contiguous (vLLM's layout), which makes appending
         a token one contiguous write; a head's rows are D-long runs strided by H_kv·D.
    """

    HND = "HND"
    NHD = "NHD"

    def dims(self, cache: torch.Tensor) -> tuple[int, int, int, int]:
        """(N, H_kv, P, D) of a cache in this layout."""
        N, a, b, D = cache.shape
        return (N, a, b, D) if self is KVLayout.HND else (N, b, a, D)

    def strides(self, t: torch.Tensor) -> tuple[int, int, int]:
        """(block, head, token) strides of a cache or of a per-token scale tensor."""
        s = t.stride()
        return (s[0], s[1], s[2]) if self is KVLayout.HND else (s[0], s[2], s[1])


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _merge_partials(
    PO, PM, PL, O, b64, head0, n_heads, H, num_splits, ml_stride, stride_ob, stride_oh, d0,
    HEAD_DIM: tl.constexpr, DIMS: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr, STAGES: tl.constexpr,
):
    """o[b, head0 : head0 + n_heads, d0 : d0 + DIMS] from their split partials, CHUNK splits at a
    time (online: the running max M and the sums are rescaled per chunk). Empty splits (m = -inf,
    l = 0) weigh 0. The partials were written by other programs of this launch, so no load may hit a line this
    SM's L1 took before they were written: the 16-byte output loads bypass L1 (cp.async.cg), and
    the 4-byte m/l loads, which cp.async can only do through L1, read rows padded to whole 128-byte
    lines per head (ml_stride), lines that no merge of another group ever reads."""
    r = tl.arange(0, ROWS)
    c = tl.arange(0, CHUNK)
    d = d0 + tl.arange(0, DIMS)
    live = r < n_heads
    head_row = b64 * H + head0 + r  # [ROWS]
    m_run = tl.full([ROWS], float("-inf"), tl.float32)
    l_run = tl.zeros([ROWS], tl.float32)
    acc = tl.zeros([ROWS, DIMS], tl.float32)
    for s0 in tl.range(0, num_splits, CHUNK, num_stages=STAGES):
        s = s0 + c
        ok = live[:, None] & (s < num_splits)[None, :]  # [ROWS, CHUNK]
        ml = head_row[:, None] * ml_stride + s[None, :]
        m = tl.load(PM + ml, mask=ok, other=float("-inf"), cache_modifier=".cg")
        l = tl.load(PL + ml, mask=ok, other=0.0, cache_modifier=".cg")
        row = head_row[:, None] * num_splits + s[None, :]
        a = tl.load(PO + row[:, :, None] * HEAD_DIM + d[None, None, :], mask=ok[:, :, None], other=0.0,
                    cache_modifier=".cg")  # [ROWS, CHUNK, DIMS]
        m_new = tl.maximum(m_run, tl.max(m, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing seen yet: weights 0, not NaN
        alpha = tl.math.exp2(m_run - m_ref)
        w = tl.math.exp2(m - m_ref[:, None])  # [ROWS, CHUNK]
        l_run = l_run * alpha + tl.sum(w * l, 1)
        acc = acc * alpha[:, None] + tl.sum(w[:, :, None] * a, 1)
        m_run = m_new
    o = acc / tl.where(l_run == 0.0, 1.0, l_run)[:, None]  # L == 0: zeros
    heads = head0 + r
    tl.store(O + b64 * stride_ob + heads[:, None] * stride_oh + d[None, :], o.to(O.dtype.element_ty), mask=live[:, None])


@triton.jit
def _split_bounds(L, split, num_splits, PAGE: tl.constexpr, ONE_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr):
    """[start, end) tokens of this split where each split takes one run of keys. Runs are cut at
    multiples of 16 tokens, so they are balanced to within 16 tokens (not a whole tile: 6 runs of
    1000 keys cut at 128 are 3 of 256, one of 232 and 2 empty; at 16, 5 of 176 and one of 120).
    Only where a tile must stay inside one block (PAGE a multiple of BLOCK_N) are they cut at
    BLOCK_N. A split's last tile may be partial: masked lanes read no bytes."""
    if ONE_BLOCK or PAGE % BLOCK_N != 0:
        split_len = tl.cdiv(tl.cdiv(L, num_splits), 16) * 16
    else:
        split_len = tl.cdiv(tl.cdiv(L, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_len
    return start, tl.minimum(L, start + split_len)


@triton.jit
def _split_walk(L, split, num_splits, PAGE: tl.constexpr, ONE_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
                INTERLEAVE: tl.constexpr):
    """(first, end, step): this split's tiles start at first, first + step, ... below end: every
    num_splits-th tile (INTERLEAVE: SplitPolicy.interleave_above), or one run (_split_bounds)."""
    if INTERLEAVE:
        return split * BLOCK_N, L, num_splits * BLOCK_N
    else:
        start, end = _split_bounds(L, split, num_splits, PAGE, ONE_BLOCK, BLOCK_N)
        return start, end, BLOCK_N


@triton.jit
def _prefetch_l2(ptrs):
    """Ask L2 for the lines at ptrs (a hint: it writes no register and nothing waits on it)."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _prefetch_first_tiles(K, V, bt_row, LENS, b, h64, split, stride_kn, stride_kh, stride_kp, stride_vn, stride_vh, stride_vp,
                          capacity, num_splits, PAGE: tl.constexpr, ONE_BLOCK: tl.constexpr, NO_TABLE: tl.constexpr,
                          BLOCK_N: tl.constexpr, INTERLEAVE: tl.constexpr, HEAD_DIM: tl.constexpr, LINE: tl.constexpr,
                          TILES: tl.constexpr):
    """Before the PDL wait (the previous kernel may still be running): prefetch this program's
    first TILES K/V tiles into L2, one prefetch per 128-byte line (LINE elements), so the main
    loop's first loads hit L2 instead of waiting on DRAM. seq_lens and the table may still be
    written by the previous kernel: they only give addresses (a stale entry is another valid
    block: bandwidth lost, never a wrong result) and are read .cg, so no stale line stays in
    this SM's L1 for the loads after the wait."""
    L = tl.minimum(tl.load(LENS + b, cache_modifier=".cg"), capacity)
    first, end, step = _split_walk(L, split, num_splits, PAGE, ONE_BLOCK, BLOCK_N, INTERLEAVE)  # the main loop's
    n = tl.arange(0, BLOCK_N)
    col = tl.arange(0, HEAD_DIM // LINE if HEAD_DIM > LINE else 1) * LINE  # [lines per row]
    if NO_TABLE:
        blk0 = b.to(tl.int64)
    elif ONE_BLOCK:
        blk0 = tl.load(bt_row, cache_modifier=".cg").to(tl.int64)
    for i in tl.static_range(TILES):
        tok = first + i * step + n
        valid = tok < end
        if ONE_BLOCK:
            blk = blk0
            off = tok
        else:
            blk = tl.load(bt_row + tok // PAGE, mask=valid, other=0, cache_modifier=".cg").to(tl.int64)
            off = tok % PAGE
        k_row = blk * stride_kn + h64 * stride_kh + off * stride_kp
        v_row = blk * stride_vn + h64 * stride_vh + off * stride_vp
        _prefetch_l2(tl.where(valid[:, None], K + k_row[:, None] + col[None, :], K))
        _prefetch_l2(tl.where(valid[:, None], V + v_row[:, None] + col[None, :], V))


# int args that vary from call to call without changing the code: left unspecialized, so a new
# split count or batch shape does not compile a new kernel (Triton specializes ints on == 1 and
# on divisibility by 16; the strides stay specialized: that is what proves 16-byte alignment)
@triton.jit(do_not_specialize=["G", "capacity", "num_splits", "ml_stride", "merge"])
def _decode_split(
    Q, K, V, BT, LENS, KS, VS, O, PO, PM, PL, CNT,
    stride_qb, stride_qh,
    stride_kn, stride_kh, stride_kp,
    stride_vn, stride_vh, stride_vp,
    stride_btb,
    stride_ksn, stride_ksh, stride_ksp,
    stride_vsn, stride_vsh, stride_vsp,
    stride_ob, stride_oh,
    G, capacity, qk_scale, num_splits, ml_stride,
    merge,  # 0: one split, write o; 1: write partials (the merge kernel follows); 2: fused merge
    PAGE: tl.constexpr, ONE_BLOCK: tl.constexpr, NO_TABLE: tl.constexpr, HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr,
    K_SCALE: tl.constexpr, V_SCALE: tl.constexpr, DOT_F16: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ROWS: tl.constexpr, MERGE_CHUNK: tl.constexpr, MERGE_STAGES: tl.constexpr, PDL: tl.constexpr,
    TRIGGER: tl.constexpr, PREFETCH: tl.constexpr, LINE: tl.constexpr, INTERLEAVE: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    h_kv = tl.program_id(1)
    split = tl.program_id(2)
    b64 = b.to(tl.int64)
    bt_row = BT + b64 * stride_btb
    if PDL:  # launched early (programmatic dependent launch): nothing is read for real before the previous grid is done
        if PREFETCH > 0:  # ... but the cache it will stream can already be on its way to L2
            _prefetch_first_tiles(K, V, bt_row, LENS, b, h_kv.to(tl.int64), split, stride_kn, stride_kh, stride_kp,
                                  stride_vn, stride_vh, stride_vp, capacity, num_splits, PAGE, ONE_BLOCK, NO_TABLE, BLOCK_N,
                                  INTERLEAVE, HEAD_DIM, LINE, PREFETCH)
        tl.extra.cuda.gdc_wait()
    if TRIGGER:  # the next kernel (our merge kernel, or with pdl the next call) may launch; it waits in turn
        tl.extra.cuda.gdc_launch_dependents()
    L = tl.load(LENS + b)
    g = tl.arange(0, G_PAD)
    d = tl.arange(0, HEAD_DIM)
    heads = h_kv * G + g  # [G_PAD] the query heads of this KV head's group
    rows = g < G
    # issued before L is needed: q (and the one table entry of a contiguous view) load in parallel
    q = tl.load(Q + b64 * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=rows[:, None], other=0.0)
    if NO_TABLE:  # a contiguous cache: sequence b is block b
        blk0 = b64
    elif ONE_BLOCK:  # one block per sequence: one table entry, no walk
        blk0 = tl.load(bt_row).to(tl.int64)
    L = tl.minimum(L, capacity)  # never index past the block table's row
    first, end, step = _split_walk(L, split, num_splits, PAGE, ONE_BLOCK, BLOCK_N, INTERLEAVE)

    if DOT_F16:  # fp8 e4m3 -> fp16 is one native conversion; -> bf16 takes three
        q = q.to(tl.float16)
    if K_SCALE == 1:  # per tensor / per head: fold into the softmax scale
        qk_scale = qk_scale * tl.load(KS + h_kv * stride_ksh).to(tl.float32)

    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, HEAD_DIM], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    h64 = h_kv.to(tl.int64)
    for n0 in range(first, end, step):
        tok = n0 + offs_n  # [BN] logical token index
        valid = tok < end
        if ONE_BLOCK:
            blk = blk0
            off = tok
        elif PAGE % BLOCK_N == 0:  # the tile lies inside one block (tiles start at multiples of BLOCK_N)
            blk = tl.load(bt_row + n0 // PAGE).to(tl.int64)
            off = n0 % PAGE + offs_n
        else:  # the tile spans blocks: one table entry per token
            blk = tl.load(bt_row + tok // PAGE, mask=valid, other=0).to(tl.int64)
            off = tok % PAGE
        k_row = blk * stride_kn + h64 * stride_kh + off * stride_kp  # [BN]
        v_row = blk * stride_vn + h64 * stride_vh + off * stride_vp
        # K and V together: 2·BN·D elements in flight per tile before the first dot waits
        k = tl.load(K + k_row[:, None] + d[None, :], mask=valid[:, None], other=0.0)  # [BN, D]
        v = tl.load(V + v_row[:, None] + d[None, :], mask=valid[:, None], other=0.0)  # [BN, D]
        s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=DOT_PRECISION) * qk_scale  # [G_PAD, BN], log2 domain
        if K_SCALE == 2:
            ks = tl.load(KS + blk * stride_ksn + h64 * stride_ksh + off * stride_ksp, mask=valid, other=0.0)
            s = s * ks.to(tl.float32)[None, :]
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile visited starts below end
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if V_SCALE == 2:
            vs = tl.load(VS + blk * stride_vsn + h64 * stride_vsh + off * stride_vsp, mask=valid, other=0.0)
            p = p * vs.to(tl.float32)[None, :]
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(q.dtype), v.to(q.dtype), acc, input_precision=DOT_PRECISION)
        m_i = m_new
    if V_SCALE == 1:
        acc = acc * tl.load(VS + h_kv * stride_vsh).to(tl.float32)

    if merge == 0:
        o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # L == 0: zeros
        tl.store(O + b64 * stride_ob + heads[:, None] * stride_oh + d[None, :], o.to(O.dtype.element_ty), mask=rows[:, None])
    else:
        H = G * tl.num_programs(1)
        head_row = b64 * H + heads  # [G_PAD]
        tl.store(PO + (head_row * num_splits + split)[:, None] * HEAD_DIM + d[None, :], acc, mask=rows[:, None])
        tl.store(PM + head_row * ml_stride + split, m_i, mask=rows)
        tl.store(PL + head_row * ml_stride + split, l_i, mask=rows)
        if merge == 2:
            # every thread's partial stores happen-before the release of the atomic (the barrier
            # orders them at CTA scope, acq_rel at GPU scope carries them to the acquiring program)
            tl.debug_barrier()
            counter = CNT + b64 * tl.num_programs(1) + h_kv
            arrived = tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu")
            if arrived == num_splits - 1:  # the last of the group: every partial is written
                tl.store(counter, 0)  # zero again for the next launch (no other program touches it now)
                _merge_partials(PO, PM, PL, O, b64, h_kv * G, G, H, num_splits, ml_stride, stride_ob, stride_oh, 0,
                                HEAD_DIM, HEAD_DIM, ROWS, MERGE_CHUNK, MERGE_STAGES)


@triton.jit(do_not_specialize=["H", "num_splits", "ml_stride"])
def _decode_merge(PO, PM, PL, O, H, num_splits, ml_stride, stride_ob, stride_oh,
                  HEAD_DIM: tl.constexpr, DIMS: tl.constexpr, CHUNK: tl.constexpr, STAGES: tl.constexpr,
                  PDL: tl.constexpr, TRIGGER: tl.constexpr):
    """The two-kernel path's second launch: grid (B, H, HEAD_DIM // DIMS), DIMS of one head per
    program (MERGE_DIMS: one warp, whose reductions over the splits stay in registers)."""
    if PDL:  # its CTAs may be resident while the split kernel runs; the partials are read after it ends
        tl.extra.cuda.gdc_wait()
    if TRIGGER:  # with pdl: the next call's split kernel may launch (it waits in turn)
        tl.extra.cuda.gdc_launch_dependents()
    _merge_partials(PO, PM, PL, O, tl.program_id(0).to(tl.int64), tl.program_id(1), 1, H, num_splits, ml_stride,
                    stride_ob, stride_oh, tl.program_id(2) * DIMS, HEAD_DIM, DIMS, 1, CHUNK, STAGES)


# ---------------------------------------------------------------------------------------------
# Knobs: the split policy and the tile rule (one small tile under TRITON_INTERPRET). Set from
# split/tile sweeps on an H200 (lab.benchmarks.attention_decode.tune()).
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitPolicy:
    """How many KV-length splits a launch gets when num_splits is not given, and how they merge.

    s = max(1, floor(programs_per_sm · SMs / (B · H_kv))), or s + 1 where that leaves the busiest SM
        less work (fewer programs on it per split: ceil(B·H_kv·s / SMs) / s)
    top = clamp(s, 1, min(ceil(capacity / min_split), max_splits))
    splits = top, less the splits that would not shorten the busiest split (runs are cut at 16
        keys: 15 runs of 200 keys are 12 of 16, one of 8 and 2 empty; splits that take the
        n = ceil(capacity / block_n) tiles in turn, block_n the tile rule's, give the busiest
        ceil(n / s) tiles, which ceil(n / ceil(n / s)) splits give too: 33 of 128 tiles are 32
        of 4); where min_split or max_splits cut s short, the fewest splits up to
        top whose busiest SM runs the fewest tile steps (programs on it · tiles a split). A short
        program is a chain of DRAM round trips, one a tile, so tiles count, not tokens: at 9/3
        heads, 8K, 32 runs of 2 128-key tiles (one program on 96 SMs) ran 6.85 µs, 43 runs of 192
        keys (one on 129, still 2 tiles) 7.51 and 64 of one tile (two on 60 SMs) 6.9 (H200,
        stream, experiments/probes/decode_ab.py).

    Decided from the block table's capacity (max_blocks · P), never from seq_lens: no device-to-host
    sync, the same split count for every call of a CUDA graph. floor, not ceil: every program is
    resident at once and no SM gets one more program than another has (48 (sequence, KV head)
    pairs on 132 SMs: 5 splits = 240 programs, at most 2 an SM; 6 would put a third on 24 SMs
    and every other SM waits for them: 36.2 against 33.1 µs at B = 16, 9/3 heads, 8K). Where one
    split already over-fills the GPU (132 < B·H_kv <= 264), s + 1 evens it out: 192 pairs in 1
    split put 2 programs on 60 SMs and 1 on the rest, in 2 splits 3 and 2 (H200, B = 64, 9/3
    heads, fp8 cache, 8K: 69.9 against 91.7 µs; bf16 32K 358 against 364). Rounding up on
    paged walks only was tried: 2-7 % faster at B = 64, 20-25 % slower at B = 16. Two
    programs per SM with 2 K/V tiles of 16 KB ahead each are ~128 KB in flight per SM, several
    times what Little's law asks (~32 GB/s per SM × ~1 µs). Each split costs G·(D+2)·4 bytes of
    partials written and read again by the merge (from L2).
    fused_merge_up_to: where the merge kernel cannot take PDL (before sm_90, or merge_pdl off), with
    at most this many splits the split kernel merges them itself (the last program of each group,
    one atomic per program); with more, a second small kernel does. The fused tail (one program
    reading G·splits·D·4 bytes) grows with the split count, the second launch cost a fixed ~2
    µs before it took PDL: on an H200 then, the fused merge won by 1-3 µs at 2-8 splits and
    lost by ~2.3 µs at 32 (batch 1). 0: never fused.
    fused_merge_up_to_pdl: the same where the merge kernel takes PDL. 0: its launch overlaps the
    split kernel, and the fused merge never won (H200, session 11, experiments/probes/
    decode_fused_threshold.py, stream, two kernels against fused at the same split count: batch
    1-8, 9/3 heads at 8K, 2-64 splits, 0.8-2.5 µs faster; B = 16 9/3 8K, 5 splits, 31.0 against
    32.3 µs; B = 4 32/8 8K 38.6 / 38.7; B = 16 32/8 8K 128.0 / 128.6; B = 8 32/8 32K 246.5 /
    246.1).
    pdl: launch the kernels with programmatic dependent launch (sm_90+; ignored elsewhere and under
    the interpreter). Each kernel's first act is griddepcontrol.wait (nothing is read for use,
    nothing written, before the previous kernel in the stream has completed and flushed, so it is
    correct after any producer; only prefetch_tiles' address reads come earlier) and its second
    griddepcontrol.launch_dependents, so the next PDL kernel (the merge kernel, or the next call's
    split kernel) is launched and made resident while this one runs: what it hides is the launch
    gap between kernels (in a CUDA graph too), not the tail. Off by default: it pays only where
    the kernel before it in the stream is launched the same way (decode calls back to back on an
    H200: B = 1, 32/8 heads, 8K 15.0 -> 14.2 µs with prefetch_tiles=1; 9/3 heads 8.9 -> 7.1).
    merge_pdl: launch the merge kernel (the two-kernel path) with programmatic dependent launch
    even where pdl is off: its predecessor in the stream is always our own split kernel, which
    triggers it at its start (on that path only), so its launch overlaps the split kernel's run and
    its wait ends when the partials are written. Safe after any producer, since only the merge
    kernel launches early; nothing downstream is triggered unless pdl is on.
    H100, batch 1, stream (experiments/probes/decode_merge_pdl.py): 9/3 heads 8K 9.11 -> 8.16 µs,
    32K 16.6 -> 15.6; 32/8 heads 8K 19.4 either way, 32K 55.6 -> 54.6.
    prefetch_tiles (with pdl): before its wait, each split program asks L2 for its first
    prefetch_tiles K/V tiles (addresses from seq_lens and the table as they are then), so the
    DRAM ramp of a launch overlaps the previous kernel's tail (at batch 1 the merge, when DRAM
    is idle) instead of following it. At most ~2 tiles a program: prefetched lines must survive
    in L2 until the wait returns (B=1, 8K, 32 splits, 2 tiles of n64: 16.8 MB).

    interleave_above: with more splits than this, the splits take a sequence's tiles in turn
    (split s: tiles s, s + splits, ...) instead of one run each. Many splits are short runs, and
    taking the tiles in turn keeps the programs of a (sequence, KV head) on neighbouring tiles;
    a few long runs stream better each on its own. Against the launcher before it (runs cut at
    16 keys at every split count; H200, stream, bf16, experiments/probes/decode_ab.py, session
    14): B = 1, 32/8 heads, 8K 13.94 -> 13.41 µs (1.7-3.9 % on three machines), 32K 39.95 ->
    38.82; 9/3 heads, 16K 10.06 -> 9.35 and B = 2, 8K 9.64 -> 8.92 (whole tiles: 64 and 32
    splits where runs took 86 and 43); int8, 9/3, 32K 14.20 -> 13.54. Taking the tiles in turn
    at 2-16 splits too ran 2-6 % slower there (H100, B = 64, 9/3 heads, 8K 142.6 -> 150.5 µs;
    B = 2-4, 32/8 heads, 8K 2-3 %): hence the bound (results/baselines/README.md, Decode,
    session 14).

    The defaults are from split-count sweeps on an H200 (back to back in a CUDA graph over KV
    copies larger than L2, 2026-11-21: the session-5 notes of results/baselines/README.md;
    experiments/probes/decode_b1_breakdown.py re-sweeps the split count at batch 1).
    """

    programs_per_sm: float = 2.0
    min_split: int = 128  # tokens; shorter splits add partials and merge work, not bytes in flight
    max_splits: int = 512
    fused_merge_up_to: int = 16
    fused_merge_up_to_pdl: int = 0
    pdl: bool = False
    merge_pdl: bool = True
    prefetch_tiles: int = 0
    interleave_above: int = 16

    def __post_init__(self):
        if not (self.programs_per_sm > 0 and self.min_split >= 1 and self.max_splits >= 1 and self.prefetch_tiles >= 0
                and self.fused_merge_up_to >= 0 and self.fused_merge_up_to_pdl >= 0 and self.interleave_above >= 0):
            raise ValueError(f"SplitPolicy: programs_per_sm > 0, min_split >= 1, max_splits >= 1, fused_merge_up_to(_pdl) >= 0, "
                             f"prefetch_tiles >= 0 and interleave_above >= 0, got {self}")

    @functools.lru_cache(maxsize=4096)  # per policy (frozen, hashable): a decode loop asks the same thing every step
    def splits(self, B: int, H_kv: int, capacity: int, sms: int, block_n: int = 16, cut: int = 16) -> int:
        """block_n: the split kernel's tile (keys); cut: the multiple runs are cut at (16, or
        block_n on a paged walk whose blocks hold whole tiles: _split_bounds)."""
        if capacity <= 0:
            return 1  # a table of no blocks: one empty split
        pairs = max(B * H_kv, 1)
        want = max(1, math.floor(self.programs_per_sm * sms / pairs))
        busiest = lambda s: _cdiv(pairs * s, sms) / s  # the busiest SM's programs, per split
        if busiest(want + 1) < busiest(want):
            want += 1
        top = max(1, min(want, _cdiv(capacity, self.min_split), self.max_splits))
        tiles = _cdiv(capacity, block_n)

        def used(s):  # the fewest splits whose busiest split gets as few keys as s splits give it
            return _cdiv(tiles, _cdiv(tiles, s)) if self.interleave(s) else _cdiv(capacity, _split_len(capacity, s, cut))

        def longest(u):  # tiles of the busiest of u splits
            return _cdiv(tiles, u) if self.interleave(u) else _cdiv(_split_len(capacity, u, cut), block_n)

        if top == want:
            return used(top)
        steps = lambda u: _cdiv(pairs * u, sms) * longest(u)  # on the busiest SM
        return min((used(s) for s in range(1, top + 1)), key=lambda u: (steps(u), u))

    def interleave(self, splits: int) -> bool:
        """Whether `splits` splits take the tiles in turn (True) or one run each."""
        return splits > self.interleave_above

    def fused(self, splits: int, merge_pdl: bool = False) -> bool:
        """Whether `splits` partials are merged in the split kernel (True) or by a second launch,
        which takes PDL or not (merge_pdl)."""
        return 1 < splits <= (self.fused_merge_up_to_pdl if merge_pdl else self.fused_merge_up_to)


@dataclass(frozen=True)
class DecodeConfig:
    """One tile config of the split kernel: keys per tile, warps, software-pipeline stages.
    K/V bytes in flight per program ≈ tiles ahead · 2·block_n·D·kv_bytes, tiles ahead being
    num_stages - 1 on a contiguous walk and (num_stages - 1) // 2 on a paged one (STAGES)."""

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3

    def __str__(self) -> str:
        return f"n{self.block_n}w{self.num_warps}s{self.num_stages}"

    def tiles_ahead(self, paged: bool) -> int:
        return (self.num_stages - 1) // 2 if paged else self.num_stages - 1

    def shared_bytes(self, D: int, kv_bytes: int, paged: bool) -> int:
        """About the shared memory it takes (K/V buffers; q and scratch ~4-6 KB more)."""
        return max(1, self.tiles_ahead(paged)) * 2 * self.block_n * D * kv_bytes

    def check(self):
        if self.block_n not in (16, 32, 64, 128, 256) or self.num_warps not in (1, 2, 4, 8, 16) or self.num_stages < 1:
            _fail("config", f"needs block_n in 16..256 (a power of two), num_warps in 1..16 (a power of two), num_stages >= 1; got {self!r}")


POLICY = SplitPolicy()
TILE_BYTES = 16384  # of K (and as much of V) per tile: 64 keys at D = 128 in bf16, 128 at D = 64 or in fp8/int8
# Pipeline stages by table walk: "contiguous" (one block per sequence: addresses are arithmetic)
# or "paged" (a block-table load feeds every tile's addresses). Triton's software pipeliner splits
# num_stages between that table load and the K/V loads it feeds, so a paged walk keeps only
# (num_stages - 1) // 2 K/V tiles in flight ahead of the one being used (3 stages: 1, 5: 2)
# where the contiguous walk keeps num_stages - 1 (checked in the sm_90 TTGIR: the shared-memory
# buffers). Shared memory ≈ tiles in flight · 2·TILE_BYTES; an SM has 227 KB.
STAGES = {"contiguous": 3, "paged": 5}


def runs_in_waves(programs: int, sms: int) -> bool:
    """More than 2 programs per SM: the grid no longer runs all at once (see default_config)."""
    return programs > 2 * sms


@functools.lru_cache(maxsize=None)
def default_config(D: int, kv_bytes: int, paged: bool, waves: bool = False) -> DecodeConfig:
    """The tile config when none is passed: TILE_BYTES of K per tile (16-128 keys), 4 warps, STAGES.
    waves: the grid holds more than 2 programs per SM (large batches, one split), so they run in
    waves as programs finish, not all at once: then a contiguous walk takes 128-key tiles (one
    program an SM at D = 128, each with 64 KB in flight) and a paged one 3 stages (more programs
    resident). H200, B = 64, 32/8 heads, 8K: n128w4s3 468 µs against n64w4s3's 541; paged
    n64w4s3 480 against n64w4s5's 660.

    A fixed rule, not runtime autotuning: calls of 5-40 µs are within the autotuner's timing noise,
    and on an H200 it picked configs up to 24 % slower than this rule (B = 1, 32/8 heads, 8K:
    n128w4s3 at 18.6 µs against n64w4s3's 15.0; 9/3 heads, 32K: 18.0 against 14.5). Measured
    beside the other configs (n32-n128, 4-8 warps, 2-7 stages) at B = 1-16, bf16/fp8/int8,
    contiguous and paged, the rule was the fastest or within ~5 % of it."""
    block_n = min(128, max(16, _pow2(TILE_BYTES // (D * kv_bytes))))
    if waves:
        return DecodeConfig(block_n, 4, 3) if paged else DecodeConfig(128, 4, 3)
    return DecodeConfig(block_n, 4, STAGES["paged" if paged else "contiguous"])


INTERPRET_CONFIG = DecodeConfig(16, 4, 1)  # under TRITON_INTERPRET (unless a config is passed): small tiles, fast CPU tests
# The merge loads [ROWS, MERGE_TILE // (ROWS·D), D] fp32 partials a step, MERGE_STAGES steps in
# flight (cp.async into the main loop's shared memory, free by then). The fused merge is a
# latency-bound tail (each step waits on L2), so steps are large: at D = 128, G = 4 a step is 8
# splits (32 splits: 4 steps). The price is registers for the whole kernel (sm_90, n64w4s3,
# D = 128: 84 without the merge, 128 at 2048, 167 at 4096 = still 3 programs per SM, the shared-
# memory bound of the default configs; 8192 at D = 64 also grows shared memory past the K/V buffers)
MERGE_TILE = 4096
MERGE_STAGES = 3
# The second kernel: one warp a program, MERGE_DIMS of one head (B·H·D/16 programs), up to
# MERGE_KERNEL_TILE // MERGE_DIMS splits a step (128: the default split counts at batch 1 in one
# L2 round trip where H_kv >= 3; 64 floats a thread). One warp reduces over the splits with shuffles; with 4 warps
# and a whole head a program, the cross-warp reductions through shared memory took ~0.9 µs of
# a ~1 µs merge (H200, B = 1, 32/8 heads, 8K, 32 splits: wake to output 1.07 -> 0.48 µs, %globaltimer
# stamps, experiments/probes/decode_timeline.py).
# Where that makes more than MERGE_PROGRAMS_PER_SM programs an SM (B·H·D/16 > 8·SMs: at D = 128,
# B·H > SMs), each takes twice the dims until it does not: launching 4096 one-warp programs for a
# merge of 2 splits cost 2.7 µs of 130 (B = 16, 32/8 heads, 8K; 1024 programs of 64 dims).
# Where every split fits one step (the default split counts up to 128 at D = 128 and batch 1),
# the loop is not pipelined: MERGE_STAGES' cp.async through shared memory, waited on before the
# one step it feeds, cost 0.2-0.7 µs of a batch-1 call against plain loads into registers
# (session 23, experiments/probes/decode_ab.py, same process: H200 32/8 8K 12.26 against 12.67
# µs, 9/3 8K 5.50 / 5.70, 9/3 32K (86 splits) 10.78 / 11.51; H100 2.3-7.5 % at 7 shapes).
MERGE_DIMS = 16
MERGE_PROGRAMS_PER_SM = 8
MERGE_KERNEL_TILE = 2048


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _launch_split(grid, config: DecodeConfig, *args, **meta):
    if meta["PDL"]:
        meta["launch_pdl"] = True  # a launch option (cudaLaunchAttributeProgrammaticStreamSerialization)
    if _interpreting():
        _decode_split[grid](*args, **meta, BLOCK_N=config.block_n)
    else:
        _decode_split[grid](*args, **meta, BLOCK_N=config.block_n, num_warps=config.num_warps, num_stages=config.num_stages)


def _cdiv(a: int, b: int) -> int:  # plain Python: triton's helpers cost microseconds per call
    return -(-a // b)


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


@functools.lru_cache(maxsize=None)
def _pdl_capable(device: torch.device) -> bool:
    """Programmatic dependent launch needs sm_90+ (and Triton's launch_pdl, 3.4+)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9 and hasattr(tl.extra.cuda, "gdc_wait")


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def _merge_dims(heads: int, D: int, sms: int) -> int:
    """Head dims a merge-kernel program takes (MERGE_DIMS, doubled while the programs exceed
    MERGE_PROGRAMS_PER_SM an SM)."""
    dims = min(MERGE_DIMS, D)
    while dims < D and heads * (D // dims) > MERGE_PROGRAMS_PER_SM * sms:
        dims *= 2
    return dims


def _pdl_modes(device: torch.device, interpreting: bool) -> tuple[bool, bool]:
    """(pdl, merge_pdl): whether the split kernel and the merge kernel take programmatic dependent
    launch on this device under POLICY. The merge kernel's predecessor is always our split kernel,
    so it may take it where the split kernel does not."""
    capable = not interpreting and _pdl_capable(device)
    return POLICY.pdl and capable, (POLICY.pdl or POLICY.merge_pdl) and capable


def default_fused_merge(splits: int, device: torch.device) -> bool:
    """Whether the launcher fuses the merge of `splits` partials when fused_merge is None (POLICY,
    and whether the merge kernel would take PDL on this device)."""
    return POLICY.fused(splits, _pdl_modes(torch.device(device), _interpreting())[1])


def _split_len(L: int, splits: int, cut: int = 16) -> int:
    """Keys of each run where splits take one run each, cut at multiples of `cut` (_split_bounds)."""
    return _cdiv(_cdiv(L, splits), cut) * cut


def default_num_splits(B: int, H_kv: int, capacity: int, device: torch.device, policy: SplitPolicy | None = None,
                       block_n: int = 16, cut: int = 16) -> int:
    """`policy.splits` (default: the module's POLICY) on this device's SM count, for a tile of
    block_n keys and runs cut at multiples of `cut`. The split count a launch takes depends on
    its tile: `decode_plan` asks this with the launcher's own."""
    dev = device if isinstance(device, torch.device) else torch.device(device)
    return (policy or POLICY).splits(B, H_kv, capacity, _sm_count(dev), block_n, cut)


def decode_plan(B: int, H_kv: int, capacity: int, D: int, kv_bytes: int, device: torch.device, *, paged: bool,
                block_size: int | None = None, num_splits: int | None = None, config: DecodeConfig | None = None) -> tuple[int, DecodeConfig]:
    """(splits, tile config) of the split kernel for a launch: what `paged_decode_attention` runs
    when num_splits and config are None (and it does not take the persistent kernel:
    kernels.attention_decode_hopper.plan), and what a benchmark or probe should ask to print the same.
    capacity: the block table's max_blocks · block_size; paged: a walk of more than one block per
    sequence (False: a contiguous cache viewed as one block), whose block_size is then required;
    kv_bytes: the cache's element size. The split count weighs the tile rule's tiles (runs cut at
    the tile where a paged walk's blocks hold whole tiles: _split_bounds); a grid that then runs
    in waves takes the waves tile."""
    if paged and block_size is None:
        raise ValueError("decode_plan: a paged walk needs its block_size (runs are cut at the tile where blocks hold whole tiles)")
    dev = device if isinstance(device, torch.device) else torch.device(device)
    interpreting = _interpreting()
    rule = config or (INTERPRET_CONFIG if interpreting else default_config(D, kv_bytes, paged))
    if num_splits is None:
        cut = rule.block_n if paged and block_size % rule.block_n == 0 else 16
        num_splits = default_num_splits(B, H_kv, capacity, dev, block_n=rule.block_n, cut=cut)
    if config is None and not interpreting and runs_in_waves(B * H_kv * num_splits, _sm_count(dev)):
        rule = default_config(D, kv_bytes, paged, waves=True)
    return num_splits, rule


# Arrival counters of the fused merge: one zeroed int32 buffer per device. Buffers are never
# freed (a captured CUDA graph keeps pointing at the one it was captured with), only replaced by
# a bigger one: a few KB each.
_COUNTERS: dict[torch.device, torch.Tensor] = {}
_RETIRED: list[torch.Tensor] = []


def arrival_counters(device: torch.device, n: int) -> torch.Tensor | None:
    """At least n zeroed int32 counters on `device`, reused by every fused launch (each leaves
    them zero). None while a CUDA graph is being captured and no buffer is big enough yet:
    zeroing one then would only be recorded into the graph, so the caller merges with the second
    kernel instead (run once outside the capture, as warm-up, to get the fused path)."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # one key per GPU, as tensors name it
    buf = _COUNTERS.get(device)
    if buf is not None and buf.numel() >= n:
        return buf
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return None
    if buf is not None:
        _RETIRED.append(buf)
    buf = torch.zeros(max(4096, _pow2(n)), dtype=torch.int32, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # once per buffer: zeroed before a launch on any stream reads it
    _COUNTERS[device] = buf
    return buf


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def _fail(name: str, msg: str):
    raise ValueError(f"paged_decode_attention: {name} {msg}")


def _scale_kind(name: str, s, cache: torch.Tensor, layout: KVLayout, H_kv: int, device) -> tuple[int, torch.Tensor | None, tuple]:
    """(kind, tensor, (block, head, token) strides): kind 0 none, 1 per tensor/head, 2 per token."""
    quantized = cache.dtype in QUANT_DTYPES
    if s is None:
        if quantized:
            _fail(name, f"is required for a {cache.dtype} cache (float value = stored value · scale)")
        return 0, None, (0, 0, 0)
    if not quantized:
        _fail(name, f"is only for fp8/int8 caches; this cache is {cache.dtype}")
    if not isinstance(s, torch.Tensor):
        s = torch.tensor([float(s)], dtype=torch.float32, device=device)
    if s.device != device or not s.is_floating_point():
        _fail(name, f"must be a float tensor on {device}, got {s.dtype} on {s.device}")
    if s.numel() == 1:
        return 1, s.reshape(1), (0, 0, 0)
    if s.shape == (H_kv,):
        return 1, s, (0, s.stride(0), 0)
    if s.shape == cache.shape[:-1]:
        return 2, s, layout.strides(s)
    _fail(name, f"must be a scalar, [{H_kv}] (per head) or {list(cache.shape[:-1])} (per token), got {list(s.shape)}")


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor | None,
    seq_lens: torch.Tensor,
    *,
    scale: float | None = None,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    num_splits: int | None = None,
    layout: KVLayout = KVLayout.HND,
    out: torch.Tensor | None = None,
    fused_merge: bool | None = None,
    config: DecodeConfig | None = None,
    persistent: bool | None = None,
) -> torch.Tensor:
    """Attention of one new query per sequence over its paged cache.

    q ``(B, H, D)``; k_cache/v_cache ``(N, H_kv, P, D)`` (HND) or ``(N, P, H_kv, D)`` (NHD), float
    like q or fp8 e4m3 / int8 with scales; block_table ``(B, max_blocks)`` int32, or None for a
    contiguous cache (sequence b in block b, N >= B: nothing to read before the first K/V load);
    seq_lens ``(B,)`` int32 (clamped to max_blocks·P) -> ``(B, H, D)`` in q's dtype.
    num_splits: KV-length splits (flash-decoding); default: `decode_plan`'s (POLICY, weighing the tile).
    fused_merge: merge the splits in the split kernel or in a second one (default: `default_fused_merge`).
    config: the split kernel's tile config (default: `decode_plan`'s: `default_config`).
    persistent: the persistent Hopper kernel (kernels/attention_decode_hopper.py: sm_90, a bf16/fp16
    HND cache, blocks of 16/32/64 keys, of whole 128-key tiles or one a sequence, G <= 8, D = 64/128)
    instead of the split kernel. None: while a CUDA graph is being captured, where its `plan` takes
    this call (small B·H_kv·capacity, blocks of whole tiles) and num_splits, config and fused_merge
    are not given. Not in eager calls: at these sizes they are bound by the host, and its launch (Gluon's JIT path, three TMA descriptors) costs more host
    time than the split kernel's (H100 host, B = 1, 8K: 182 µs against 112-139), where a graph
    replays it for nothing. True: always (an error names what the call lacks); False: never.
    """
    if not isinstance(layout, KVLayout):
        _fail("layout", f"must be a KVLayout (HND or NHD), got {layout!r}")
    tensors = (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("seq_lens", seq_lens)) + \
        ((("block_table", block_table),) if block_table is not None else ())
    for name, x in tensors:
        if not isinstance(x, torch.Tensor):
            _fail(name, f"must be a torch.Tensor{' (or None for a contiguous cache)' if name == 'block_table' else ''}, "
                        f"got {type(x).__name__}")
    dev = q.device
    for name, x in tensors[1:]:
        if x.device != dev:
            _fail(name, f"is on {x.device}; every input must be on q's device {dev}")
    interpreting = _interpreting()
    if dev.type != "cuda" and not interpreting:
        _fail("q", f"is on {dev}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if q.dtype not in FLOAT_DTYPES:
        _fail("q", f"has dtype {q.dtype}; supported: float16, bfloat16, float32")
    if q.dim() != 3:
        _fail("q", f"must be [B, H, D] (one new token per sequence), got shape {tuple(q.shape)}")
    B, H, D = q.shape
    if k_cache.dim() != 4:
        _fail("k_cache", f"must be 4-d ({'[N, H_kv, P, D]' if layout is KVLayout.HND else '[N, P, H_kv, D]'} for {layout.name}), got shape {tuple(k_cache.shape)}")
    if v_cache.shape != k_cache.shape or v_cache.dtype != k_cache.dtype:
        _fail("v_cache", f"must match k_cache: {tuple(k_cache.shape)} {k_cache.dtype}, got {tuple(v_cache.shape)} {v_cache.dtype}")
    if k_cache.dtype not in (q.dtype, *QUANT_DTYPES):
        _fail("k_cache", f"has dtype {k_cache.dtype}; it must be q's dtype {q.dtype}, float8_e4m3fn or int8")
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if x.stride(-1) != 1:
            _fail(name, f"must be contiguous along D (stride(-1) == 1), got strides {tuple(x.stride())}")
    N, H_kv, P, D_kv = layout.dims(k_cache)
    if D_kv != D:
        _fail("k_cache", f"head dim {D_kv} must equal q's {D}")
    if D not in (16, 32, 64, 128, 256):
        _fail("q", f"head dim D={D} is not supported; use a power of two in 16..256")
    if H_kv == 0 or H % H_kv:
        _fail("k_cache", f"has {H_kv} KV heads ({layout.name} layout); q's {H} heads must be a multiple of it")
    if block_table is None:
        if N < B:
            _fail("k_cache", f"holds {N} blocks; without a block table sequence b is block b, so it needs at least B={B}")
    elif block_table.dtype != torch.int32 or block_table.dim() != 2 or block_table.shape[0] != B:
        _fail("block_table", f"must be int32 [B={B}, max_blocks], got {block_table.dtype} {tuple(block_table.shape)}")
    if seq_lens.dtype != torch.int32 or seq_lens.shape != (B,):
        _fail("seq_lens", f"must be int32 [B={B}], got {seq_lens.dtype} {tuple(seq_lens.shape)}")
    if (block_table is not None and block_table.stride(-1) != 1) or seq_lens.stride(0) != 1:
        _fail("block_table", "and seq_lens must be contiguous along their last dim")
    if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
        _fail("num_splits", f"must be a positive int or None, got {num_splits!r}")
    if fused_merge not in (None, True, False):
        _fail("fused_merge", f"must be True, False or None (POLICY's choice), got {fused_merge!r}")
    if persistent not in (None, True, False):
        _fail("persistent", f"must be True, False or None (the dispatch rule's choice), got {persistent!r}")
    if persistent and (num_splits is not None or config is not None or fused_merge is not None):
        _fail("persistent", "is True: the persistent kernel takes its own plan; num_splits, config and fused_merge are the split kernel's")
    if config is not None:
        if not isinstance(config, DecodeConfig):
            _fail("config", f"must be a DecodeConfig or None, got {type(config).__name__}")
        config.check()
    k_kind, ks, ks_strides = _scale_kind("k_scale", k_scale, k_cache, layout, H_kv, dev)
    v_kind, vs, vs_strides = _scale_kind("v_scale", v_scale, v_cache, layout, H_kv, dev)
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != dev or out.stride(-1) != 1:
        _fail("out", f"must be {tuple(q.shape)} {q.dtype} on {dev} with stride(-1) == 1")
    if B == 0:
        return out

    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if persistent or (persistent is None and num_splits is None and config is None and fused_merge is None
                      and dev.type == "cuda" and not interpreting):
        if _persistent(q, k_cache, v_cache, block_table, seq_lens, scale, out, layout, required=bool(persistent)):
            return out
    G = H // H_kv
    cols = table_columns(block_table)
    capacity = cols * P
    one_block = cols == 1  # P is then only a bound, not compiled in (any length, one kernel)
    splits, config = decode_plan(B, H_kv, capacity, D, k_cache.element_size(), dev, paged=not one_block, block_size=P,
                                 num_splits=num_splits, config=config)
    # merge is a runtime argument (one compiled kernel for every path); unused pointers get
    # stand-ins of the right dtype (int32 counters, fp32 partials) for the same reason
    pdl, merge_pdl = _pdl_modes(dev, interpreting)
    merge, counters = 0, seq_lens  # 0: one split writes o
    if splits > 1:
        merge = 2 if (POLICY.fused(splits, merge_pdl) if fused_merge is None else fused_merge) else 1
        if merge == 2:
            counters = arrival_counters(dev, B * H_kv)
            merge, counters = (1, seq_lens) if counters is None else (2, counters)
    po, pm, pl, ml_stride = partials_buffer(B * H if merge else 1, splits, D, dev)
    rows = _pow2(G)
    ks = q if ks is None else ks
    vs = q if vs is None else vs
    _launch_split(
        (B, H_kv, splits), config,
        q, k_cache, v_cache, seq_lens if block_table is None else block_table, seq_lens, ks, vs, out, po, pm, pl, counters,
        q.stride(0), q.stride(1),
        *layout.strides(k_cache), *layout.strides(v_cache),
        0 if block_table is None else block_table.stride(0), *ks_strides, *vs_strides,
        out.stride(0), out.stride(1),
        G, capacity, scale * LOG2E, splits, ml_stride, merge,
        PAGE=1 if one_block else P, ONE_BLOCK=one_block, NO_TABLE=block_table is None, HEAD_DIM=D, G_PAD=max(16, rows),
        K_SCALE=k_kind, V_SCALE=v_kind,
        DOT_F16=k_cache.dtype == torch.float8_e4m3fn and q.dtype != torch.float32,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        ROWS=rows, MERGE_CHUNK=max(1, MERGE_TILE // (rows * D)), MERGE_STAGES=MERGE_STAGES, PDL=pdl,
        TRIGGER=pdl or (merge_pdl and merge == 1), PREFETCH=POLICY.prefetch_tiles if pdl else 0, LINE=128 // k_cache.element_size(),
        INTERLEAVE=POLICY.interleave(splits),
    )
    if merge == 1:
        launch_merge(po, pm, pl, out, splits, ml_stride)
    return out


def _persistent(q, k_cache, v_cache, block_table, seq_lens, scale: float, out, layout: KVLayout, required: bool) -> bool:
    """Run the persistent Hopper kernel where it takes this call (required: always, or an error
    naming what the call lacks); False where the split kernel should. Without required it runs
    only in a CUDA graph capture; an eager call it would take compiles and loads it (once per
    variant) and leaves the work to the split kernel, so the capture loads no module."""
    try:  # only here: Gluon's Hopper API is loaded by the calls that may take it
        from kernels import attention_decode_hopper as hopper
    except Exception as e:  # a Triton without that API (or another form of it): the split kernel, said once
        if required:
            _fail("persistent", f"is True, but the persistent kernel needs Triton's Gluon Hopper API (triton.experimental.gluon): {e!r}")
        if not _NO_GLUON:
            _NO_GLUON.append(e)
            warnings.warn(f"kernels.attention_decode: the persistent Hopper kernel is off ({e!r}); every call takes the split kernel")
        return False
    why = hopper.unsupported(q, k_cache, v_cache, block_table, layout, k_cache.dtype in QUANT_DTYPES)
    if why is not None:
        if required:
            _fail("persistent", f"is True, but the persistent kernel {why}")
        return False
    B, H, D = q.shape
    P = k_cache.shape[2]
    plan = hopper.plan(B, k_cache.shape[1], table_columns(block_table) * P, D, _sm_count(q.device), force=required,
                       box=hopper.box_keys(block_table, P))
    if plan is None:
        return False
    capturing = torch.cuda.is_current_stream_capturing()
    hopper._run(q, k_cache, v_cache, block_table, seq_lens, scale, out, plan, warm_only=not (required or capturing))
    return required or capturing


_NO_GLUON: list = []


def table_columns(block_table: torch.Tensor | None) -> int:
    """Blocks a sequence: without a table (None) sequence b is block b, one block."""
    return 1 if block_table is None else block_table.shape[1]


def ml_row_floats(splits: int) -> int:
    """Floats in a head's row of running maxima (or sums): `splits` padded to whole 128-byte lines
    (see _merge_partials)."""
    return _cdiv(splits, 32) * 32


def partials_buffer(rows_bh: int, splits: int, D: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(po, pm, pl, ml_stride) in one allocation: [rows_bh, splits, D] unnormalized outputs, then
    [rows_bh, ml_stride] running max (log2 domain) and running sum, ml_stride = ml_row_floats(splits),
    each array starting on a line."""
    ml_stride = ml_row_floats(splits)
    n_o = _cdiv(rows_bh * splits * D, 32) * 32
    n_ml = rows_bh * ml_stride
    buf = torch.empty(n_o + 2 * n_ml, dtype=torch.float32, device=device)
    return buf[:n_o], buf[n_o : n_o + n_ml], buf[n_o + n_ml :], ml_stride


def launch_merge(po, pm, pl, out: torch.Tensor, splits: int, ml_stride: int, warm_only: bool = False) -> None:
    """The second kernel: out [B, H, D] from `splits` partials per head (partials_buffer's layout),
    written by the kernel launched just before it on this stream (taking PDL where POLICY says).
    warm_only: compile and load it, launch nothing."""
    B, H, D = out.shape
    interpreting = _interpreting()
    pdl, merge_pdl = _pdl_modes(out.device, interpreting)
    dims = _merge_dims(B * H, D, _sm_count(out.device))
    args = (po, pm, pl, out, H, splits, ml_stride, out.stride(0), out.stride(1))
    chunk = max(1, min(_pow2(splits), MERGE_KERNEL_TILE // dims))
    meta = dict(HEAD_DIM=D, DIMS=dims, CHUNK=chunk, STAGES=MERGE_STAGES if splits > chunk else 1,  # one step: no pipeline
                PDL=merge_pdl, TRIGGER=pdl, **({} if interpreting else {"num_warps": 1}), **({"launch_pdl": True} if merge_pdl else {}))
    if warm_only:
        _decode_merge.warmup(*args, grid=(B, H, D // dims), **meta)._init_handles()
    else:
        _decode_merge[(B, H, D // dims)](*args, **meta)


# ---------------------------------------------------------------------------------------------
# Building paged caches
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PagedKV:
    """A paged cache ready for `paged_decode_attention(q, **paged.kwargs())`."""

    k_cache: torch.Tensor  # [N, H_kv, P, D] (HND) or [N, P, H_kv, D] (NHD)
    v_cache: torch.Tensor
    block_table: torch.Tensor | None  # [B, max_blocks] int32; None: sequence b is block b (a contiguous cache)
    seq_lens: torch.Tensor  # [B] int32
    layout: KVLayout = KVLayout.HND

    @property
    def block_size(self) -> int:
        return self.layout.dims(self.k_cache)[2]

    @property
    def capacity(self) -> int:
        """Keys a sequence can hold: max_blocks · P."""
        return table_columns(self.block_table) * self.block_size

    def kwargs(self) -> dict:
        return dict(k_cache=self.k_cache, v_cache=self.v_cache, block_table=self.block_table, seq_lens=self.seq_lens, layout=self.layout)


def paged_from_contiguous(
    k: torch.Tensor,
    v: torch.Tensor,
    seq_lens: torch.Tensor | None = None,
    *,
    block_size: int | None = None,
    layout: KVLayout = KVLayout.HND,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> PagedKV:
    """View or copy a contiguous cache k, v: [B, H_kv, S, D] as a paged one.

    block_size=None (HND only): no copy and no block table; sequence b is block b, of P = S (a
    slice of a preallocated [B, H_kv, S_max, D] buffer works too: its strides are passed through).
    block_size=P: copy into ceil(S/P) blocks per sequence, in `layout`; shuffle=True scatters
    the physical blocks in a random order, as a real allocator would after some churn.
    seq_lens: [B] int32 valid lengths (default S for every sequence).
    """
    B, H_kv, S, D = k.shape
    if v.shape != k.shape:
        raise ValueError(f"paged_from_contiguous: v shape {tuple(v.shape)} must equal k's {tuple(k.shape)}")
    if seq_lens is None:
        seq_lens = torch.full((B,), S, dtype=torch.int32, device=k.device)
    if block_size is None:
        if layout is not KVLayout.HND:
            raise ValueError("paged_from_contiguous: the zero-copy view (block_size=None) is HND; pass block_size for NHD")
        return PagedKV(k, v, None, seq_lens, layout)
    P = int(block_size)
    if P < 1:
        raise ValueError(f"paged_from_contiguous: block_size must be >= 1, got {block_size}")
    nb = _cdiv(S, P)
    pad = nb * P - S

    def to_blocks(x):  # [B, H_kv, S, D] -> [B·nb, H_kv, P, D] or [B·nb, P, H_kv, D]
        x = torch.nn.functional.pad(x, (0, 0, 0, pad)).view(B, H_kv, nb, P, D)
        x = x.permute(0, 2, 1, 3, 4) if layout is KVLayout.HND else x.permute(0, 2, 3, 1, 4)
        return x.reshape(B * nb, *x.shape[2:])

    kb, vb = to_blocks(k), to_blocks(v)
    logical = torch.arange(B * nb, device=k.device)
    phys = torch.randperm(B * nb, generator=generator).to(k.device) if shuffle else logical
    k_cache, v_cache = torch.empty_like(kb), torch.empty_like(vb)
    k_cache[phys], v_cache[phys] = kb, vb  # logical block i lives at physical phys[i]
    return PagedKV(k_cache, v_cache, phys.view(B, nb).to(torch.int32), seq_lens.to(torch.int32), layout)


def quantize_kv(x: torch.Tensor, dtype: torch.dtype, per: str = "head", layout: KVLayout = KVLayout.HND) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantization of a paged cache to fp8 e4m3 or int8 -> (values, scale).
    per: "tensor" (scale [1]), "head" ([H_kv]) or "token" (cache.shape[:-1])."""
    if dtype not in QUANT_DTYPES:
        raise ValueError(f"quantize_kv: dtype must be float8_e4m3fn or int8, got {dtype}")
    xf = x.float()
    head_dim = 1 if layout is KVLayout.HND else 2
    if per == "tensor":
        amax = xf.abs().amax().reshape(1)
        scale, bcast = amax, amax.view(1, 1, 1, 1)
    elif per == "head":
        amax = xf.abs().amax(dim=tuple(i for i in range(4) if i != head_dim))  # [H_kv]
        shape = [1, 1, 1, 1]
        shape[head_dim] = -1
        scale, bcast = amax, amax.view(shape)
    elif per == "token":
        scale = xf.abs().amax(dim=-1)  # cache.shape[:-1]
        bcast = scale[..., None]
    else:
        raise ValueError(f"quantize_kv: per must be 'tensor', 'head' or 'token', got {per!r}")
    qmax = QMAX[dtype]
    scale = (scale / qmax).clamp_min(1e-12)
    bcast = (bcast / qmax).clamp_min(1e-12)
    y = xf / bcast
    y = y.round().clamp(-qmax, qmax).to(dtype) if dtype == torch.int8 else y.clamp(-qmax, qmax).to(dtype)
    return y, scale.float().contiguous()


def dequantize_kv(x: torch.Tensor, scale, layout: KVLayout = KVLayout.HND) -> torch.Tensor:
    """float64 values of a cache (scale: None for float caches, else any form the kernel takes)."""
    xf = x.to(torch.float64)
    if scale is None:
        return xf
    s = torch.as_tensor(scale, dtype=torch.float64, device=x.device)
    if s.numel() == 1:
        return xf * s.reshape(())
    H_kv = layout.dims(x)[1]
    if s.shape == (H_kv,):
        shape = [1, 1, 1, 1]
        shape[1 if layout is KVLayout.HND else 2] = -1
        return xf * s.view(shape)
    return xf * s[..., None]


# ---------------------------------------------------------------------------------------------
# Reference: gather + eager softmax in float64
# ---------------------------------------------------------------------------------------------
def decode_reference(
    q, k_cache, v_cache, block_table, seq_lens, *, scale=None, k_scale=None, v_scale=None, layout: KVLayout = KVLayout.HND
) -> torch.Tensor:
    """[B, H, D] float64: each sequence's keys gathered through the block table (None: sequence b
    in block b), dequantized."""
    B, H, D = q.shape
    _, H_kv, P, _ = layout.dims(k_cache)
    kf, vf = dequantize_kv(k_cache, k_scale, layout), dequantize_kv(v_cache, v_scale, layout)
    if layout is KVLayout.NHD:
        kf, vf = kf.transpose(1, 2), vf.transpose(1, 2)  # -> [N, H_kv, P, D]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = torch.zeros(B, H, D, dtype=torch.float64, device=q.device)
    if block_table is None:
        block_table = torch.arange(B, dtype=torch.int32, device=q.device)[:, None]
    for b in range(B):
        L = min(int(seq_lens[b]), block_table.shape[1] * P)
        if L == 0:
            continue
        j = torch.arange(L, device=q.device)
        blk = block_table[b, j // P].long()
        k = kf[blk, :, j % P].transpose(0, 1).repeat_interleave(H // H_kv, 0)  # [H, L, D]
        v = vf[blk, :, j % P].transpose(0, 1).repeat_interleave(H // H_kv, 0)
        p = torch.softmax((k @ q[b].to(torch.float64)[:, :, None])[..., 0] * scale, dim=-1)  # [H, L]
        out[b] = (p[:, None, :] @ v)[:, 0]
    return out


# ---------------------------------------------------------------------------------------------
# Cost formulas
# ---------------------------------------------------------------------------------------------
def flops(H: int, D: int, kv_tokens: int) -> float:
    """QKᵀ and PV for one query per sequence: 4·H·D per cached token (kv_tokens = Σ seq_lens)."""
    return 4.0 * H * D * kv_tokens


def bytes_moved(B: int, H: int, H_kv: int, D: int, kv_tokens: int, kv_dtype_bytes: int = 2, q_dtype_bytes: int = 2, scale_bytes_per_token: int = 0) -> float:
    """K and V of every cached token read once (plus per-token scales), q read, o written: the
    least traffic. Not counted: block-table entries (under 1% at P >= 16) and split partials,
    B·H·splits·(D+2)·4 bytes written and read back mostly through L2 (at batch 1, 32/8 heads,
    D = 128, 8K tokens and 33 splits: 0.55 MB each way beside 33.5 MB of K and V)."""
    return float(2 * kv_tokens * H_kv * (D * kv_dtype_bytes + scale_bytes_per_token) + 2 * B * H * D * q_dtype_bytes)
