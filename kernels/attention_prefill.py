"""Prefill attention: FlashAttention-2 in Triton, beside its float64 eager reference.

    o = flash_attention(q, k, v, causal=True)        # q [B, H, T, D], k/v [B, H_kv, S, D]

One program owns BLOCK_M query rows of one (sequence, head) and streams that head's K/V tiles
(kv head = h // G) through an online softmax: a running max m, a running sum l and an unnormalized
accumulator, rescaled by exp(m_old - m_new) whenever the max grows. The [T, S] score matrix only
ever exists as one [BLOCK_M, BLOCK_N] tile in registers, so memory is O(T·D) instead of O(T·S).

The KV loop is split three ways per query block: key blocks every row sees in full (no mask
arithmetic, no bounds checks: most of the work), and the edges (the causal diagonal, the
window's lower edge, the sequence end, the attention sinks) where each score is masked.

Masking rules, in key positions (query t of a sequence with T_b queries and S_b keys sits at
position p = S_b - T_b + t: causal is bottom-right aligned as with a KV-cache prefix, matching
`lab.model.llama.AttnContext.mask`):
  causal           s <= p
  window=W         s >  p - W           (and, when not causal, s < p + W: a symmetric band)
  sinks=n          keys s < n are seen whatever the window says (StreamingLLM); causal still holds
A query row that sees no key (S_b < T_b, causal) outputs zeros, as the reference does.

Biases (added to the scaled scores, all optional, all combinable):
  alibi_slopes  [H] or [B, H]      -slope · |p - s| computed in-kernel (no [T, S] tensor)
  rel_bias      [H|1, 2R+1]        Toeplitz table: + rel_bias[h, R + clamp(s - p, -R, R)]. T5's
                                   relative buckets saturate beyond max_distance, so a table of
                                   bucket values for distances -R..R is exact and costs O(H·R).
  bias          [B|1, H|1, T, S]   a dense tensor for everything else (reads T·S values per head)

Hopper options (PrefillConfig: tma, warp_specialize, lazy_rescale, maxnreg; the interpreter runs the
first three): q/K/V through TMA descriptors, Triton's automatic warp specialization (a producer warp
group and two consumer groups, FA3's layout), FA4's lazy rescale of the accumulator, a register cap.
At D = 128 the launcher takes WARP_SPECIALIZED without a causal mask and TMA_2CTA otherwise
(GPU_CONFIGS, default_config: the numbers are there).

Two input layouts:
  padded  q [B, H, T, D],  k/v [B, H_kv, S, D]                -> o [B, H, T, D]
  varlen  q [ΣT, H, D],    k/v [ΣS, H_kv, D], cu_seqlens_q/k [B+1] int32 (FlashAttention-2's
          packed form: sequence b is rows cu[b]:cu[b+1], no padding is read or computed)
                                                               -> o [ΣT, H, D]
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # exp(x) = exp2(x · log2 e): exp2 is one MUFU op on the GPU
_LOG2E = tl.constexpr(LOG2E)  # compiled kernels may only read constexpr globals
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
RESCALE_SLACK = 8.0  # lazy rescale: a row's running max may trail its true max by this much (log2)
_RESCALE_SLACK = tl.constexpr(RESCALE_SLACK)


@triton.jit
def _load_kv(base, desc, start_n, offs_n, offs_d, stride, seq_k, MASKED: tl.constexpr, USE_TMA: tl.constexpr):
    """The [BN, D] tile of K or V at keys start_n + offs_n, zeros past seq_k."""
    if USE_TMA:  # the descriptor's shape is [seq_k, D]: the copy engine zero-fills rows past it
        tile = desc.load([start_n, 0])
    else:
        cols = start_n + offs_n
        ptrs = base + cols[:, None] * stride + offs_d[None, :]
        if MASKED:
            tile = tl.load(ptrs, mask=cols[:, None] < seq_k, other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _scores(
    qk, cols, pos_m, rows, seq_q, seq_k, qk_scale, window, sinks,
    slope, rel_base, stride_rel, rel_r, bias_base, stride_bias_t, stride_bias_s,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_ALIBI: tl.constexpr, HAS_REL: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    """Raw q·kᵀ tile [BM, BN] -> scores with the biases added and hidden keys at -inf. With a bias
    the tile comes back scaled (softmax scale · log2 e); without, the scale is left to the exp2."""
    if HAS_ALIBI or HAS_REL or HAS_BIAS:
        qk = qk * qk_scale  # biases join in the log2 domain
        if HAS_ALIBI:
            qk -= (slope * _LOG2E) * tl.abs(pos_m[:, None] - cols[None, :]).to(tl.float32)
        if HAS_REL:
            dist = tl.minimum(tl.maximum(cols[None, :] - pos_m[:, None], -rel_r), rel_r)
            qk += tl.load(rel_base + (dist + rel_r) * stride_rel).to(tl.float32) * _LOG2E
        if HAS_BIAS:
            b_ptrs = bias_base + rows[:, None] * stride_bias_t + cols[None, :] * stride_bias_s
            b_mask = (rows[:, None] < seq_q) & (cols[None, :] < seq_k)
            qk += tl.load(b_ptrs, mask=b_mask, other=0.0).to(tl.float32) * _LOG2E
    if MASKED:
        seen = cols[None, :] < seq_k
        if CAUSAL:
            seen = seen & (cols[None, :] <= pos_m[:, None])
        if HAS_WINDOW:
            in_window = cols[None, :] > pos_m[:, None] - window
            if not CAUSAL:
                in_window = in_window & (cols[None, :] < pos_m[:, None] + window)
            seen = seen & (in_window | (cols[None, :] < sinks))
        qk = tl.where(seen, qk, float("-inf"))
    return qk


@triton.jit
def _softmax_pv(acc, l_i, m_i, qk, v, qk_scale, PRESCALED: tl.constexpr, LAZY_RESCALE: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    """One online-softmax step: fold the scores qk [BM, BN] and the V tile [BN, D] into the running
    (acc, l, m). A row that has seen only -inf keeps m = -inf and subtracts 0 instead, so exp2
    gives 0, not NaN (rows with no visible key, -inf dense bias)."""
    if PRESCALED:
        m_cur = tl.maximum(m_i, tl.max(qk, 1))
    else:
        m_cur = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)  # scale > 0 commutes with max
    if LAZY_RESCALE:
        # FA4: a row's max moves only when it grew past the slack (p stays <= 2^slack: safe in fp32
        # and bf16), so after the first blocks no row moves and the BM·D rescale of acc is skipped
        m_new = tl.where(m_cur > m_i + _RESCALE_SLACK, m_cur, m_i)
    else:
        m_new = m_cur
    m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    if PRESCALED:
        p = tl.math.exp2(qk - m_sub[:, None])  # [BM, BN]
    else:
        p = tl.math.exp2(qk * qk_scale - m_sub[:, None])  # qk·scale - m is one FMA
    alpha = tl.math.exp2(m_i - m_sub)  # rescales what was accumulated under the old max
    l_i = l_i * alpha + tl.sum(p, 1)
    if LAZY_RESCALE:
        if tl.max((m_new > m_i).to(tl.int32), 0) > 0:  # one block-wide reduction per tile
            acc = acc * alpha[:, None]
    else:
        acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def _attn_tile_loop(
    acc, l_i, m_i, q,  # running state [BM, D], [BM], [BM]; q [BM, D]
    k_base, v_base, k_desc, v_desc, stride_kn, stride_vn,
    lo, hi,  # key range [lo, hi), multiples of BLOCK_N except where it ends at seq_k
    pos_m, rows, offs_n, offs_d,  # [BM] key-position of each query row, [BM] local row, [BN], [D]
    seq_q, seq_k, qk_scale, window, sinks,
    slope, rel_base, stride_rel, rel_r, bias_base, stride_bias_t, stride_bias_s,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_ALIBI: tl.constexpr, HAS_REL: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr, WARP_SPEC: tl.constexpr, LAZY_RESCALE: tl.constexpr,
):
    for start_n in tl.range(lo, hi, BLOCK_N, warp_specialize=WARP_SPEC):
        k = _load_kv(k_base, k_desc, start_n, offs_n, offs_d, stride_kn, seq_k, MASKED, USE_TMA)  # [BN, D]
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # [BM, BN] raw scores
        qk = _scores(qk, start_n + offs_n, pos_m, rows, seq_q, seq_k, qk_scale, window, sinks,
                     slope, rel_base, stride_rel, rel_r, bias_base, stride_bias_t, stride_bias_s,
                     MASKED, CAUSAL, HAS_WINDOW, HAS_ALIBI, HAS_REL, HAS_BIAS)
        v = _load_kv(v_base, v_desc, start_n, offs_n, offs_d, stride_vn, seq_k, MASKED, USE_TMA)
        acc, l_i, m_i = _softmax_pv(acc, l_i, m_i, qk, v, qk_scale, HAS_ALIBI or HAS_REL or HAS_BIAS,
                                    LAZY_RESCALE, DOT_PRECISION)
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(
    Q, K, V, O, CU_Q, CU_K, SLOPES, REL, BIAS,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_ot,
    stride_slope_b, stride_slope_h, stride_rel_h, stride_rel, rel_r,
    stride_bias_b, stride_bias_h, stride_bias_t, stride_bias_s,
    H, G, qk_scale, window, sinks, T, S, t_bucket, s_bucket, tma_ok,  # the last three only key the autotuner
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SINKS: tl.constexpr,
    HAS_ALIBI: tl.constexpr, HAS_REL: tl.constexpr, HAS_BIAS: tl.constexpr, VARLEN: tl.constexpr,
    EVEN_S: tl.constexpr,  # S a multiple of every BLOCK_N (padded layout): the last key block needs no mask
    DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_TMA: tl.constexpr, WARP_SPEC: tl.constexpr, LAZY_RESCALE: tl.constexpr,
):
    # heaviest query blocks (last rows: most keys under causal) first, to shorten the tail
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    h_kv = h // G  # GQA/MQA: the G query heads of a group read the same K/V tiles (L2 reuses them)
    if VARLEN:
        q_start = tl.load(CU_Q + b).to(tl.int64)
        seq_q = (tl.load(CU_Q + b + 1) - q_start).to(tl.int32)
        k_start = tl.load(CU_K + b).to(tl.int64)
        seq_k = (tl.load(CU_K + b + 1) - k_start).to(tl.int32)
    else:
        q_start = 0
        k_start = 0
        seq_q = T
        seq_k = S
    m0 = pid_m * BLOCK_M
    if VARLEN:
        if m0 >= seq_q:  # this sequence is shorter than the longest
            return
    b64 = b.to(tl.int64)
    q_base = Q + b64 * stride_qb + h * stride_qh + q_start * stride_qt
    k_base = K + b64 * stride_kb + h_kv * stride_kh + k_start * stride_kn
    v_base = V + b64 * stride_vb + h_kv * stride_vh + k_start * stride_vn
    o_base = O + b64 * stride_ob + h * stride_oh + q_start * stride_ot
    if USE_TMA:  # this head's keys as a [seq_k, D] tensor: one 128-byte descriptor write per program and tensor
        k_desc = tl.make_tensor_descriptor(k_base, [seq_k, HEAD_DIM], [stride_kn, 1], [BLOCK_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(v_base, [seq_k, HEAD_DIM], [stride_vn, 1], [BLOCK_N, HEAD_DIM])
    else:
        k_desc = k_base
        v_desc = v_base

    rows = m0 + tl.arange(0, BLOCK_M)  # [BM] local query rows
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    shift = seq_k - seq_q  # bottom-right alignment: query t sits at key position t + shift
    pos_m = rows + shift
    if USE_TMA:  # (Hopper warp specialization also wants q through a descriptor)
        q_desc = tl.make_tensor_descriptor(q_base, [seq_q, HEAD_DIM], [stride_qt, 1], [BLOCK_M, HEAD_DIM])
        q = q_desc.load([m0, 0])
    else:
        q = tl.load(q_base + rows[:, None] * stride_qt + offs_d[None, :], mask=rows[:, None] < seq_q, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    slope = 0.0
    if HAS_ALIBI:
        slope = tl.load(SLOPES + b * stride_slope_b + h * stride_slope_h).to(tl.float32)
    rel_base = REL + h * stride_rel_h
    bias_base = BIAS + b64 * stride_bias_b + h * stride_bias_h

    # ---- which key blocks this query block needs, and which of them need no mask ----
    p_lo = m0 + shift  # smallest query position in the block
    p_hi = m0 + BLOCK_M - 1 + shift  # largest (rows past seq_q only make the bounds conservative)
    hi = seq_k
    if CAUSAL:
        hi = tl.minimum(hi, p_hi + 1)
    if HAS_WINDOW:
        if not CAUSAL:
            hi = tl.minimum(hi, p_hi + window)
    hi = tl.maximum(hi, 0)
    lo = 0
    if HAS_WINDOW:
        lo = (tl.maximum(p_lo - window + 1, 0) // BLOCK_N) * BLOCK_N
    lo = tl.minimum(lo, hi)
    # fully visible keys: [full_lo, full_hi) seen by every row of the block
    full_lo = lo
    if HAS_WINDOW:
        full_lo = tl.cdiv(tl.maximum(p_hi - window + 1, 0), BLOCK_N) * BLOCK_N
    full_hi_key = seq_k
    if CAUSAL:
        full_hi_key = tl.minimum(full_hi_key, p_lo + 1)
    if HAS_WINDOW:
        if not CAUSAL:
            full_hi_key = tl.minimum(full_hi_key, p_lo + window)
    full_hi = (tl.maximum(full_hi_key, 0) // BLOCK_N) * BLOCK_N
    full_lo = tl.minimum(tl.maximum(full_lo, lo), hi)
    full_hi = tl.maximum(tl.minimum(full_hi, hi), full_lo)

    if WARP_SPEC:
        # Triton 3.6's Hopper warp specialization takes one loop per kernel (a second loop or an early
        # return fails the pass): every key block in one loop, masked throughout unless S is even.
        # _ws_ok keeps causal, window, sinks, biases and varlen off this path: only the sequence end
        # is ever masked here
        acc, l_i, m_i = _attn_tile_loop(
            acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, stride_kn, stride_vn, lo, hi,
            pos_m, rows, offs_n, offs_d, seq_q, seq_k, qk_scale, window, sinks,
            slope, rel_base, stride_rel, rel_r, bias_base, stride_bias_t, stride_bias_s,
            not EVEN_S, CAUSAL, HAS_WINDOW, HAS_ALIBI, HAS_REL, HAS_BIAS, BLOCK_N, DOT_PRECISION,
            USE_TMA, True, LAZY_RESCALE)
    else:
        if HAS_SINKS:  # sink keys below the window's first block, masked (they may be few)
            sink_hi = tl.minimum(tl.cdiv(tl.minimum(sinks, hi), BLOCK_N) * BLOCK_N, lo)
            acc, l_i, m_i = _attn_tile_loop(
                acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, stride_kn, stride_vn, 0, sink_hi,
                pos_m, rows, offs_n, offs_d, seq_q, seq_k, qk_scale, window, sinks,
                slope, rel_base, stride_rel, rel_r, bias_base, stride_bias_t, stride_bias_s,
                True, CAUSAL, HAS_WINDOW, HAS_ALIBI, HAS_REL, HAS_BIAS, BLOCK_N, DOT_PRECISION,
                USE_TMA, False, LAZY_RESCALE)
        acc, l_i, m_i = _attn_tile_loop(  # window's lower edge
            acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, stride_kn, stride_vn, lo, full_lo,
            pos_m, rows, offs_n, offs_d, seq_q, seq_k, qk_scale, window, sinks,
            slope, rel_base, stride_rel, rel_r, bias_base, stride_bias_t, stride_bias_s,
            True, CAUSAL, HAS_WINDOW, HAS_ALIBI, HAS_REL, HAS_BIAS, BLOCK_N, DOT_PRECISION,
            USE_TMA, False, LAZY_RESCALE)
        acc, l_i, m_i = _attn_tile_loop(  # interior: no masks
            acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, stride_kn, stride_vn, full_lo, full_hi,
            pos_m, rows, offs_n, offs_d, seq_q, seq_k, qk_scale, window, sinks,
            slope, rel_base, stride_rel, rel_r, bias_base, stride_bias_t, stride_bias_s,
            False, CAUSAL, HAS_WINDOW, HAS_ALIBI, HAS_REL, HAS_BIAS, BLOCK_N, DOT_PRECISION,
            USE_TMA, False, LAZY_RESCALE)
        acc, l_i, m_i = _attn_tile_loop(  # causal diagonal / sequence end
            acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, stride_kn, stride_vn, full_hi, hi,
            pos_m, rows, offs_n, offs_d, seq_q, seq_k, qk_scale, window, sinks,
            slope, rel_base, stride_rel, rel_r, bias_base, stride_bias_t, stride_bias_s,
            True, CAUSAL, HAS_WINDOW, HAS_ALIBI, HAS_REL, HAS_BIAS, BLOCK_N, DOT_PRECISION,
            USE_TMA, False, LAZY_RESCALE)

    l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows that saw no key: acc is 0, output 0
    o = (acc / l_i[:, None]).to(O.dtype.element_ty)
    if WARP_SPEC:  # as the tutorial's warp-specialized kernel does (rows past seq_q are clipped)
        o_desc = tl.make_tensor_descriptor(o_base, [seq_q, HEAD_DIM], [stride_ot, 1], [BLOCK_M, HEAD_DIM])
        o_desc.store([m0, 0], o)
    else:
        tl.store(o_base + rows[:, None] * stride_ot + offs_d[None, :], o, mask=rows[:, None] < seq_q)


# ---------------------------------------------------------------------------------------------
# Configs: a rule on the GPU (default_config; LAB_AUTOTUNE=1 autotunes over GPU_CONFIGS), one fixed
# small config under TRITON_INTERPRET. Set from lab.benchmarks.attention_prefill.tune().
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrefillConfig:
    """One launch config: tile sizes, warps, pipeline stages, and Hopper options (off by default).

    tma: read K/V through device-side tensor descriptors (TMA bulk copies into shared memory, rows
      past the sequence zero-filled by the copy engine) instead of per-thread pointer loads. Costs one
      128-byte descriptor write per program and tensor. Needs sm_90+ and 16-byte aligned bases and
      strides; other inputs take the pointer path.
    warp_specialize: Triton's automatic warp specialization (tl.range(..., warp_specialize=True)):
      on sm_90 a producer warp group issues the TMA copies and two consumer groups of num_warps
      warps each take half of the BLOCK_M rows (FA3's layout). Needs tma, bf16/fp16 and at most 2
      stages; only non-causal attention without window, sinks, biases or varlen (_ws_ok says why)
      is specialized, the rest runs unspecialized on 2·num_warps warps.
    lazy_rescale: FA4's conditional rescale: a row's max moves only when it grows by more than
      RESCALE_SLACK (log2), and the BLOCK_M·D multiply of the accumulator is skipped when no row moved.
    maxnreg: registers per thread cap (None: the compiler's choice).
    """

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 3
    tma: bool = False
    warp_specialize: bool = False
    lazy_rescale: bool = False
    maxnreg: int | None = None

    def __str__(self) -> str:
        flags = [n for n, on in (("tma", self.tma), ("ws", self.warp_specialize),
                                 ("lazy", self.lazy_rescale)) if on]
        reg = [f"r{self.maxnreg}"] if self.maxnreg else []
        return "+".join([f"m{self.block_m}n{self.block_n}w{self.num_warps}s{self.num_stages}"] + flags + reg)

    def check(self):
        pow2 = lambda x, lo, hi: lo <= x <= hi and x & (x - 1) == 0
        if not (pow2(self.block_m, 16, 256) and pow2(self.block_n, 16, 256) and pow2(self.num_warps, 1, 16) and self.num_stages >= 1):
            _fail("config", f"needs block_m, block_n in 16..256 and num_warps in 1..16 (powers of two), num_stages >= 1; got {self!r}")
        if self.warp_specialize and (not self.tma or self.lazy_rescale or self.num_stages > 2):
            # the producer warps issue TMA copies; a branch in the loop leaves it unspecialized; with
            # 3 stages Triton 3.6 wrote NaNs on an H200
            _fail("config", f"warp_specialize needs tma, no lazy_rescale and num_stages <= 2; got {self!r}")
        if self.maxnreg is not None and not 24 <= self.maxnreg <= 255:
            _fail("config", f"maxnreg must be in 24..255 or None, got {self.maxnreg}")

    def meta(self) -> dict:
        """The kernel's compile-time arguments."""
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, USE_TMA=self.tma, WARP_SPEC=self.warp_specialize,
                    LAZY_RESCALE=self.lazy_rescale)

    def launch_options(self) -> dict:
        opts = dict(num_warps=self.num_warps, num_stages=self.num_stages)
        return opts | ({"maxnreg": self.maxnreg} if self.maxnreg else {})

    def triton_config(self) -> triton.Config:
        return triton.Config(self.meta(), **self.launch_options())


# tune() on an H200 (bf16, B·S = 16K, D = 128, S = 4K-16K; TFLOP/s as a fraction of SDPA-cuDNN's):
# the plain 128×64, 8-warp, 3-stage tiles reach 0.79-0.82x. Capped at 128 registers with TMA loads
# and 2 stages (96 KB of shared memory), two programs share an SM, one's softmax beside the other's
# wgmma: 0.81-0.86x, causal included. Warp-specialized (a producer warp group, two consumer
# groups), non-causal: 0.88-0.90x. TMA alone (1 program per SM) or the lazy rescale alone: 3-10 %
# slower; the lazy rescale on top of TMA_2CTA: within noise.
TMA_2CTA = PrefillConfig(128, 64, 8, 2, tma=True, maxnreg=128)
WARP_SPECIALIZED = PrefillConfig(128, 128, 4, 2, tma=True, warp_specialize=True)
# What the autotuner tries: FA2 tiles (128×64-128, 8 warps, 2-3 stages; smaller ones for short
# sequences and D <= 64), then the two above (pruned where the launch cannot take them)
GPU_CONFIGS = [PrefillConfig(m, n, w, s) for m, n, w, s in
               [(128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3)]] + [TMA_2CTA, WARP_SPECIALIZED]
INTERPRET_CONFIG = PrefillConfig(16, 16, 1, 1)  # small, so CPU tests cross many block edges
_tuned = None


def _prune(configs, named_args, **kwargs):
    # tiny T wastes 128-row blocks; 128 rows × D=128 on 4 warps spills registers (warp-specialized:
    # 4 warps for each 64-row half); TMA needs aligned inputs
    T, D = named_args.get("T", 0), kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 128))
    tma_ok = named_args.get("tma_ok", 0)
    keep = [c for c in configs if not (T <= 64 and c.kwargs["BLOCK_M"] > 64)
            and not (D >= 128 and c.kwargs["BLOCK_M"] == 128 and c.num_warps == 4 and not c.kwargs["WARP_SPEC"])
            and (tma_ok or not c.kwargs["USE_TMA"]) and (_ws_ok(kwargs) or not c.kwargs["WARP_SPEC"])]
    return keep or [c for c in configs if not (c.kwargs["USE_TMA"] or c.kwargs["WARP_SPEC"])]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _autotuning() -> bool:
    """LAB_AUTOTUNE=1 autotunes over GPU_CONFIGS at the first call of each shape class; by default
    the rule (default_config) runs: on session 8's H100 the autotuned run missed a prefill goal at 9
    of 22 shapes, where the rule's tiles, timed alone, met them (results/baselines/README.md,
    "Measurement, session 8")."""
    return os.environ.get("LAB_AUTOTUNE", "0") == "1"


