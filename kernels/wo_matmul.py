"""Weight-only quantized matmul for small batches (M = 1 to 16), in Triton, beside its reference.

    qw = quantize_int8(w)                          # per output channel, symmetric
    qw = quantize_int4(w, group_size=128, symmetric=True)   # group-wise along K
    y  = wo_matmul(x, qw)                          # x [M, K] -> y [M, N] = x @ dequantize(qw).T

w is [N, K] as in nn.Linear. Decode is a GEMV: every weight byte is read once and used M times,
so time ≈ weight bytes / DRAM bandwidth. int8 halves and int4 quarters the bytes of bf16; the
kernel dequantizes in registers and never writes the float weight back.

Formats (QuantizedWeight):
  int8   qweight int8 [N, K]; scale [N] (float32). w ≈ q · scale[n], q in [-127, 127].
  int4   qweight uint8 [N, K/2], two 4-bit codes per byte along K: byte j of row n holds
         k = 2j in its LOW nibble and k = 2j + 1 in its HIGH nibble (codes 0..15).
         scale [N, K/G] (float16 by default), zero None or uint8 [N, K/G].
         symmetric:  w ≈ (code - 8) · scale[n, k // G]; scale = -(signed absmax) / 8, so the
                     largest-magnitude weight of a group maps exactly to code 0 (= -8) and all 16
                     levels are used (llama.cpp's Q4_0 trick).
         asymmetric: w ≈ (code - zero[n, k // G]) · scale[n, k // G]; the range [min, max] of the
                     group (widened to contain 0) is split into 15 steps, zero = round(-min/scale).

Kernels: grid (N / BLOCK_N, SPLIT_K); each program streams a [BLOCK_N, K / SPLIT_K] stripe.
  * int4, M = 1 (_int4_gemv_kernel): a GEMV reads every byte once, so it runs at DRAM speed only
    with enough loads in flight and few enough instructions per byte. The codes are read as int32
    words (8 codes, 16-byte vectors), UNROLL tiles of BLOCK_K per loop step. Tiles hold whole
    groups, viewed as [BLOCK_N, groups, words], so a group's scale broadcasts without a reshape;
    per lane acc += scale·Σ (code - zero)·x, reduced once after the loop. What it costs (ncu and
    SASS on an H200, triton 3.6): ~6 instructions per code (one LOP3 decode, one subtract, one
    FMA, the x pair to float32, addressing); the warps are mostly issue-bound (not_selected,
    math-pipe throttle), then waiting at the barriers of x's layout change through shared memory,
    which also keep ptxas from issuing more than about one tile's loads ahead.
  * int8 at M = 1 (_wo_matmul_kernel): codes times x in registers (no tensor cores: a GEMV does
    1 FLOP per weight, the ALUs keep up) into a [BLOCK_N, BLOCK_K] float32 accumulator, reduced
    and scaled once at the end.
  * M > 1 (_wo_matmul_kernel): dequantizes (code - zero)·scale one group at a time into x's
    dtype and runs tl.dot with x padded to 16 rows.
  * layout "mma" (_int4_mma_kernel, any M): the codes stored in mma.sync fragment order, so the
    weight is the A operand of m16n8k16 MMAs straight from a 16-byte load and x the B operand
    (8 rows of x per MMA): ~23 instructions per 8 codes, and batch 4-8 costs about what batch 1
    does. See the section "int4 through tensor cores" below.
Codes become floats without the quarter-rate int->float conversion: a code at bits 4j..4j+3 of a
word, OR-ed with the exponent bits of 2^(23-4j), reads as the float32 2^(23-4j) + code (one LOP3,
then one subtract takes the zero-point off; see _nibble). 16-bit x is read as int32 words of (even k,
odd k) pairs, so the nibbles are never interleaved. SPLIT_K > 1 (small N: too few programs to fill
the GPU) adds partial sums with float32 atomics into a zeroed buffer (then one cast to x's dtype).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
GROUP_SIZES = (32, 64, 128)
LAYOUTS = ("rows", "mma")
MAX_M = 16


@dataclass(frozen=True)
class QuantizedWeight:
    qweight: torch.Tensor  # int8 [N, K] | uint8 [N, K/2] (two int4 codes per byte, low nibble = even k)
    scale: torch.Tensor  # [N] (int8) | [N, K/G] (int4)
    zero: torch.Tensor | None  # None (symmetric) | uint8 [N, K/G] zero-points 0..15
    bits: int  # 8 or 4
    group_size: int  # K for int8 per-channel
    shape: tuple[int, int]  # (N, K) of the float weight
    dtype: torch.dtype  # the original weight's dtype: dequantize returns it
    layout: str = "rows"  # int4: "rows" (uint8 [N, K/2]) | "mma" (int32 words in mma.sync order, pack_mma)

    @property
    def symmetric(self) -> bool:
        return self.zero is None

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads: codes, scales and zero-points."""
        z = self.zero.numel() * self.zero.element_size() if self.zero is not None else 0
        return self.qweight.numel() * self.qweight.element_size() + self.scale.numel() * self.scale.element_size() + z

    def _map(self, fn) -> "QuantizedWeight":
        """The same weight with fn applied to each of its tensors."""
        return replace(self, qweight=fn(self.qweight), scale=fn(self.scale), zero=None if self.zero is None else fn(self.zero))

    def to(self, device) -> "QuantizedWeight":
        return self._map(lambda t: t.to(device))

    def clone(self) -> "QuantizedWeight":
        return self._map(torch.Tensor.clone)


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _wo_matmul_kernel(
    X, Wq, S, Z, Y,
    M, N, K, k_per_split,
    stride_xm, stride_wn, stride_sn, stride_zn, stride_ym,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_ZERO: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_DOT: tl.constexpr, ATOMIC: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    n_mask = offs_n < N
    offs_m = tl.arange(0, BLOCK_M)  # [BM]
    m_mask = offs_m < M
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    w_rows = Wq + offs_n.to(tl.int64)[:, None] * stride_wn  # [BN, 1]

    if USE_DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)

    if BITS == 8:
        if not USE_DOT:
            acc2 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)  # reduced over K once, at the end
        for k0 in range(k_lo, k_hi, BLOCK_K):
            k0 = tl.multiple_of(k0, BLOCK_K)  # (k_per_split is a multiple of BLOCK_K): wide loads
            kk = k0 + tl.arange(0, BLOCK_K)  # [BK]
            k_mask = kk < k_hi
            q = tl.load(w_rows + kk[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0)  # int8 [BN, BK]
            if USE_DOT:
                x = tl.load(X + offs_m[:, None] * stride_xm + kk[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
                acc = tl.dot(x, tl.trans(q.to(x.dtype)), acc, input_precision=DOT_PRECISION)  # int8 is exact in bf16/fp16
            else:
                x = tl.load(X + kk, mask=k_mask, other=0.0).to(tl.float32)  # [BK]
                # int8 -> float32 by the 2^23 trick (q + 128 in the mantissa): exact, and full-rate
                # integer/float ops instead of a quarter-rate int->float conversion per weight
                qf = (((q.to(tl.int32) + 128) | 0x4B000000).to(tl.float32, bitcast=True) - 8388736.0)
                acc2 += qf * x[None, :]
        s = tl.load(S + offs_n * stride_sn, mask=n_mask, other=0.0).to(tl.float32)  # [BN] per channel
        if USE_DOT:
            acc = acc * s[None, :]
        else:
            acc = (tl.sum(acc2, axis=1) * s)[None, :]  # [1, BN]
    else:
        # int4: a tile is GPT whole groups of GROUP k (HB = GROUP/2 bytes a row each), so a
        # group's scale and zero-point broadcast over its bytes without any reshape. Codes
        # become floats with the 2^23 trick: (c | 0x4B000000) read as float32 is 2^23 + c,
        # so one integer OR and one float subtract give c - zero exactly (no int->float op,
        # which runs at a quarter of the FMA rate).
        HB: tl.constexpr = GROUP // 2
        GPT: tl.constexpr = BLOCK_K // GROUP
        if USE_DOT:
            jj = tl.arange(0, HB)
            for k0 in range(k_lo, k_hi, BLOCK_K):
                k0 = tl.multiple_of(k0, BLOCK_K)
                for gg in tl.static_range(GPT):
                    kg = k0 + gg * GROUP  # first k of this group
                    ok = (kg + 2 * jj) < k_hi  # [HB]: the whole group, or none of it
                    byte = tl.load(Wq + offs_n.to(tl.int64)[None, :] * stride_wn + (kg // 2 + jj)[:, None],
                                   mask=n_mask[None, :] & ok[:, None], other=0).to(tl.int32)  # [HB, BN]: W^T
                    g_ok = n_mask & (kg + tl.zeros_like(offs_n) < k_hi)  # (a vector: the interpreter wants one)
                    s = tl.load(S + offs_n * stride_sn + kg // GROUP, mask=g_ok, other=0.0).to(tl.float32)  # [BN]
                    if HAS_ZERO:
                        z = tl.load(Z + offs_n * stride_zn + kg // GROUP, mask=g_ok, other=0).to(tl.float32)
                    else:
                        z = tl.full([BLOCK_N], 8.0, tl.float32)
                    zb = (z + 8388608.0)[None, :]
                    w_lo = ((((byte & 0xF) | 0x4B000000).to(tl.float32, bitcast=True) - zb) * s[None, :])
                    w_hi = ((((byte >> 4) | 0x4B000000).to(tl.float32, bitcast=True) - zb) * s[None, :])
                    xm = m_mask[:, None] & ok[None, :]
                    xe = tl.load(X + offs_m[:, None] * stride_xm + (kg + 2 * jj)[None, :], mask=xm, other=0.0)  # [BM, HB]
                    xo = tl.load(X + offs_m[:, None] * stride_xm + (kg + 2 * jj + 1)[None, :], mask=xm, other=0.0)
                    acc = tl.dot(xe, w_lo.to(xe.dtype), acc, input_precision=DOT_PRECISION)
                    acc = tl.dot(xo, w_hi.to(xo.dtype), acc, input_precision=DOT_PRECISION)
        else:
            tl.static_assert(False, "int4 at M = 1 runs _int4_gemv_kernel")

    out_m = offs_m if USE_DOT else tl.arange(0, 1)  # (BLOCK_M rows of x on the tl.dot path)
    y_ptrs = Y + out_m[:, None] * stride_ym + offs_n[None, :]
    y_mask = (out_m[:, None] < M) & n_mask[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptrs, acc, mask=y_mask)  # float32 partial sums over K splits
    else:
        tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=y_mask)


@triton.jit
def _nibble(word, word_hi, i: tl.constexpr, zero, LOP3: tl.constexpr):
    """Code i of each int32 word (k = 8w + i) minus `zero`, as float32, exactly: see the caller."""
    J: tl.constexpr = i - 3 * (i // 5)  # nibbles 5..7 are nibbles 2..4 of word >> 12
    src = word if i < 5 else word_hi
    mask: tl.constexpr = 15 << (4 * J)
    magic: tl.constexpr = (150 - 4 * J) << 23  # the bits of 2^(23-4J) (biased exponent 150 - 4J)
    if LOP3:  # ptxas splits (src & mask) | magic into two LOP3s (two immediates); one, with magic in a register
        bits = tl.inline_asm_elementwise("lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,r,r",  # 0xEA: (a & b) | c
                                         [src, tl.full(src.shape, mask, tl.int32), tl.full(src.shape, magic, tl.int32)],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:  # the interpreter has no inline PTX
        bits = (src & mask) | magic
    return bits.to(tl.float32, bitcast=True) - (zero + (1 << (23 - 4 * J)))


@triton.jit
def _int4_gemv_kernel(
    X, W32, S, Z, Y,
    N, K, k_per_split,
    stride_wn, stride_sn, stride_zn,
    GROUP: tl.constexpr, HAS_ZERO: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UNROLL: tl.constexpr,
    X_WORDS: tl.constexpr, X_VEC: tl.constexpr, ATOMIC: tl.constexpr, LOP3: tl.constexpr,
):
    """int4 at M = 1: y[n] = Σ_k (code - zero)·scale·x[k] over a [BLOCK_N, k_per_split] stripe.

    Bound by bytes in flight, not by arithmetic: a GEMV has no reuse, so DRAM bandwidth is reached
    only with ~40-60 KB of loads outstanding per SM (Little's law at ~1 µs latency). So the codes
    are read as int32 words (8 codes, 16-byte vectors of 4 words per thread) and UNROLL tiles of
    BLOCK_K are unrolled with no dependency between their loads, so that they can all be issued
    before the first one is used (a plain loop would wait on each tile in turn; Triton pipelines
    only loads that feed tl.dot). ptxas decides: at its ~59 registers it issues each tile's load
    after the previous tile's FMAs; a register cap (maxnreg 128-255) hoists some of them, and
    changed the time by 0-9 % (H200, session 6), so none is set. Word w of a row holds k = 8w + i
    in nibble i (bits 4i..4i+3: the byte layout read little-endian), so the x values a word needs
    are x words 4w..4w+3 when x is read as (even k, odd k) pairs."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    WPG: tl.constexpr = GROUP // 8  # int32 words per group
    GPT: tl.constexpr = BLOCK_K // GROUP  # whole groups per tile: a scale broadcasts without a reshape
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    rows = W32 + offs_n.to(tl.int64)[:, None, None] * stride_wn  # [BN, 1, 1]
    gi = tl.arange(0, GPT)[None, :, None]
    wi = tl.arange(0, WPG)[None, None, :]
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    acc = tl.zeros([BLOCK_N, GPT, WPG], dtype=tl.float32)  # per lane; reduced once at the end
    for k_outer in range(k_lo, k_hi, BLOCK_K * UNROLL):
        for u in tl.static_range(UNROLL):
            k0 = tl.multiple_of(k_outer + u * BLOCK_K, BLOCK_K)
            g = k0 // GROUP + tl.arange(0, GPT)  # [GPT] group index along the row
            g_ok = g * GROUP < k_hi  # K is a multiple of GROUP: a group is all in or all out
            w_idx = k0 // 8 + gi * WPG + wi  # [1, GPT, WPG] word index along the row
            word = tl.load(rows + w_idx, mask=n_mask[:, None, None] & g_ok[None, :, None], other=0,
                           eviction_policy="evict_first")  # read once: keep L2 for x and the outputs
            gmask = n_mask[:, None] & g_ok[None, :]
            s = tl.load(S + offs_n[:, None] * stride_sn + g[None, :], mask=gmask, other=0.0).to(tl.float32)  # [BN, GPT]
            if HAS_ZERO:
                z = tl.load(Z + offs_n[:, None] * stride_zn + g[None, :], mask=gmask, other=0).to(tl.float32)[:, :, None]
            else:
                z = 8.0
            # code -> float without the quarter-rate int->float op, in ONE logic op per code:
            # nibble j sits at bits 4j..4j+3, so (word & 0xF<<4j) | bits(2^(23-4j)) read as
            # float32 is 2^(23-4j) + c exactly (those bits have weight 1 at that exponent); one
            # subtract of 2^(23-4j) + zero gives c - zero. Nibbles 5..7 would reach the exponent
            # bits, so they are read from word >> 12 as nibbles 2..4 (one shift per word).
            word_hi = word >> 12
            t = tl.zeros([BLOCK_N, GPT, WPG], dtype=tl.float32)
            xm = g_ok[None, :, None]
            if X_VEC:
                # the 4 x words of each code word in ONE 16-byte load, then split in registers:
                # four loads strided by 4 words would each touch 16 cache lines per warp
                x4 = tl.load(X + 4 * w_idx[:, :, :, None] + tl.arange(0, 4)[None, None, None, :],
                             mask=xm[:, :, :, None], other=0)  # [1, GPT, WPG, 4]
                x02, x13 = tl.split(tl.reshape(x4, [1, GPT, WPG, 2, 2]))
                x0, x2 = tl.split(x02)
                x1, x3 = tl.split(x13)
            for b in tl.static_range(4):  # byte b of each word: k = 8w + 2b (low nibble), 8w + 2b + 1
                if X_WORDS != 0:
                    if X_VEC:
                        xw = x0 if b == 0 else (x1 if b == 1 else (x2 if b == 2 else x3))
                    else:
                        xw = tl.load(X + 4 * w_idx + b, mask=xm, other=0)
                    if X_WORDS == 1:  # bf16 pairs read as int32: bf16 -> float32 is a shift
                        xe = (xw << 16).to(tl.float32, bitcast=True)
                        xo = (xw & -65536).to(tl.float32, bitcast=True)
                    else:  # fp16 pairs read as int32
                        xe = (xw & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
                        xo = (xw >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
                else:  # float32 (or unaligned) x: two strided loads
                    xe = tl.load(X + 8 * w_idx + 2 * b, mask=xm, other=0.0).to(tl.float32)
                    xo = tl.load(X + 8 * w_idx + 2 * b + 1, mask=xm, other=0.0).to(tl.float32)
                # separate updates: two FFMAs (t + (lo·xe + hi·xo) compiles to FMUL, FFMA, FADD)
                t = t + _nibble(word, word_hi, 2 * b, z, LOP3) * xe
                t = t + _nibble(word, word_hi, 2 * b + 1, z, LOP3) * xo
            acc += s[:, :, None] * t
    y = tl.sum(tl.sum(acc, axis=2), axis=1)  # [BN]
    if ATOMIC:
        tl.atomic_add(Y + offs_n, y, mask=n_mask)  # float32 partial sums over K splits
    else:
        tl.store(Y + offs_n, y.to(Y.dtype.element_ty), mask=n_mask)


# ---------------------------------------------------------------------------------------------
# int4 through tensor cores: the "mma" layout
# ---------------------------------------------------------------------------------------------
# One mma.sync.m16n8k16 takes a 16×16 weight tile as its A operand: lane l = 4g + t holds rows
# g and g + 8 at 4 k each, 8 codes, i.e. exactly one int32 word of int4 codes. pack_mma stores
# the codes in that order, so a lane's 16-byte load is the A fragments of 4 MMAs and nothing is
# rearranged on the GPU (Marlin's idea). x is the B operand (k16 × n8): column g is row g of x,
# so one MMA serves M = 1..8 (16: two MMAs), columns past M wasted (they repeat x's last row and
# are never stored). The MMA's k order is ours
# to choose as long as A and B agree: slots (2t, 2t+1, 2t+8, 2t+9) hold k = 4t..4t+3 of the 16,
# so a lane's B fragment is 4 consecutive x values, one 8-byte load.
#
# Word j of lane (g, t) in 64-wide chunk c of 16-row tile r covers 4 consecutive k from
#   kw = 16t + 4j (groups of 64, 128: a lane's x is 16 consecutive values, two 16-byte loads)
#   kw = 16j + 4t (groups of 32: each MMA stays inside one group, so one scale applies to it)
# and nibble i (bits 4i..4i+3) holds row 16r + g + 8·(i & 1), k = 64c + kw + _NIBBLE_K[i]:
# word & 0x000F000F is row g at (k, k+1) as the two halves of A register a0, word >> 4 the same
# for row g + 8 (a1), >> 8 row g at (k+2, k+3) (a2), >> 12 row g + 8 (a3).
MMA_ROWS, MMA_K = 16, 64  # a tile of rows, a chunk of k: one 16-byte load per lane
MMA_N = 8  # rows of x one MMA multiplies (its n)
_NIBBLE_K = (0, 0, 2, 2, 1, 1, 3, 3)


def _mma_view(c: torch.Tensor, group_size: int) -> torch.Tensor:
    """[nt·16, kc·64] -> (tile, h, g, chunk, j, t, k offset) for either k order."""
    nt, kc = c.shape[0] // MMA_ROWS, c.shape[1] // MMA_K
    if group_size >= 64:  # k = 64c + 16t + 4j + r
        return c.view(nt, 2, 8, kc, 4, 4, 4).transpose(4, 5)
    return c.view(nt, 2, 8, kc, 4, 4, 4)  # k = 64c + 16j + 4t + r


def pack_mma(codes: torch.Tensor, group_size: int) -> torch.Tensor:
    """int4 codes uint8 [N, K] -> int32 [ceil(N/16), ceil(K/64), 32, 4] in mma.sync fragment
    order (see above). Padding rows and k hold code 8; the kernel never stores padded rows and
    multiplies padded k by x = 0."""
    N, K = codes.shape
    nt, kc = -(-N // MMA_ROWS), -(-K // MMA_K)
    c = torch.full((nt * MMA_ROWS, kc * MMA_K), 8, dtype=torch.int64, device=codes.device)
    c[:N, :K] = codes
    c = _mma_view(c, group_size)
    words = torch.zeros((nt, kc, 8, 4, 4), dtype=torch.int64, device=codes.device)  # (tile, chunk, g, t, j)
    for i, r in enumerate(_NIBBLE_K):
        words |= c[:, i & 1, :, :, :, :, r].permute(0, 2, 1, 4, 3) << (4 * i)
    words = torch.where(words >= 2**31, words - 2**32, words)  # the top nibble lands in the sign bit
    return words.to(torch.int32).view(nt, kc, 32, 4).contiguous()


def unpack_mma(words: torch.Tensor, N: int, K: int, group_size: int) -> torch.Tensor:
    """pack_mma's inverse: int32 [N/16, K/64, 32, 4] -> codes uint8 [N, K]."""
    nt, kc = words.shape[:2]
    w = words.to(torch.int64).view(nt, kc, 8, 4, 4) & 0xFFFFFFFF  # (tile, chunk, g, t, j)
    c = torch.empty((nt * MMA_ROWS, kc * MMA_K), dtype=torch.int64, device=words.device)
    cv = _mma_view(c, group_size)
    for i, r in enumerate(_NIBBLE_K):
        cv[:, i & 1, :, :, :, :, r] = ((w >> (4 * i)) & 0xF).permute(0, 2, 1, 4, 3)
    return c[:N, :K].to(torch.uint8)


# x's dtype -> (mma type, the bits of 2^e whose ulp is 1 (128 in bf16, 1024 in fp16), 1.0 × 2)
_MMA_TYPES = {1: ("bf16", 0x4300, 0x3F803F80), 2: ("f16", 0x6400, 0x3C003C00)}


@functools.lru_cache(maxsize=None)
def _mma_asm(x_kind: int, cols: tuple[int, ...], words: int = 1, halves: int = 1, x_lanes: bool = False) -> tuple[str, str]:
    """PTX for `words` code words of a lane (1, or the 4 of a chunk when they share a group: groups
    of 64 and 128). Per word, 3 shifts and 4 LOP3s make (magic + code) pairs and one packed FMA
    each takes (magic + zero) off (exact: small integers); then mma.sync with x as B, once per half
    of x's rows (halves = 2 for M = 9..16: rows g and g + 8 of x, one dequantized A for both),
    the words' MMAs chained through their accumulators (C = the previous D, C = 0 first); last,
    the group scale in float32 onto the accumulators `cols` of each half (0..3: c0..c3 of the
    m16n8 tile; at M = 1 only c0 and c2, column 0, are worth an FMA). Chaining 4 words saves 6
    FFMAs a chunk at M = 1 (sm_90 SASS: 416 instructions a step against 456, 87 registers against
    112). Operands: the outputs (cols of half 0, then of half 1), then the words, x per half and
    word (int64: b0 = x[k], x[k+1], b1 = x[k+2], x[k+3]), s_lo, s_hi, the zero pair of row g and
    of g + 8, the magic pair, the one pair, and the accumulators' old values.
    x_lanes (M = 1, the 4 words of a groups-of-64/128 chunk): x comes as ONE 32-bit word a lane
    instead, lane L holding the chunk's x words 2L, 2L + 1 (k = 2L, 2L + 1), and a second operand
    8t; each MMA's b0, b1 are shuffled in from lanes 8t + 2j, 8t + 2j + 1 (the lane's x is k =
    16t..16t + 15). At M = 1 every g of a t reads the same x, so this holds a chunk's x in 1
    register a lane instead of 8, for 8 shuffles a chunk."""
    ty, _, _ = _MMA_TYPES[x_kind]
    assert not x_lanes or (halves == 1 and words == 4), "x_lanes: one half of x, the 4 words of a chunk"
    n = len(cols) * halves
    W = n
    X = W + words  # x of half h, word j: X + h·words + j (x_lanes: the lane's word, then 8t)
    x_ops = ["r", "r"] if x_lanes else ["l"] * (halves * words)
    SLO, SHI, ZLO, ZHI, MAGIC, ONE = range(X + len(x_ops), X + len(x_ops) + 6)
    ACC = ONE + 1
    lines = ["{", ".reg .b32 q1, q2, q3, a0, a1, a2, a3, b0, b1, zr, src;", ".reg .f32 d0, d1, d2, d3, e0, e1, e2, e3;",
             "mov.b32 zr, 0;"]
    for j in range(words):
        w = f"${W + j}"
        lines += [
            f"shr.u32 q1, {w}, 4;", f"shr.u32 q2, {w}, 8;", f"shr.u32 q3, {w}, 12;",
            f"lop3.b32 a0, {w}, 0x000F000F, ${MAGIC}, 0xEA;",  # 0xEA: (a & b) | c
            f"lop3.b32 a1, q1, 0x000F000F, ${MAGIC}, 0xEA;",
            f"lop3.b32 a2, q2, 0x000F000F, ${MAGIC}, 0xEA;",
            f"lop3.b32 a3, q3, 0x000F000F, ${MAGIC}, 0xEA;",
            f"fma.rn.{ty}x2 a0, a0, ${ONE}, ${ZLO};", f"fma.rn.{ty}x2 a1, a1, ${ONE}, ${ZHI};",
            f"fma.rn.{ty}x2 a2, a2, ${ONE}, ${ZLO};", f"fma.rn.{ty}x2 a3, a3, ${ONE}, ${ZHI};",
        ]
        for h, d in zip(range(halves), "de"):
            c = "{zr, zr, zr, zr}" if j == 0 else f"{{{d}0, {d}1, {d}2, {d}3}}"
            if x_lanes:
                for b in range(2):
                    lines += [f"add.u32 src, ${X + 1}, {2 * j + b};", f"shfl.sync.idx.b32 b{b}, ${X}, src, 0x1f, 0xffffffff;"]
            else:
                lines.append(f"mov.b64 {{b0, b1}}, ${X + h * words + j};")
            lines += [f"mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{{d}0, {d}1, {d}2, {d}3}}, {{a0, a1, a2, a3}}, {{b0, b1}}, {c};"]
    o = 0
    for d in "de"[:halves]:
        for c in cols:
            lines.append(f"fma.rn.f32 ${o}, {d}{c}, ${SLO if c < 2 else SHI}, ${ACC + o};")
            o += 1
    lines.append("}")
    return "\n".join(lines), ",".join(["=f"] * n + ["r"] * words + x_ops + ["f", "f", "r", "r", "r", "r"] + ["f"] * n)


# MmaConfig.stagger: the warp (%tid.x / 32) spins on %clock for warp·$1 clocks, then returns 0
_STAGGER_WAIT = ("{ .reg .u32 t0, t1, d, w; .reg .pred p; mov.u32 w, %tid.x; shr.u32 w, w, 5; mul.lo.u32 w, w, $1; "
                 "mov.u32 t0, %clock; SPIN${:uid}: mov.u32 t1, %clock; sub.u32 d, t1, t0; setp.lt.u32 p, d, w; @p bra SPIN${:uid}; "
                 "mov.u32 $0, 0; }")


def _m1_sum_asm(row_tiles: int, k_warps: int) -> str:
    """PTX for the cross-warp sum at M = 1 (one output column: c0 and c2 of the lanes with t = 0),
    operands $1 = c0 (row g), $2 = c2 (row g + 8) of the thread's warp. Each such lane writes its
    two values to a shared [warps, 16] array, one barrier, and every thread j sums row j of the
    program's 16·row_tiles (threads past them repeat the last row; the store masks them) over the
    k_warps warps of its tile, all loads first, in a pairwise tree, into $0. Triton's tl.sum over
    the warps took 5 barriers, 4 shared round trips and 6 shuffles for the two columns: ~0.38 µs
    from a program's last warp to its sum at 4096² (experiments/probes/int4_timeline.py, H200,
    session 29). Assumes one element a thread (the accumulators' [warps·32] layout): the thread's
    index is %tid.x."""
    vals = [f"v{k}" for k in range(k_warps)]
    lines = ["{", f".shared .align 4 .f32 red${{:uid}}[{row_tiles * k_warps * 16}];", ".reg .u32 e, w, g, b, j;", ".reg .pred p;",
             f".reg .f32 {', '.join(vals)};",
             "mov.u32 e, %tid.x;", "shr.u32 w, e, 5;", "and.b32 g, e, 3;", "setp.eq.u32 p, g, 0;",  # t = 0: column 0
             "shr.u32 g, e, 2;", "and.b32 g, g, 7;", "mad.lo.u32 b, w, 16, g;", "shl.b32 b, b, 2;", "mov.u32 j, red${:uid};",
             "add.u32 b, b, j;", "@p st.shared.f32 [b], $1;", "@p st.shared.f32 [b+32], $2;", "bar.sync 0;",
             f"min.u32 e, e, {16 * row_tiles - 1};", "shr.u32 b, e, 4;", f"mul.lo.u32 b, b, {16 * (k_warps - 1)};",  # + tile's first warp
             "add.u32 b, b, e;", "shl.b32 b, b, 2;", "add.u32 j, j, b;"]
    lines += [f"ld.shared.f32 v{k}, [j+{64 * k}];" for k in range(k_warps)]
    while len(vals) > 1:  # pairwise: log2(k_warps) dependent adds
        lines += [f"add.f32 {a}, {a}, {b};" for a, b in zip(vals[::2], vals[1::2])]
        vals = vals[::2]
    return " ".join(lines + ["mov.f32 $0, v0;", "}"])


@triton.jit
def _shfl(v, src):
    """v of lane `src` (per thread; every lane of the warp takes part)."""
    return tl.inline_asm_elementwise("shfl.sync.idx.b32 $0, $1, $2, 0x1f, 0xffffffff;", "=r,r,r", [v, src],
                                     dtype=v.dtype, is_pure=True, pack=1)


@triton.jit
def _columns(t, T: tl.constexpr):
    """[T, 4] -> its 4 columns as [T] tensors (each thread's own registers: no data moves)."""
    a, b = tl.split(tl.reshape(t, [T, 2, 2]))
    c0, c2 = tl.split(a)
    c1, c3 = tl.split(b)
    return c0, c1, c2, c3


@triton.jit
def _int4_mma_kernel(
    X, Wt, S, Z, Y,
    M, N, K, n_tiles, n_chunks,
    stride_xm, stride_sn, stride_zn, stride_ym,
    GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, ROW_TILES: tl.constexpr, K_WARPS: tl.constexpr,
    UNROLL: tl.constexpr, BLOCK_M: tl.constexpr, X_KIND: tl.constexpr, EVEN: tl.constexpr, CHAIN: tl.constexpr,
    HALVES: tl.constexpr, ASM: tl.constexpr, CONSTRAINTS: tl.constexpr, ALL_COLS: tl.constexpr,
    ZERO_BITS: tl.constexpr, MAGIC: tl.constexpr, ONE: tl.constexpr, X_LANES: tl.constexpr,
    STAGGER: tl.constexpr, STAGGER_WAIT: tl.constexpr, SUM_ASM: tl.constexpr,
):
    """int4 in the "mma" layout, M = 1..16: y[m, n] = Σ_k (code - zero)·scale·x[m, k].

    A program owns ROW_TILES tiles of 16 rows; warp w streams tile w // K_WARPS over the chunks
    c ≡ w (mod K_WARPS) (neighbouring warps read neighbouring 512-byte blocks), UNROLL chunks a
    step, their loads issued before the first MMA, at constant offsets from pointers carried
    through the loop (no address arithmetic per load). That order holds only under a register cap
    (MmaConfig.maxnreg, 128 by default): left to itself ptxas (Triton 3.6, sm_90) keeps ~58
    registers by issuing each chunk's load after the MMA before it, one 512-byte load in flight
    per warp, ~8 KB an SM: 4096² ran at 1.3 TB/s (6.4 µs; capped, 5.4). EVEN: no tile or chunk
    is partial, so nothing is masked. Tensors are [threads, 4 words]: thread i holds the
    fragments of its lane. X_KIND 1/2 (bf16/fp16 x) run mma.sync through inline PTX (_mma_asm):
    one asm a chunk with CHAIN (groups of 64 and 128, whose chunk lies in one group: its 4 MMAs
    chained, one scale FFMA per column; with the tiling re-measured for it, 14336×4096 13.6 ->
    11.7 µs, 4096² unchanged), else one a word. HALVES = 2 (M = 9..16): each dequantized word
    multiplies rows 0..7 and 8..15 of x, so the weight is read and dequantized once, not once per
    8 rows. X_LANES (M = 1 with CHAIN): a chunk's x is one 4-byte load a lane (lane L: k = 2L,
    2L + 1), shuffled inside the asm to the lanes that multiply it, and a pair of chunks' 32
    scales one 2-byte load a lane, shuffled too: x holds 1 register a chunk instead of 8, so the
    weight's loads fit under a register cap at 4 warps a tile (~70 registers at 4 chunks a step,
    against 87; 8 more SHFL a chunk). STAGGER (MmaConfig.stagger; clocks): warp w spins
    w·STAGGER clocks before its first loads. Issued all at once, the warps' loads interleave in
    the memory system, and a warp's math waits for its last load (a thread's 10-28 loads of a
    step share 6 scoreboards), which lands near the end of the SM's data: all the math ran after
    it. Paced, the warps' data lands one warp after another, each computing while the next one's
    arrives. SUM_ASM (M = 1 with CHAIN, else ""): the warps' partial sums meet in shared memory
    behind one barrier (_m1_sum_asm) instead of tl.sum's five: 0.38 -> 0.13 µs from a program's
    last warp to its sum at 4096², 1-9 % of a call (H200). X_KIND 0 (float32 x, or the
    interpreter) runs the same layout in plain Triton: each code times its x, then the sum over
    the lanes that share a row."""
    NW: tl.constexpr = ROW_TILES * K_WARPS
    XT: tl.constexpr = GROUP >= 64  # pack_mma's k order: see _mma_view
    # one flat thread axis (warp-major): with a separate warp axis the coalescer may spread lanes
    # over it, and every load would be shuffled through shared memory to the asm's layout
    pid = tl.program_id(0)
    tid = tl.arange(0, NW * 32)[:, None]
    ji = tl.arange(0, 4)[None, :]
    warp = tid // 32
    lane = tid % 32
    tile = pid * ROW_TILES + warp // K_WARPS  # [T, 1]
    first = warp % K_WARPS  # the warp's first chunk
    tile_ok = tile < n_tiles
    g = lane // 4
    t = lane % 4
    row_lo = tile * 16 + g  # row_lo + 8 is the lane's other row
    kw = (16 * t + 4 * ji) if XT else (16 * ji + 4 * t)  # [T, 4]: first k of each word within a chunk
    JG: tl.constexpr = 1 if XT else 4  # groups of 32 change within a chunk
    jg = tl.arange(0, JG)[None, :]
    wp = Wt + tile.to(tl.int64) * (n_chunks * 128) + first * 128 + lane * 4 + ji  # [T, 4] words of chunk `first`
    if X_KIND != 0:
        # lanes past M read x's last row: their B columns only reach outputs that are not stored
        xp = X + tl.minimum(g, M - 1) * stride_xm + first * 16 + kw // 4  # int64 words of 4 values
        if HALVES == 2:
            dx2 = (tl.minimum(g + 8, M - 1) - tl.minimum(g, M - 1)) * stride_xm  # to rows 8..15 of x
        if X_LANES:  # row 0 of x as int32 words (k pairs): lane L of warp w reads word L of w's chunks
            tid1 = tl.arange(0, NW * 32)
            lane1 = tid1 % 32
            first1 = (tid1 // 32) % K_WARPS
            xq = X.to(tl.pointer_type(tl.int32)) + first1 * 32 + lane1
            x_src = (lane1 % 4) * 8  # the lane's x is words 8t..8t + 7 of the chunk
            # scales the same way: of each pair of chunks (u, u + 1) of a step, lane L loads row
            # L % 16's scale of chunk u + L // 16; lane (g, t) takes rows g and g + 8 by shuffle
            s_row = (pid * ROW_TILES + (tid1 // 32) // K_WARPS) * 16 + lane1 % 16
            s_ptr = S + s_row * stride_sn
            s_ok = s_row < N
            s_pair = lane1 // 16
            s_src = (lane1 // 4) % 8
        # one asm operand per thread: a chunk (CHAIN) or a word
        ACC_SHAPE: tl.constexpr = [NW * 32] if CHAIN else [NW * 32, 4]
        magic = tl.full(ACC_SHAPE, MAGIC, tl.int32)
        one = tl.full(ACC_SHAPE, ONE, tl.int32)
        # the accumulators c0..c3 of rows 0..7 of x (a) and 8..15 (e, HALVES = 2), one per output
        # register of the asm, as plain variables (a tuple carried through the loop came out
        # with the wrong length under Python 3.12)
        a0 = tl.zeros(ACC_SHAPE, dtype=tl.float32)
        a1 = tl.zeros(ACC_SHAPE, dtype=tl.float32)
        a2 = tl.zeros(ACC_SHAPE, dtype=tl.float32)
        a3 = tl.zeros(ACC_SHAPE, dtype=tl.float32)
        e0 = tl.zeros(ACC_SHAPE, dtype=tl.float32)
        e1 = tl.zeros(ACC_SHAPE, dtype=tl.float32)
        e2 = tl.zeros(ACC_SHAPE, dtype=tl.float32)
        e3 = tl.zeros(ACC_SHAPE, dtype=tl.float32)
    else:
        mm = tl.arange(0, BLOCK_M)[None, None, :]
        xp = X + mm * stride_xm + (first * 64 + kw)[:, :, None]  # [T, 4, BM]
        acc_lo = tl.zeros([NW * 32, 4, BLOCK_M], dtype=tl.float32)
        acc_hi = tl.zeros([NW * 32, 4, BLOCK_M], dtype=tl.float32)
    if STAGGER > 0:  # warp w of the program issues its first loads w·STAGGER clocks after warp 0
        # pid * 0 + STAGGER: the asm's operand must be a runtime value, not a constexpr
        waited = tl.inline_asm_elementwise(STAGGER_WAIT, "=r,r", [pid * 0 + STAGGER], dtype=tl.int32, is_pure=False, pack=1)
        wp += waited * 128  # 0, added so that no weight load can be issued before the wait; a whole chunk keeps the 16-byte loads
    steps = tl.cdiv(n_chunks, K_WARPS)
    for i0 in range(0, steps, UNROLL):
        for u in tl.static_range(UNROLL):
            c = first + K_WARPS * (i0 + u)  # [T, 1]
            if EVEN:
                word = tl.load(wp + u * K_WARPS * 128, eviction_policy="evict_first")  # [T, 4]
            else:
                ok = tile_ok & (c < n_chunks)
                k_ok = ok & (c * 64 + kw < K)  # K is a multiple of 32: an MMA's k are all in or all out
                word = tl.load(wp + u * K_WARPS * 128, mask=ok, other=0, eviction_policy="evict_first")
            kg = c * 64 + 16 * jg  # a k of each word's group
            grp = kg // GROUP
            if X_LANES:
                if u % 2 == 0:
                    cs = first1 + K_WARPS * (i0 + u + s_pair)
                    if EVEN and UNROLL % 2 == 0:
                        s_word = tl.load(s_ptr + cs * 64 // GROUP).to(tl.float32)
                    else:
                        s_word = tl.load(s_ptr + cs * 64 // GROUP, mask=s_ok & (cs * 64 < K), other=0.0).to(tl.float32)
                s_lo = _shfl(s_word, s_src + 16 * (u % 2))
                s_hi = _shfl(s_word, s_src + 16 * (u % 2) + 8)
            elif EVEN:
                s_lo = tl.load(S + row_lo * stride_sn + grp).to(tl.float32)
                s_hi = tl.load(S + (row_lo + 8) * stride_sn + grp).to(tl.float32)
            else:
                g_ok = tile_ok & (kg < K)
                s_lo = tl.load(S + row_lo * stride_sn + grp, mask=g_ok & (row_lo < N), other=0.0).to(tl.float32)
                s_hi = tl.load(S + (row_lo + 8) * stride_sn + grp, mask=g_ok & (row_lo + 8 < N), other=0.0).to(tl.float32)
            if HAS_ZERO:
                z_lo = tl.load(Z + row_lo * stride_zn + grp, mask=tile_ok & (kg < K) & (row_lo < N), other=0).to(tl.int32)
                z_hi = tl.load(Z + (row_lo + 8) * stride_zn + grp, mask=tile_ok & (kg < K) & (row_lo + 8 < N), other=0).to(tl.int32)
            else:
                z_lo = 8
                z_hi = 8
            if X_KIND != 0:
                # -(magic + zero) in both halves, exact: the pair subtracted from (magic + code)
                zz_lo = ((ZERO_BITS + z_lo) << 16) | (ZERO_BITS + z_lo)
                zz_hi = ((ZERO_BITS + z_hi) << 16) | (ZERO_BITS + z_hi)
                # a lane's 4 x values per word, read as one int64 (8-byte loads: the layout the
                # asm's operands settle on keeps one word per register, so no wider vector)
                if X_LANES:
                    if EVEN:
                        xc = tl.load(xq + u * K_WARPS * 32)
                    else:
                        xc = tl.load(xq + u * K_WARPS * 32, mask=(first1 + K_WARPS * (i0 + u)) * 64 + 2 * lane1 < K, other=0)
                    x0 = xc  # unused (HALVES = 1); keeps x1 below defined
                elif EVEN:
                    x0 = tl.load(xp + u * K_WARPS * 16)
                else:
                    x0 = tl.load(xp + u * K_WARPS * 16, mask=k_ok, other=0)
                x1 = x0
                if HALVES == 2:
                    if EVEN:
                        x1 = tl.load(xp + dx2 + u * K_WARPS * 16)
                    else:
                        x1 = tl.load(xp + dx2 + u * K_WARPS * 16, mask=k_ok, other=0)
                if CHAIN:  # the lane's 4 words (and their x) as 4 [T] tensors each
                    w0, w1, w2, w3 = _columns(word, NW * 32)
                    sl = s_lo if X_LANES else tl.reshape(s_lo, [NW * 32])
                    sh = s_hi if X_LANES else tl.reshape(s_hi, [NW * 32])
                    if HAS_ZERO:
                        zl = tl.reshape(zz_lo, [NW * 32])
                        zh = tl.reshape(zz_hi, [NW * 32])
                    else:
                        zl = zz_lo
                        zh = zz_hi
                    if X_LANES:
                        args = [w0, w1, w2, w3, xc, x_src, sl, sh, zl, zh, magic, one]
                    elif HALVES == 2:
                        x_0, x_1, x_2, x_3 = _columns(x0, NW * 32)
                        y_0, y_1, y_2, y_3 = _columns(x1, NW * 32)
                        args = [w0, w1, w2, w3, x_0, x_1, x_2, x_3, y_0, y_1, y_2, y_3, sl, sh, zl, zh, magic, one]
                    else:
                        x_0, x_1, x_2, x_3 = _columns(x0, NW * 32)
                        args = [w0, w1, w2, w3, x_0, x_1, x_2, x_3, sl, sh, zl, zh, magic, one]
                elif HALVES == 2:
                    args = [word, x0, x1, s_lo, s_hi, zz_lo, zz_hi, magic, one]
                else:
                    args = [word, x0, s_lo, s_hi, zz_lo, zz_hi, magic, one]
                if HALVES == 2:  # M = 9..16: every column of both halves
                    a0, a1, a2, a3, e0, e1, e2, e3 = tl.inline_asm_elementwise(
                        ASM, CONSTRAINTS, args + [a0, a1, a2, a3, e0, e1, e2, e3],
                        dtype=(tl.float32, tl.float32, tl.float32, tl.float32, tl.float32, tl.float32, tl.float32, tl.float32),
                        is_pure=True, pack=1)
                elif ALL_COLS:
                    a0, a1, a2, a3 = tl.inline_asm_elementwise(ASM, CONSTRAINTS, args + [a0, a1, a2, a3],
                                                               dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)
                else:
                    a0, a1 = tl.inline_asm_elementwise(ASM, CONSTRAINTS, args + [a0, a1],
                                                       dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
            else:
                if EVEN:
                    xm = mm < M
                else:
                    xm = k_ok[:, :, None] & (mm < M)
                if HAS_ZERO:
                    zl = z_lo[:, :, None]
                    zh = z_hi[:, :, None]
                else:
                    zl = z_lo
                    zh = z_hi
                lo = tl.zeros([NW * 32, 4, BLOCK_M], dtype=tl.float32)
                hi = tl.zeros([NW * 32, 4, BLOCK_M], dtype=tl.float32)
                for i in tl.static_range(8):
                    xv = tl.load(xp + u * K_WARPS * 64 + 2 * ((i >> 1) & 1) + (i >> 2), mask=xm, other=0.0).to(tl.float32)  # _NIBBLE_K[i]
                    code = ((word >> (4 * i)) & 15)[:, :, None]
                    if i % 2 == 0:
                        lo += (code - zl).to(tl.float32) * xv
                    else:
                        hi += (code - zh).to(tl.float32) * xv
                acc_lo += s_lo[:, :, None] * lo
                acc_hi += s_hi[:, :, None] * hi
        wp += UNROLL * K_WARPS * 128
        if X_LANES:
            xq += UNROLL * K_WARPS * 32
        elif X_KIND != 0:
            xp += UNROLL * K_WARPS * 16
        else:
            xp += UNROLL * K_WARPS * 64
    r0 = pid * ROW_TILES + tl.arange(0, ROW_TILES)[:, None]  # [RT, 1]
    if SUM_ASM != "":  # M = 1 (CHAIN): the warps summed through shared memory with one barrier
        v = tl.inline_asm_elementwise(SUM_ASM, "=f,f,f", [a0, a1], dtype=tl.float32, is_pure=False, pack=1)
        j = tl.arange(0, NW * 32)  # thread j < 16·ROW_TILES holds row j of the program's rows
        row = pid * ROW_TILES * 16 + j
        tl.store(Y + row, v.to(Y.dtype.element_ty), mask=(j < ROW_TILES * 16) & (row < N))
    elif X_KIND != 0:
        ln = tl.arange(0, 32)[None, :]
        N_COLS: tl.constexpr = 4 if ALL_COLS else 2
        for hc in tl.static_range(HALVES * N_COLS):
            o = hc % N_COLS
            cc = o if ALL_COLS else 2 * o  # c0..c3: (row g | g + 8, column 2t | 2t + 1)
            if hc < N_COLS:
                acc = a0 if o == 0 else a1 if o == 1 else a2 if o == 2 else a3
            else:
                acc = e0 if o == 0 else e1 if o == 1 else e2 if o == 2 else e3
            if not CHAIN:
                acc = tl.sum(acc, axis=1)
            v = tl.sum(tl.reshape(acc, [ROW_TILES, K_WARPS, 32]), axis=1)  # [RT, 32]
            col = 2 * (ln % 4) + cc % 2 + 8 * (hc // N_COLS)  # the row of x (half 1: 8..15)
            row = r0 * 16 + ln // 4 + 8 * (cc // 2)
            tl.store(Y + col * stride_ym + row, v.to(Y.dtype.element_ty), mask=(col < M) & (row < N))
    else:
        for h in tl.static_range(2):
            a = acc_lo if h == 0 else acc_hi
            v = tl.sum(tl.reshape(tl.sum(a, axis=1), [NW, 8, 4, BLOCK_M]), axis=2)  # [NW, 8 (g), BM]
            v = tl.sum(tl.reshape(v, [ROW_TILES, K_WARPS, 8, BLOCK_M]), axis=1)  # [RT, 8, BM]
            row = r0[:, :, None] * 16 + 8 * h + tl.arange(0, 8)[None, :, None]
            m = tl.arange(0, BLOCK_M)[None, None, :]
            tl.store(Y + m * stride_ym + row, v.to(Y.dtype.element_ty), mask=(m < M) & (row < N))

# ---------------------------------------------------------------------------------------------
# Configs: a heuristic table (re-measure with lab/benchmarks/wo_matmul.py: `tune`)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WoConfig:
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    use_dot: bool | None = None  # None: tl.dot for M > 1, the FMA path for M = 1
    unroll: int = 8  # int4 GEMV: tiles of block_k whose loads are issued together
    x_vec: bool = True  # int4 GEMV, 16-bit x: a code word's 4 x words in one 16-byte load


INTERPRET_CONFIG = WoConfig(block_n=16, block_k=64, split_k=1, num_warps=1, num_stages=1, unroll=2)  # block_k >= group (int4)
MAX_UNROLL = 16  # tiles unrolled per loop step (more only grows the code)

# (M == 1, bits) -> (block_n, block_k, num_warps, use_dot). int8 at M = 1, measured on an H200
# (CUDA-graph replays over weight copies > L2, torch 2.11 / triton 3.6, 2026-11): 16×512 8 warps
# (9.2 µs at 4096² vs 12.2 µs split in 2). M > 1: tl.dot 64×128 with split-K stayed best for int4
# (2× faster than 32×256 unsplit); int8 with K <= 2048 is faster unsplit at 16×256 (1536×576:
# 3.9 vs 5.9 µs). int4 at M = 1: _INT4_GEMV below.
_TILES = {
    (True, 8): (16, 512, 8, False),
    (False, 8): (64, 128, 8, True),
    (False, 4): (64, 128, 4, True),
}
# int4 at M = 1 (_int4_gemv_kernel): (block_n, block_k, num_warps, x_vec) by K (and N), the whole
# row unrolled (up to MAX_UNROLL tiles), never split. From lab/benchmarks/wo_matmul.py `tune` on an
# H200 (per call, back to back in a CUDA graph over weight copies > L2; torch 2.11 / triton 3.6,
# 2026-11-21, one-LOP3 decode; cuBLAS bf16 / tinygemm int4 beside): 16×512, 8 warps at K >= 4096
# (4096²: 6.9 µs vs 13.6 / 7.0; 14336×4096: 16.9 vs 35.6 / 19.0), 16×1024 above 8192
# (4096×14336: 17.6 vs 36.4 / 19.8); 8×1024 at K >= 1024 (576×1536: 2.7 vs 5.1 / 2.3); below,
# 16×128 in one warp for long N (49152×576: 10.4 vs 19.6 / 20.8), else one group in 4×G
# (1536×576: 2.6 vs 4.0 / 2.6). The
# 16-byte x loads saved 10-18 %. Tiles with several rows per thread (sharing its x, 4 instead of 6
# instructions per code) were slower: fewer programs, fewer loads in flight. Loading x in the
# codes' own layout (no shared-memory barriers, 32-bit code loads) was no faster either.
def _int4_gemv_tile(N: int, K: int) -> tuple[int, int, int, bool]:
    if K > 8192:
        return 16, 1024, 8, True
    if K >= 4096:
        return 16, 512, 8, True
    if K >= 1024:
        return 8, 1024, 8, True
    if N >= 16384:
        return 16, 128, 1, True
    return 4, 0, 1, False  # block_k 0: one group


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=1024)
def pick_config(M: int, N: int, K: int, bits: int, group_size: int, n_sm: int = 132) -> WoConfig:
    """The tile tables above; at M > 1 (tl.dot tiles of 64 rows: few programs) split K until
    there are ≈ 2 programs per SM (many programs in flight cover DRAM latency), shrinking
    block_k (not below a group, or 64) so that every split still has a tile to stream.
    Cached: the launcher calls it on every decode step with the same shapes."""
    if M == 1 and bits == 4:
        block_n, block_k, warps, x_vec = _int4_gemv_tile(N, K)
        return WoConfig(block_n, max(block_k, group_size), 1, warps, 1, False, MAX_UNROLL, x_vec)
    block_n, block_k, warps, use_dot = _TILES[(M == 1, bits)]
    if M > 1 and bits == 8 and K <= 2048:
        return WoConfig(16, 256, 1, 4, 3, True)
    min_k = group_size if bits == 4 else 64
    block_k = max(block_k, min_k)
    if M == 1:
        return WoConfig(block_n, block_k, 1, warps, 3, use_dot)
    split = max(1, min(16, triton.cdiv(2 * n_sm, triton.cdiv(N, block_n))))
    while block_k > min_k and block_k > triton.cdiv(K, split):
        block_k //= 2
    split = max(1, min(split, triton.cdiv(K, block_k)))
    return WoConfig(block_n, block_k, split, warps, 3, use_dot)



@dataclass(frozen=True)
class MmaConfig:
    """_int4_mma_kernel's tiling: a program owns row_tiles tiles of 16 rows, k_warps warps per
    tile split its 64-wide chunks, each warp unrolls `unroll` chunks (16 bytes a lane each).
    maxnreg: registers per thread cap (None: ptxas's choice, which serializes the loads; see the
    kernel)."""
    row_tiles: int = 1
    k_warps: int = 8
    unroll: int = 8
    num_stages: int = 1
    maxnreg: int | None = 128
    x_lanes: bool = False  # M = 1, groups of 64/128, 16-bit x: x and the scales spread over the lanes (X_LANES)
    stagger: int = 0  # clocks between the first loads of a program's warps, warp by warp (STAGGER; 0: all at once)

    def check(self):
        for name in ("row_tiles", "k_warps"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                _fail("config", f"{name}={v} must be a power of two >= 1")
        if self.row_tiles * self.k_warps > 16:
            _fail("config", f"row_tiles·k_warps = {self.row_tiles * self.k_warps} warps; at most 16")
        if not 1 <= self.unroll <= MAX_UNROLL:
            _fail("config", f"unroll={self.unroll} must be in 1..{MAX_UNROLL}")
        if self.maxnreg is not None and not 24 <= self.maxnreg <= 255:
            _fail("config", f"maxnreg={self.maxnreg} must be in 24..255 or None")
        if not 0 <= self.stagger <= 4096:
            _fail("config", f"stagger={self.stagger} clocks must be in 0..4096 (0: no stagger)")


INTERPRET_MMA_CONFIG = MmaConfig(row_tiles=2, k_warps=2, unroll=2)


def pick_mma_config(M: int, N: int, K: int, has_zero: bool = False) -> MmaConfig:
    """From experiments/probes/int4_pick.py on an H200 (per call back to back in a CUDA graph over weight
    copies > L2, median of 3 rounds; torch 2.11 / triton 3.6, 2026-11-21, session 7, chained MMAs):
      general: 1 tile of 16 rows a program, 8 warps splitting K, 4 chunks a step, 128 registers
        (4096²: 5.24 µs, cuBLAS 13.6; 4096×14336: 11.9, cuBLAS 36.6; 4096×11008: 11.6; 576×1536: 2.64);
      tall (N >= 8192) at M = 1 (until session 25, below): the same tiling uncapped. ptxas then serializes each warp's
        loads, but at ~60 registers twice the warps fit and the 896+ programs run in fewer waves
        (14336×4096: 11.7 µs against 14.3 capped and 12.5 for session 6's 4 warps, 8 a step;
        28672×4096: 20.6, the best 20.4; 8192×8192: 14.7, the best 13.7). At M > 1 uncapped lost
        (14336×4096, M = 4: 16.9 against 14.8), so at M = 2..8: 8 warps, 2 chunks a step, capped;
      short rows (K <= 1024, at most 16 chunks): 4 warps, the row in steps of a quarter (1536×576:
        2.28 µs), or, tall (49152×576), one warp a program, the whole row in one step, uncapped
        (6.52 µs, M = 4 7.30, M = 16 17.0; session 6's 4 tiles a program at 168 registers: 7.24).
    More row tiles per program, 16 warps, or 16 chunks a step were slower.
      M = 9..16 (one launch, both halves of x; experiments/probes/int4_m16.py, after run h200-s7b,
        which ran the M = 2..8 choices there): 4 warps, 8 chunks a step at 168 registers (4096²,
        M = 16: 9.3 µs against 10.8; 576×1536 4.3 against 4.4; on 4096×14336 it loses 2 %, 25.0
        against 24.5, accepted for one rule), tall 4 warps, 4 a step, uncapped (14336×4096: 24.2
        against 31.7); short rows as at M = 1.
    Session 25 (int4_pick.py --lanes, H200): tall at M = 1 now spreads x and the scales over the
      lanes (x_lanes: ~70 registers at 4 chunks a step, where x took 8 a chunk) with 4 warps a
      tile, capped at 128: 14336×4096 11.46 µs against 11.91, 28672×4096 19.90 against 20.72,
      8192² 14.04 against 14.87. Elsewhere x_lanes was within ±2 % of the tiling above (4096²
      5.19-5.37 against 5.25, 4096×14336 12.65 against 12.49), so it is not taken there.
    Session 28 (int4_mma_limit.py --stagger, H200 on four machines, H100 on one): the general tiling
      at M = 1 on N >= 4096 staggers its warps' first loads by 200 clocks a warp (stagger): 4096²
      5.24-5.50 -> 5.03-5.26 µs (H100 5.71 -> 5.56), 4096×14336 12.06-12.61 -> 11.84-12.45 (13.85
      -> 13.74), 4096×11008 11.63 -> 11.38 (H100 13.18 -> 12.87); 150 and 250 within 2 % of 200,
      300-400 slower. Not on small weights, whose few programs only start later (576×1536, 36 programs:
      2.66 -> 3.14), nor on the tall tilings (14336×4096, 8192²: -2.6 to +1 %, the spread between calls).
    Session 29 (int4_mma_limit.py --pairs, tilings and staggers interleaved, H200 on two machines, with
      the one-barrier sum): long rows (K >= 8192) at M = 1 take 16 warps a tile, 2 chunks a step,
      staggered by 100 clocks a warp: 4096×14336 11.38 µs against the general tiling's 11.64 (session
      28, another machine: 11.91 against 12.22), 4096×11008 10.97 against 11.34 (H100: 13.80 against
      14.06, 12.13 against 12.68). At 4096² the general tiling stayed the fastest of six (4.78 µs;
      16 warps, 2 a step, 4.97). Symmetric weights only (has_zero False): with zero points the 16
      warps ran 4096×14336 in 15.82 µs against 11.99 (suite run h200-s29b-wo; H100 16.34 / 13.32)."""
    chunks = -(-K // MMA_K)
    if chunks <= 16:
        return MmaConfig(1, 1, chunks, maxnreg=None) if N >= 16384 else MmaConfig(1, 4, -(-chunks // 4))
    if N >= 8192:
        if M > MMA_N:
            return MmaConfig(1, 4, 4, maxnreg=None)
        return MmaConfig(1, 4, 4, x_lanes=True) if M == 1 else MmaConfig(1, 8, 2)
    if M > MMA_N:
        return MmaConfig(1, 4, 8, maxnreg=168)
    if M == 1 and N >= 4096 and chunks >= 128 and not has_zero:
        return MmaConfig(1, 16, 2, stagger=100)
    return MmaConfig(1, 8, 4, stagger=200 if M == 1 and N >= 4096 else 0)


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def _fail(name: str, msg: str):
    raise ValueError(f"wo_matmul: {name} {msg}")


@functools.lru_cache(maxsize=None)
def _n_sm(device: torch.device) -> int:
    # get_device_properties costs microseconds per call: once per device
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132


@dataclass(frozen=True)
class _Plan:
    """Everything about one launch that depends only on shapes, dtypes and the config, so the
    per-call host work is a dict lookup (a decode step calls this with the same shapes again)."""
    grid: tuple[int, int]
    k_per_split: int
    atomic: bool
    x_words: int
    gemv: bool  # int4 at M = 1: _int4_gemv_kernel (else _wo_matmul_kernel)
    meta: dict  # the kernel's constexprs and launch options


def _unroll(tiles: int, most: int) -> int:
    """Tiles per loop step: all of them when they fit, else the largest divisor of `tiles` that is
    at least half of `most` (no masked tiles in the last step), else `most`."""
    if tiles <= most:
        return max(tiles, 1)
    return next((d for d in range(most, most // 2 - 1, -1) if tiles % d == 0), most)


@functools.lru_cache(maxsize=4096)
def _plan(M: int, N: int, K: int, bits: int, group: int, has_zero: bool, dtype: torch.dtype,
          x_pairs: bool, device: torch.device, config: WoConfig | None, interpreting: bool) -> _Plan:
    if config is not None:
        cfg = config
    elif interpreting:
        cfg = replace(INTERPRET_CONFIG, block_k=max(INTERPRET_CONFIG.block_k, group if bits == 4 else 0))
    else:
        cfg = pick_config(M, N, K, bits, group, _n_sm(device))
    if bits == 4 and cfg.block_k % group:
        _fail("config", f"block_k={cfg.block_k} must be a multiple of group_size={group} (a tile holds whole groups)")
    use_dot = M > 1 if cfg.use_dot is None else bool(cfg.use_dot)
    if use_dot and cfg.block_n < 16:
        _fail("config", f"block_n={cfg.block_n} must be >= 16 on the tl.dot path")
    gemv = bits == 4 and not use_dot
    if gemv and M != 1:
        _fail("config", f"use_dot=False with int4 runs the M = 1 GEMV kernel; M={M} needs the tl.dot path")
    k_per_split = triton.cdiv(triton.cdiv(K, cfg.split_k), cfg.block_k) * cfg.block_k
    split_k = triton.cdiv(K, k_per_split)
    if gemv:
        # 16-bit x is read as int32 words, one (even k, odd k) pair per word
        x_words = (1 if dtype == torch.bfloat16 else 2) if dtype != torch.float32 and x_pairs else 0
        unroll = _unroll(triton.cdiv(k_per_split, cfg.block_k), min(cfg.unroll, MAX_UNROLL))
        meta = dict(GROUP=group, HAS_ZERO=has_zero, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, UNROLL=unroll,
                    X_WORDS=x_words, X_VEC=bool(cfg.x_vec and x_words), ATOMIC=split_k > 1, LOP3=not interpreting, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        x_words = 0
        meta = dict(
            BITS=bits, GROUP=group, HAS_ZERO=has_zero,
            BLOCK_M=16 if use_dot else 1, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
            USE_DOT=use_dot, ATOMIC=split_k > 1, DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return _Plan((triton.cdiv(N, cfg.block_n), split_k), k_per_split, split_k > 1, x_words, gemv, meta)


def wo_matmul(x: torch.Tensor, qw: QuantizedWeight, config: WoConfig | None = None) -> torch.Tensor:
    """y = x @ dequantize(qw).T for x ``(M, K)``, M <= 16, float16/bfloat16/float32 -> ``(M, N)``
    in x's dtype. ``config`` overrides the heuristic tile table (tuning).

    One kernel launch when split_k == 1 (every heuristic config on the shapes we benchmark);
    split_k > 1 adds a zero-fill and a cast around float32 atomics. Host work per call: attribute
    checks and one cached plan lookup; no syncs, no allocation except the output."""
    if not isinstance(qw, QuantizedWeight):
        _fail("qw", f"must be a QuantizedWeight (from quantize_int8 / quantize_int4), got {type(qw).__name__}")
    if not isinstance(x, torch.Tensor):
        _fail("x", f"must be a torch.Tensor, got {type(x).__name__}")
    dtype = x.dtype
    if dtype not in SUPPORTED_DTYPES:
        _fail("x", f"has dtype {dtype}; supported: float16, bfloat16, float32")
    N, K = qw.shape
    xs = x.shape
    if len(xs) != 2 or xs[1] != K:
        _fail("x", f"must be [M, K] = [M, {K}] (K of the weight), got shape {tuple(xs)}")
    M = xs[0]
    if not 1 <= M <= MAX_M:
        _fail("x", f"has M={M} rows; this GEMV kernel handles 1..{MAX_M} (use a dense matmul on dequantize(qw) for more)")
    sx0, sx1 = x.stride()
    if sx1 != 1 and K > 1:
        _fail("x", f"must be contiguous along K (stride(1) == 1), got strides {tuple(x.stride())}; pass x.contiguous()")
    dev = x.device
    qweight, scale, zero = qw.qweight, qw.scale, qw.zero
    for name, t in (("qweight", qweight), ("scale", scale), ("zero", zero)):
        if t is not None and (t.device != dev or t.stride(-1) != 1):
            if t.device != dev:
                _fail(f"qw.{name}", f"is on {t.device}; must be on x's device {dev}")
            _fail(f"qw.{name}", f"must be contiguous along its last dim, got strides {tuple(t.stride())}")
    interpreting = _interpreting()
    if dev.type != "cuda" and not interpreting:
        _fail("x", f"is on {dev}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    bits = qw.bits
    if bits == 4 and qw.layout == "mma":
        return _wo_matmul_mma(x, qw, config, interpreting)
    if qweight.shape != ((N, K) if bits == 8 else (N, K // 2)):
        _fail("qw.qweight", f"has shape {tuple(qweight.shape)}; a {bits}-bit [{N}, {K}] weight needs {(N, K) if bits == 8 else (N, K // 2)}")

    x_pairs = sx0 % 2 == 0 and x.data_ptr() % 4 == 0
    p = _plan(M, N, K, bits, qw.group_size, zero is not None, dtype, x_pairs, dev, config, interpreting)
    if p.atomic:
        y = torch.zeros((M, N), dtype=torch.float32, device=dev)
    else:
        y = torch.empty((M, N), dtype=dtype, device=dev)
    if zero is None:
        zero = scale  # never read when HAS_ZERO is off
    xk = x.view(torch.int32) if p.x_words else x
    if p.gemv:
        if K % 8:
            _fail("qw", f"K={K} must be a multiple of 8 for the int4 kernel (it reads the codes as int32 words)")
        _int4_gemv_kernel[p.grid](
            xk, qweight.view(torch.int32), scale, zero, y,
            N, K, p.k_per_split,
            qweight.stride(0) // 4, scale.stride(0), zero.stride(0),
            **p.meta,
        )
    else:
        _wo_matmul_kernel[p.grid](
            x, qweight, scale, zero, y,
            M, N, K, p.k_per_split,
            sx0, qweight.stride(0), scale.stride(0), zero.stride(0), y.stride(0),
            **p.meta,
        )
    return y.to(dtype) if p.atomic else y


@functools.lru_cache(maxsize=4096)
def _mma_plan(M: int, N: int, K: int, group: int, has_zero: bool, dtype: torch.dtype,
              config: MmaConfig | None, interpreting: bool) -> tuple[tuple[int], dict]:
    cfg = config or (INTERPRET_MMA_CONFIG if interpreting else pick_mma_config(M, N, K, has_zero))
    cfg.check()
    x_kind = 0 if interpreting or dtype == torch.float32 else (1 if dtype == torch.bfloat16 else 2)
    cols = (0, 2) if M == 1 else (0, 1, 2, 3)  # at M = 1 only column 0 (c0, c2) is output
    chain = bool(x_kind) and group >= 64  # a lane's 4 words of a chunk share one group
    halves = 2 if x_kind and M > MMA_N else 1
    x_lanes = cfg.x_lanes and chain and M == 1
    asm, constraints = _mma_asm(x_kind, cols, 4 if chain else 1, halves, x_lanes) if x_kind else ("", "")
    ty_bits = _MMA_TYPES.get(x_kind, ("", 0, 0))
    n_tiles, n_chunks = triton.cdiv(N, MMA_ROWS), triton.cdiv(K, MMA_K)
    even = N % MMA_ROWS == 0 and K % MMA_K == 0 and n_tiles % cfg.row_tiles == 0 and n_chunks % (cfg.k_warps * cfg.unroll) == 0
    meta = dict(GROUP=group, HAS_ZERO=has_zero, ROW_TILES=cfg.row_tiles, K_WARPS=cfg.k_warps, UNROLL=cfg.unroll,
                BLOCK_M=triton.next_power_of_2(M), X_KIND=x_kind, EVEN=even, CHAIN=chain, HALVES=halves, ASM=asm, CONSTRAINTS=constraints,
                ALL_COLS=len(cols) == 4, ZERO_BITS=ty_bits[1] | 0x8000, MAGIC=ty_bits[1] * 0x10001, ONE=ty_bits[2], X_LANES=x_lanes,
                STAGGER=0 if interpreting else cfg.stagger, STAGGER_WAIT=_STAGGER_WAIT,  # inline PTX: GPU only
                SUM_ASM=_m1_sum_asm(cfg.row_tiles, cfg.k_warps) if chain and M == 1 else "",
                num_warps=cfg.row_tiles * cfg.k_warps, num_stages=cfg.num_stages)
    if cfg.maxnreg and not interpreting:
        meta["maxnreg"] = cfg.maxnreg
    return (triton.cdiv(n_tiles, cfg.row_tiles),), meta


def _wo_matmul_mma(x: torch.Tensor, qw: QuantizedWeight, config, interpreting: bool) -> torch.Tensor:
    N, K = qw.shape
    M = x.shape[0]
    nt, kc = triton.cdiv(N, MMA_ROWS), triton.cdiv(K, MMA_K)
    if qw.qweight.shape != (nt, kc, 32, 4) or qw.qweight.dtype != torch.int32:
        _fail("qw.qweight", f"has {tuple(qw.qweight.shape)} {qw.qweight.dtype}; the mma layout of [{N}, {K}] is int32 {(nt, kc, 32, 4)} (pack_mma)")
    if config is not None and not isinstance(config, MmaConfig):
        _fail("config", f"must be an MmaConfig for a weight in the mma layout, got {type(config).__name__}")
    grid, meta = _mma_plan(M, N, K, qw.group_size, qw.zero is not None, x.dtype, config, interpreting)
    if meta["X_KIND"]:  # x read as int64 words of 4 values: 8-byte aligned rows
        if x.stride(0) % 4 or x.data_ptr() % 8:
            x = x.clone(memory_format=torch.contiguous_format)  # fresh, aligned
        xk, sxm = x.view(torch.int64), x.stride(0) // 4
    else:
        xk, sxm = x, x.stride(0)
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    zero = qw.zero if qw.zero is not None else qw.scale  # never read when HAS_ZERO is off
    _int4_mma_kernel[grid](xk, qw.qweight, qw.scale, zero, y, M, N, K, nt, kc,
                           sxm, qw.scale.stride(0), zero.stride(0), y.stride(0), **meta)
    return y


# ---------------------------------------------------------------------------------------------
# Quantization (host side, once per weight) and the reference
# ---------------------------------------------------------------------------------------------
def _check_w(fn: str, w) -> tuple[int, int]:
    if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.dim() != 2:
        raise ValueError(f"{fn}: w must be a 2-d float tensor [N, K] (nn.Linear layout), got {getattr(w, 'shape', type(w).__name__)}")
    return w.shape


def quantize_int8(w: torch.Tensor) -> QuantizedWeight:
    """Symmetric per-output-channel int8: scale[n] = max|w[n]| / 127, float32."""
    N, K = _check_w("quantize_int8", w)
    wf = w.float()
    scale = (wf.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # [N]; an all-zero row gets q = 0
    q = torch.round(wf / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return QuantizedWeight(q.contiguous(), scale.contiguous(), None, 8, K, (N, K), w.dtype)


def quantize_int4(w: torch.Tensor, group_size: int = 128, symmetric: bool = True, scale_dtype: torch.dtype = torch.float16,
                  layout: str = "rows") -> QuantizedWeight:
    """Group-wise int4 along K (see the module docstring for the format); layout "rows" packs two
    codes per byte along each row, "mma" the tensor-core kernel's fragment order (pack_mma)."""
    N, K = _check_w("quantize_int4", w)
    if group_size not in GROUP_SIZES:
        raise ValueError(f"quantize_int4: group_size must be one of {GROUP_SIZES}, got {group_size!r}")
    if K % group_size:
        raise ValueError(f"quantize_int4: K={K} must be a multiple of group_size={group_size}")
    if scale_dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"quantize_int4: scale_dtype must be one of {SUPPORTED_DTYPES}, got {scale_dtype}")
    if layout not in LAYOUTS:
        raise ValueError(f"quantize_int4: layout must be one of {LAYOUTS}, got {layout!r}")
    tiny = torch.finfo(scale_dtype).tiny  # keep scales normal in their storage dtype
    wg = w.float().reshape(N, K // group_size, group_size)  # [N, K/G, G]
    if symmetric:
        idx = wg.abs().argmax(dim=-1, keepdim=True)
        signed_max = wg.gather(-1, idx).squeeze(-1)  # the largest-magnitude weight, with its sign
        scale = -signed_max / 8.0
        scale = torch.where(scale.abs() < tiny, torch.full_like(scale, tiny), scale)
        scale = scale.to(scale_dtype)  # round first, then quantize against the stored scale
        codes = torch.round(wg / scale.float()[..., None]).clamp(-8, 7) + 8
        zero = None
    else:
        lo = wg.amin(dim=-1).clamp(max=0.0)
        hi = wg.amax(dim=-1).clamp(min=0.0)
        scale = ((hi - lo) / 15.0).clamp(min=tiny).to(scale_dtype)
        zero = torch.round(-lo / scale.float()).clamp(0, 15)
        codes = (torch.round(wg / scale.float()[..., None]) + zero[..., None]).clamp(0, 15)
        zero = zero.to(torch.uint8).contiguous()
    codes = codes.reshape(N, K).to(torch.uint8)
    if layout == "mma":
        return QuantizedWeight(pack_mma(codes, group_size), scale.contiguous(), zero, 4, group_size, (N, K), w.dtype, "mma")
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()  # low nibble = even k
    return QuantizedWeight(packed, scale.contiguous(), zero, 4, group_size, (N, K), w.dtype)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] -> codes uint8 [N, K] (low nibble first)."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def int4_codes(qw: QuantizedWeight) -> torch.Tensor:
    """The codes uint8 [N, K] of an int4 weight in either layout."""
    return unpack_mma(qw.qweight, *qw.shape, qw.group_size) if qw.layout == "mma" else unpack_int4(qw.qweight)


def dequantize(qw: QuantizedWeight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The float weight [N, K] the kernel multiplies by: (code - zero) · scale, computed in float32
    (float64 when asked for), then cast to ``dtype`` (default: the original weight's)."""
    N, K = qw.shape
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    if qw.bits == 8:
        w = qw.qweight.to(acc) * qw.scale.to(acc)[:, None]
    else:
        codes = int4_codes(qw).to(acc).reshape(N, K // qw.group_size, qw.group_size)
        zero = qw.zero.to(acc) if qw.zero is not None else torch.full_like(qw.scale, 8, dtype=acc)
        w = ((codes - zero[..., None]) * qw.scale.to(acc)[..., None]).reshape(N, K)
    return w.to(dtype or qw.dtype)


def wo_matmul_reference(x: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
    """x @ dequantize(qw).T with the weight dequantized to x's dtype (float64 x: exact truth)."""
    return x @ dequantize(qw, x.dtype).T


def sqnr_db(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σw² / Σ(w - ŵ)²) in dB."""
    w, w_hat = w.double(), w_hat.double()
    return float(10 * torch.log10(w.pow(2).sum() / (w - w_hat).pow(2).sum().clamp(min=1e-300)))


# ---------------------------------------------------------------------------------------------
# Cost formulas
# ---------------------------------------------------------------------------------------------
def flops(M: int, N: int, K: int) -> float:
    """One multiply-add per weight per row of x (dequantization ALU work not counted)."""
    return 2 * M * N * K


def bytes_moved(M: int, N: int, K: int, qw: QuantizedWeight | None = None, x_bytes: int = 2, w_bytes: float | None = None) -> float:
    """Weights (codes + scales + zero-points, or w_bytes per element for a float weight) once, x
    and y once each."""
    weight = qw.nbytes if qw is not None else N * K * (w_bytes if w_bytes is not None else x_bytes)
    return weight + M * K * x_bytes + M * N * x_bytes