def default_config(D: int, T: int, warp_specialized: bool = False, biased: bool = False) -> PrefillConfig:
    """The heuristic pick when not autotuning. warp_specialized: the launch can take WARP_SPECIALIZED
    and S is a multiple of 256 (where it was timed); biased: a dense or relative bias tensor is read
    in the loop (its registers do not fit TMA_2CTA's cap)."""
    if T <= 64:
        return PrefillConfig(64, 64, 4, 3)
    if D == 128 and not biased:
        return WARP_SPECIALIZED if warp_specialized else TMA_2CTA
    return PrefillConfig(128, 64, 8, 3)


def _bucket(n: int) -> int:
    return max(int(n), 1).bit_length()  # log2 class: a new length reuses the tuning of its class


def _tma_ok(*tensors: torch.Tensor) -> bool:
    """TMA descriptors want 16-byte aligned base addresses and row strides (and sm_90+)."""
    if not _interpreting() and (not torch.cuda.is_available() or torch.cuda.get_device_capability(tensors[0].device)[0] < 9):
        return False
    return all(x.data_ptr() % 16 == 0 and all(s * x.element_size() % 16 == 0 for s in x.stride()[:-1]) for x in tensors)


def _scratch_alloc(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_allocator():
    """Device-side descriptors are written to a global scratch buffer that Triton asks its
    allocator for at launch; set ours only where nobody has set one."""
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(_scratch_alloc)


def _ws_ok(meta: dict) -> bool:
    # Triton 3.6's Hopper warp specialization wants one loop, no early return (no sinks, no varlen),
    # only descriptor loads in the loop (no bias tensors) and wgmma dots (fp32 takes FMA dots); and
    # on an H200 it got row-dependent masks and biases wrong (causal, window, ALiBi: errors ~0.3)
    # while masks on key columns alone (the sequence end) came out right
    off = ("CAUSAL", "HAS_WINDOW", "HAS_ALIBI", "VARLEN", "HAS_SINKS", "HAS_BIAS", "HAS_REL")
    return not any(meta[name] for name in off) and meta["DOT_PRECISION"] != "ieee"


def _launch(grid, *args, T: int, S: int, tma_ok: bool, config: PrefillConfig | None, **meta):
    global _tuned
    keys = (T, S, _bucket(T), _bucket(S), int(tma_ok))
    if not _interpreting() and config is None and _autotuning():
        if _tuned is None:
            # keyed also on what _prune reads: a tuned pick must not reach inputs it cannot run on
            key = ["HEAD_DIM", "CAUSAL", "HAS_WINDOW", "t_bucket", "s_bucket", "tma_ok", "EVEN_S",
                   "HAS_ALIBI", "VARLEN", "HAS_SINKS", "HAS_BIAS", "HAS_REL", "DOT_PRECISION"]
            _tuned = triton.autotune([c.triton_config() for c in GPU_CONFIGS], key=key,
                                     prune_configs_by={"early_config_prune": _prune})(_attn_fwd)
        if tma_ok and any(c.tma for c in GPU_CONFIGS):
            _ensure_allocator()
        _tuned[grid](*args, *keys, **meta)
        return
    c = config or (INTERPRET_CONFIG if _interpreting() else default_config(
        meta["HEAD_DIM"], T, tma_ok and _ws_ok(meta) and meta["EVEN_S"], meta["HAS_BIAS"] or meta["HAS_REL"]))
    if c.warp_specialize and not (tma_ok and _ws_ok(meta)):  # the two consumer warp groups' warps, unspecialized
        c = replace(c, warp_specialize=False, num_warps=2 * c.num_warps)
    if c.tma and not tma_ok:  # (a register cap set for the TMA path would spill the pointer path)
        c = replace(c, tma=False, maxnreg=None)
    if _interpreting():  # runs descriptors in numpy; warps, stages and warp specialization mean nothing there
        _attn_fwd[grid(c.meta())](*args, *keys, **meta, **c.meta())
        return
    if c.tma:
        _ensure_allocator()
    _attn_fwd[grid(c.meta())](*args, *keys, **meta, **c.meta(), **c.launch_options())


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def _fail(name: str, msg: str):
    raise ValueError(f"flash_attention: {name} {msg}")


def _check_dense_last(name: str, x: torch.Tensor):
    if x.stride(-1) != 1:
        _fail(name, f"must be contiguous along D (stride(-1) == 1), got strides {tuple(x.stride())}; pass {name}.contiguous()")


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    window: int | None = None,
    sinks: int = 0,
    alibi_slopes: torch.Tensor | None = None,
    rel_bias: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    out: torch.Tensor | None = None,
    config: PrefillConfig | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + biases, masked) · v, without materializing the scores.

    Padded: q ``(B, H, T, D)``, k/v ``(B, H_kv, S, D)`` -> ``(B, H, T, D)``.
    Varlen: q ``(ΣT, H, D)``, k/v ``(ΣS, H_kv, D)`` with ``cu_seqlens_q/k`` ``(B+1,)`` int32
    (cu_seqlens_k defaults to cu_seqlens_q) -> ``(ΣT, H, D)``; ``max_seqlen_q`` sizes the grid
    (when omitted it is read off cu_seqlens_q: one device-to-host sync).
    config: the launch config (default: default_config's rule; autotuned over GPU_CONFIGS with
    LAB_AUTOTUNE=1); a tma config on inputs TMA cannot read runs the pointer path.
    See the module docstring for causal alignment, window, sinks and the three bias forms.
    """
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            _fail(name, f"must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in SUPPORTED_DTYPES:
            _fail(name, f"has dtype {x.dtype}; supported: float16, bfloat16, float32")
        if x.dim() != (3 if varlen else 4):
            want = "[ΣT or ΣS, heads, D] (varlen)" if varlen else "[B, heads, T or S, D]"
            _fail(name, f"must be {want}, got shape {tuple(x.shape)}")
        _check_dense_last(name, x)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        _fail("k/v", f"dtypes {k.dtype}/{v.dtype} must equal q's {q.dtype}")
    if k.device != q.device or v.device != q.device:
        _fail("k/v", f"devices {k.device}/{v.device} must equal q's {q.device}")
    if q.device.type != "cuda" and not _interpreting():
        _fail("q", f"is on {q.device}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if k.shape != v.shape:
        _fail("v", f"shape {tuple(v.shape)} must equal k's {tuple(k.shape)}")

    if varlen:
        if cu_seqlens_q is None:
            _fail("cu_seqlens_q", "is required when cu_seqlens_k is given")
        cu_seqlens_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
        for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
            if cu.dtype != torch.int32 or cu.dim() != 1 or cu.device != q.device:
                _fail(name, f"must be a 1-d int32 tensor on {q.device}, got {cu.dtype} {tuple(cu.shape)} on {cu.device}")
        if cu_seqlens_q.numel() != cu_seqlens_k.numel() or cu_seqlens_q.numel() < 2:
            _fail("cu_seqlens_k", f"must have B+1 = {cu_seqlens_q.numel()} entries like cu_seqlens_q (B >= 1), got {cu_seqlens_k.numel()}")
        B = cu_seqlens_q.numel() - 1
        _, H, D = q.shape
        H_kv = k.shape[1]
        if max_seqlen_q is None:
            max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())  # host sync
        T = int(max_seqlen_q)
        S = k.shape[0]  # only an upper bound in varlen mode; the kernel reads lengths from cu_seqlens_k
        q_strides = (0, q.stride(1), q.stride(0))  # (batch, head, row): the batch offset comes from cu_seqlens
        k_strides = (0, k.stride(1), k.stride(0))
        v_strides = (0, v.stride(1), v.stride(0))
    else:
        B, H, T, D = q.shape
        _, H_kv, S, _ = k.shape
        if k.shape[0] != B:
            _fail("k", f"batch {k.shape[0]} must equal q's batch {B}")
        q_strides = (q.stride(0), q.stride(1), q.stride(2))
        k_strides = (k.stride(0), k.stride(1), k.stride(2))
        v_strides = (v.stride(0), v.stride(1), v.stride(2))
    if k.shape[-1] != D:
        _fail("k", f"head dim {k.shape[-1]} must equal q's {D}")
    if D not in SUPPORTED_HEAD_DIMS:
        _fail("q", f"head dim D={D} is not supported; use one of {SUPPORTED_HEAD_DIMS}")
    if H_kv == 0 or H % H_kv:
        _fail("k", f"has {H_kv} heads; q's {H} heads must be a multiple of it (MHA, GQA or MQA)")
    G = H // H_kv

    if window is not None and (not isinstance(window, int) or window < 1):
        _fail("window", f"must be a positive int (keys s with p - W < s), got {window!r}")
    if not isinstance(sinks, int) or sinks < 0:
        _fail("sinks", f"must be an int >= 0, got {sinks!r}")
    if sinks and window is None:
        _fail("sinks", "only mean something with a window (without one every key is seen); pass window=W")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if config is not None:
        if not isinstance(config, PrefillConfig):
            _fail("config", f"must be a PrefillConfig or None, got {type(config).__name__}")
        config.check()

    dummy = q  # stands in for absent optional pointers; never read (its flag is off)
    slopes, slope_strides = dummy, (0, 0)
    if alibi_slopes is not None:
        if alibi_slopes.device != q.device or alibi_slopes.dtype != torch.float32:
            _fail("alibi_slopes", f"must be float32 on {q.device}, got {alibi_slopes.dtype} on {alibi_slopes.device}")
        if alibi_slopes.shape == (H,):
            slopes, slope_strides = alibi_slopes, (0, alibi_slopes.stride(0))
        elif alibi_slopes.shape == (B, H):
            slopes, slope_strides = alibi_slopes, (alibi_slopes.stride(0), alibi_slopes.stride(1))
        else:
            _fail("alibi_slopes", f"must have shape ({H},) or ({B}, {H}), got {tuple(alibi_slopes.shape)}")
    rel, rel_strides, rel_r = dummy, (0, 0), 0
    if rel_bias is not None:
        if rel_bias.device != q.device or not rel_bias.is_floating_point():
            _fail("rel_bias", f"must be a float tensor on {q.device}")
        if rel_bias.dim() != 2 or rel_bias.shape[0] not in (1, H) or rel_bias.shape[1] % 2 == 0:
            _fail("rel_bias", f"must have shape ({H} or 1, 2R+1) (distances -R..R), got {tuple(rel_bias.shape)}")
        rel, rel_r = rel_bias, (rel_bias.shape[1] - 1) // 2
        rel_strides = (rel_bias.stride(0) if rel_bias.shape[0] == H else 0, rel_bias.stride(1))
    dense, bias_strides = dummy, (0, 0, 0, 0)
    if bias is not None:
        T_b = T if varlen else q.shape[2]
        S_b = int((cu_seqlens_k[1:] - cu_seqlens_k[:-1]).max()) if varlen else S
        if bias.device != q.device or not bias.is_floating_point():
            _fail("bias", f"must be a float tensor on {q.device}")
        if bias.dim() != 4 or bias.shape[0] not in (1, B) or bias.shape[1] not in (1, H) or bias.shape[2] < T_b or bias.shape[3] < S_b:
            _fail("bias", f"must have shape ({B} or 1, {H} or 1, >= {T_b}, >= {S_b}), got {tuple(bias.shape)}")
        dense = bias
        bias_strides = (bias.stride(0) if bias.shape[0] == B else 0, bias.stride(1) if bias.shape[1] == H else 0, bias.stride(2), bias.stride(3))

    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or out.stride(-1) != 1:
        _fail("out", f"must be {tuple(q.shape)} {q.dtype} on {q.device} with stride(-1) == 1, got {tuple(out.shape)} {out.dtype} on {out.device}")
    if q.numel() == 0 or T == 0:
        return out
    o_strides = (0, out.stride(1), out.stride(0)) if varlen else (out.stride(0), out.stride(1), out.stride(2))
    cu_q = cu_seqlens_q if varlen else dummy
    cu_k = cu_seqlens_k if varlen else dummy

    grid = lambda meta: (-(-T // meta["BLOCK_M"]), B * H)
    _launch(
        grid, q, k, v, out, cu_q, cu_k, slopes, rel, dense,
        *q_strides, *k_strides, *v_strides, *o_strides,
        *slope_strides, *rel_strides, rel_r, *bias_strides,
        H, G, scale * LOG2E, window or 0, sinks, T=T, S=S, tma_ok=_tma_ok(q, k, v, out), config=config,
        HEAD_DIM=D, CAUSAL=bool(causal), HAS_WINDOW=window is not None, HAS_SINKS=sinks > 0,
        HAS_ALIBI=alibi_slopes is not None, HAS_REL=rel_bias is not None, HAS_BIAS=bias is not None,
        VARLEN=varlen, EVEN_S=not varlen and S % 256 == 0, DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    return out


# ---------------------------------------------------------------------------------------------
# Reference: eager masked softmax in float64
# ---------------------------------------------------------------------------------------------
def visible_mask(T: int, S: int, *, causal: bool, window: int | None = None, sinks: int = 0, device=None) -> torch.Tensor:
    """[T, S] bool: which keys each query sees (the rules in the module docstring)."""
    p = torch.arange(T, device=device)[:, None] + (S - T)
    s = torch.arange(S, device=device)[None, :]
    seen = torch.ones(T, S, dtype=torch.bool, device=device)
    if causal:
        seen &= s <= p
    if window is not None:
        in_window = s > p - window
        if not causal:
            in_window &= s < p + window
        seen &= in_window | (s < sinks)
    return seen


def attention_reference(
    q, k, v, *, causal=True, scale=None, window=None, sinks=0, alibi_slopes=None, rel_bias=None, bias=None,
    cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
) -> torch.Tensor:
    """The plain definition in float64, same arguments and layouts as `flash_attention`
    (max_seqlen_q is accepted and ignored).
    Materializes [B, H, T, S] scores: B·H·T·S·8 bytes."""
    if cu_seqlens_q is not None:
        cu_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
        outs = []
        for b in range(cu_seqlens_q.numel() - 1):
            qs, qe, ks, ke = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
            sb = None if bias is None else bias[b if bias.shape[0] > 1 else 0][None, :, : qe - qs, : ke - ks]
            sl = None if alibi_slopes is None else (alibi_slopes[b] if alibi_slopes.dim() == 2 else alibi_slopes)
            o = attention_reference(
                q[qs:qe].transpose(0, 1)[None], k[ks:ke].transpose(0, 1)[None], v[ks:ke].transpose(0, 1)[None],
                causal=causal, scale=scale, window=window, sinks=sinks, alibi_slopes=sl, rel_bias=rel_bias, bias=sb)
            outs.append(o[0].transpose(0, 1))  # [T_b, H, D]
        return torch.cat(outs, 0)
    B, H, T, D = q.shape
    S, H_kv = k.shape[2], k.shape[1]
    f = torch.float64
    k = k.to(f).repeat_interleave(H // H_kv, dim=1)  # [B, H, S, D]
    v = v.to(f).repeat_interleave(H // H_kv, dim=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    scores = (q.to(f) @ k.transpose(-1, -2)) * scale  # [B, H, T, S]
    p = torch.arange(T, device=q.device)[:, None] + (S - T)
    s = torch.arange(S, device=q.device)[None, :]
    if alibi_slopes is not None:
        sl = alibi_slopes.to(f).reshape(-1 if alibi_slopes.dim() == 2 else 1, H, 1, 1)
        scores = scores - sl * (p - s).abs().to(f)
    if rel_bias is not None:
        R = (rel_bias.shape[1] - 1) // 2
        idx = (s - p).clamp(-R, R) + R  # [T, S]
        scores = scores + rel_bias.to(f)[:, idx][None]  # [1, H|1, T, S]
    if bias is not None:
        scores = scores + bias.to(f)[:, :, :T, :S]
    seen = visible_mask(T, S, causal=causal, window=window, sinks=sinks, device=q.device)
    scores = scores.masked_fill(~seen, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows that see no key -> 0
    return probs @ v  # [B, H, T, D] float64


def alibi_slopes_for(H: int) -> torch.Tensor:
    """The ALiBi paper's slopes: the geometric sequence 2^(-8/H · i), i = 1..H (H a power of two;
    otherwise the closest power of two's slopes plus every other slope of the next one)."""
    def pow2(n):
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]
    n = 2 ** math.floor(math.log2(H))
    slopes = pow2(n) + (pow2(2 * n)[0::2][: H - n] if n < H else [])
    return torch.tensor(slopes, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Cost formulas
# ---------------------------------------------------------------------------------------------
def visible_pairs(T: int, S: int, *, causal: bool, window: int | None = None) -> float:
    """Query-key pairs computed, counting a causal triangle as half its square (the FlashAttention
    convention: 4·B·H·T·S·D FLOPs, halved when causal and T == S). With S > T (a cache prefix)
    causal pairs are T·(S - T) + T²/2; a window caps each query at W keys."""
    if causal:
        pairs = T * max(S - T, 0) + min(T, S) ** 2 / 2
    else:
        pairs = float(T * S)
    if window is not None:
        pairs = min(pairs, float(T * window))
    return pairs


def flops(B: int, H: int, T: int, S: int, D: int, *, causal: bool = True, window: int | None = None) -> float:
    """Two matmuls (QKᵀ and PV), 2 FLOPs per multiply-add: 4·D per visible pair per head."""
    return 4.0 * B * H * D * visible_pairs(T, S, causal=causal, window=window)


def bytes_moved(B: int, H: int, H_kv: int, T: int, S: int, D: int, dtype_bytes: int = 2, bias_bytes: int = 0) -> float:
    """The least HBM traffic: q and k, v read once, o written once (plus a dense bias if any:
    pass its numel · element_size as bias_bytes). L2 re-reads of K/V across query blocks are free."""
    return float((2 * B * H * T * D + 2 * B * H_kv * S * D) * dtype_bytes + bias_bytes)
