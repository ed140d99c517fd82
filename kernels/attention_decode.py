"""Decode attention over a paged KV cache (flash-decoding), beside its float64 reference.

    o = paged_decode_attention(q, k_cache, v_cache, block_table, seq_lens)   # q [B, H, D]

One new token per sequence attends to its seq_lens[b] cached keys (the new token's own K/V
already written, so seq_lens counts it). Token j of sequence b lives in physical block
block_table[b, j // P] at offset j % P.

Decode is bound by reading the cache: B·L·H_kv·D·2 values against 4·H·D FLOPs per token. So
  * one program reads one KV head's tiles ONCE for all G query heads of its group: the G query
    rows are loaded together and scored with one tl.dot([G_pad, D] × [D, BLOCK_N]) (G_pad >= 16,
    the smallest tensor-core M; the padded rows cost FLOPs, which are free here, not bytes);
  * the KV length is split (grid B × H_kv × splits) so that short batches still fill every SM:
    each split leaves a partial (running max m, sum l, unnormalized output) and a second small
    kernel merges them: o = Σ 2^(m_s - M) · acc_s / Σ 2^(m_s - M) · l_s. With one split the
    merge is skipped and the first kernel writes o.
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
"""
from __future__ import annotations

import enum
import functools
import math
import os
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
def _decode_split(
    Q, K, V, BT, LENS, KS, VS, O, PO, PM, PL,
    stride_qb, stride_qh,
    stride_kn, stride_kh, stride_kp,
    stride_vn, stride_vh, stride_vp,
    stride_btb,
    stride_ksn, stride_ksh, stride_ksp,
    stride_vsn, stride_vsh, stride_vsp,
    stride_ob, stride_oh,
    stride_pob, stride_poh, stride_pos, pm_off, pl_off,
    G, capacity, qk_scale, num_splits, work_bucket,  # work_bucket only keys the autotuner
    PAGE: tl.constexpr, ONE_BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr,
    K_SCALE: tl.constexpr, V_SCALE: tl.constexpr, SINGLE_SPLIT: tl.constexpr, DOT_F16: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    h_kv = tl.program_id(1)
    split = tl.program_id(2)
    L = tl.minimum(tl.load(LENS + b), capacity)  # never index past the block table's row
    split_len = tl.cdiv(tl.cdiv(L, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(L, start + split_len)

    g = tl.arange(0, G_PAD)
    d = tl.arange(0, HEAD_DIM)
    heads = h_kv * G + g  # [G_PAD] the query heads of this KV head's group
    b64 = b.to(tl.int64)
    q = tl.load(Q + b64 * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=g[:, None] < G, other=0.0)
    if DOT_F16:  # fp8 e4m3 -> fp16 is one native conversion; -> bf16 takes three
        q = q.to(tl.float16)
    if K_SCALE == 1:  # per tensor / per head: fold into the softmax scale
        qk_scale = qk_scale * tl.load(KS + h_kv * stride_ksh).to(tl.float32)

    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, HEAD_DIM], tl.float32)
    bt_row = BT + b64 * stride_btb
    offs_n = tl.arange(0, BLOCK_N)
    h64 = h_kv.to(tl.int64)
    if ONE_BLOCK:  # a contiguous cache viewed as one block per sequence: no table walk
        blk0 = tl.load(bt_row).to(tl.int64)
    for n0 in range(start, end, BLOCK_N):
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
        k = tl.load(K + k_row[:, None] + d[None, :], mask=valid[:, None], other=0.0).to(q.dtype)  # [BN, D]
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [G_PAD, BN], log2 domain
        if K_SCALE == 2:
            ks = tl.load(KS + blk * stride_ksn + h64 * stride_ksh + off * stride_ksp, mask=valid, other=0.0)
            s = s * ks.to(tl.float32)[None, :]
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile in [start, end) has a valid token
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + v_row[:, None] + d[None, :], mask=valid[:, None], other=0.0).to(q.dtype)  # [BN, D]
        if V_SCALE == 2:
            vs = tl.load(VS + blk * stride_vsn + h64 * stride_vsh + off * stride_vsp, mask=valid, other=0.0)
            p = p * vs.to(tl.float32)[None, :]
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(q.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_new
    if V_SCALE == 1:
        acc = acc * tl.load(VS + h_kv * stride_vsh).to(tl.float32)

    rows = g[:, None] < G
    if SINGLE_SPLIT:
        o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # L == 0: zeros
        tl.store(O + b64 * stride_ob + heads[:, None] * stride_oh + d[None, :], o.to(O.dtype.element_ty), mask=rows)
    else:
        part = b64 * stride_pob + heads * stride_poh + split * stride_pos  # [G_PAD]
        tl.store(PO + part[:, None] * HEAD_DIM + d[None, :], acc, mask=rows)
        tl.store(PM + pm_off + part, m_i, mask=g < G)
        tl.store(PL + pl_off + part, l_i, mask=g < G)


@triton.jit
def _decode_merge(
    PO, PM, PL, O, stride_pob, stride_poh, stride_pos, pm_off, pl_off, stride_ob, stride_oh, H, num_splits,
    HEAD_DIM: tl.constexpr, SPLITS_PAD: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    s = tl.arange(0, SPLITS_PAD)
    d = tl.arange(0, HEAD_DIM)
    part = b * stride_pob + h * stride_poh + s * stride_pos  # [SPLITS_PAD]
    m = tl.load(PM + pm_off + part, mask=s < num_splits, other=float("-inf"))
    l = tl.load(PL + pl_off + part, mask=s < num_splits, other=0.0)
    m_max = tl.max(m, 0)
    w = tl.math.exp2(m - tl.where(m_max == float("-inf"), 0.0, m_max))  # empty splits weigh 0
    acc = tl.load(PO + part[:, None] * HEAD_DIM + d[None, :], mask=(s < num_splits)[:, None], other=0.0)
    total = tl.sum(w * l, 0)
    o = tl.sum(w[:, None] * acc, 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(O + b * stride_ob + h * stride_oh + d, o.to(O.dtype.element_ty))


# ---------------------------------------------------------------------------------------------
# Configs: autotuned on the GPU; one small config under TRITON_INTERPRET
# ---------------------------------------------------------------------------------------------
def _gpu_configs() -> list[triton.Config]:
    # memory-bound: enough tokens per tile and stages in flight to cover HBM latency
    # (measured on an H200: 128×4w×2 and 64×4w×2 won every shape; 8 warps and 32-token tiles never did)
    shapes = [(64, 4, 2), (64, 4, 3), (128, 4, 2), (128, 4, 3)]
    return [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s) for n, w, s in shapes]


INTERPRET_CONFIG = {"BLOCK_N": 16}
DEFAULT_CONFIG = triton.Config({"BLOCK_N": 64}, num_warps=4, num_stages=3)  # LAB_AUTOTUNE=0
_tuned = None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _launch_split(grid, *args, **meta):
    global _tuned
    if _interpreting():
        _decode_split[grid](*args, **meta, **INTERPRET_CONFIG)
    elif os.environ.get("LAB_AUTOTUNE", "1") == "0":
        c = DEFAULT_CONFIG
        _decode_split[grid](*args, **meta, **c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
    else:
        if _tuned is None:
            # keyed on what changes the best tile: the table walk (PAGE, ONE_BLOCK), the dtypes, and
            # the tokens one program streams (work_bucket = log2 of the split length)
            _tuned = triton.autotune(_gpu_configs(), key=["HEAD_DIM", "G_PAD", "K_SCALE", "V_SCALE", "SINGLE_SPLIT",
                                                          "PAGE", "ONE_BLOCK", "work_bucket"])(_decode_split)
        _tuned[grid](*args, **meta)


def _cdiv(a: int, b: int) -> int:  # plain Python: triton's helpers cost microseconds per call
    return -(-a // b)


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def default_num_splits(B: int, H_kv: int, capacity: int, device: torch.device, min_split: int = 256, max_splits: int = 128) -> int:
    """Enough splits for about four programs per SM (a ragged last wave then costs at most a
    quarter), each split at least `min_split` tokens. Uses the block table's capacity, not
    seq_lens, so choosing costs no device-to-host sync."""
    want = _cdiv(4 * _sm_count(device), max(B * H_kv, 1))
    return max(1, min(want, _cdiv(capacity, min_split), max_splits))


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
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    scale: float | None = None,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    num_splits: int | None = None,
    layout: KVLayout = KVLayout.HND,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one new query per sequence over its paged cache.

    q ``(B, H, D)``; k_cache/v_cache ``(N, H_kv, P, D)`` (HND) or ``(N, P, H_kv, D)`` (NHD), float
    like q or fp8 e4m3 / int8 with scales; block_table ``(B, max_blocks)`` int32; seq_lens ``(B,)``
    int32 (clamped to max_blocks·P) -> ``(B, H, D)`` in q's dtype.
    num_splits: KV-length splits (flash-decoding); default `default_num_splits`.
    """
    if not isinstance(layout, KVLayout):
        _fail("layout", f"must be a KVLayout (HND or NHD), got {layout!r}")
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("block_table", block_table), ("seq_lens", seq_lens)):
        if not isinstance(x, torch.Tensor):
            _fail(name, f"must be a torch.Tensor, got {type(x).__name__}")
        if x.device != q.device:
            _fail(name, f"is on {x.device}; every input must be on q's device {q.device}")
    if q.device.type != "cuda" and not _interpreting():
        _fail("q", f"is on {q.device}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
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
    if block_table.dtype != torch.int32 or block_table.dim() != 2 or block_table.shape[0] != B:
        _fail("block_table", f"must be int32 [B={B}, max_blocks], got {block_table.dtype} {tuple(block_table.shape)}")
    if seq_lens.dtype != torch.int32 or seq_lens.shape != (B,):
        _fail("seq_lens", f"must be int32 [B={B}], got {seq_lens.dtype} {tuple(seq_lens.shape)}")
    if block_table.stride(-1) != 1 or seq_lens.stride(0) != 1:
        _fail("block_table", "and seq_lens must be contiguous along their last dim")
    if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
        _fail("num_splits", f"must be a positive int or None, got {num_splits!r}")
    k_kind, ks, ks_strides = _scale_kind("k_scale", k_scale, k_cache, layout, H_kv, q.device)
    v_kind, vs, vs_strides = _scale_kind("v_scale", v_scale, v_cache, layout, H_kv, q.device)
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or out.stride(-1) != 1:
        _fail("out", f"must be {tuple(q.shape)} {q.dtype} on {q.device} with stride(-1) == 1")
    if B == 0:
        return out

    G = H // H_kv
    capacity = block_table.shape[1] * P
    one_block = block_table.shape[1] == 1  # P is then only a bound, not compiled in (any length, one kernel)
    splits = num_splits or default_num_splits(B, H_kv, capacity, q.device)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    single = splits == 1
    if single:
        part = out  # unused
        p_strides = (0, 0, 0, 0, 0)
    else:
        # one allocation, three arrays: [B, H, splits, D] unnormalized outputs, then [B, H, splits]
        # running max (log2 domain) at offset n·D, running sum at n·(D+1); strides in partial rows
        n = B * H * splits
        part = torch.empty(n * (D + 2), dtype=torch.float32, device=q.device)
        p_strides = (H * splits, splits, 1, n * D, n * (D + 1))
    ks = q if ks is None else ks
    vs = q if vs is None else vs
    _launch_split(
        (B, H_kv, splits),
        q, k_cache, v_cache, block_table, seq_lens, ks, vs, out, part, part, part,
        q.stride(0), q.stride(1),
        *layout.strides(k_cache), *layout.strides(v_cache),
        block_table.stride(0), *ks_strides, *vs_strides,
        out.stride(0), out.stride(1), *p_strides,
        G, capacity, scale * LOG2E, splits, _cdiv(capacity, splits).bit_length(),
        PAGE=1 if one_block else P, ONE_BLOCK=one_block, HEAD_DIM=D, G_PAD=max(16, _pow2(G)),
        K_SCALE=k_kind, V_SCALE=v_kind, SINGLE_SPLIT=single,
        DOT_F16=k_cache.dtype == torch.float8_e4m3fn and q.dtype != torch.float32,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    if not single:
        _decode_merge[(B, H)](part, part, part, out, *p_strides, out.stride(0), out.stride(1), H, splits,
                              HEAD_DIM=D, SPLITS_PAD=_pow2(splits))
    return out


# ---------------------------------------------------------------------------------------------
# Building paged caches
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PagedKV:
    """A paged cache ready for `paged_decode_attention(q, **paged.kwargs())`."""

    k_cache: torch.Tensor  # [N, H_kv, P, D] (HND) or [N, P, H_kv, D] (NHD)
    v_cache: torch.Tensor
    block_table: torch.Tensor  # [B, max_blocks] int32
    seq_lens: torch.Tensor  # [B] int32
    layout: KVLayout = KVLayout.HND

    @property
    def block_size(self) -> int:
        return self.layout.dims(self.k_cache)[2]

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

    block_size=None (HND only): no copy; each sequence is one block of P = S (a slice of a
    preallocated [B, H_kv, S_max, D] buffer works too: its strides are passed through).
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
        table = torch.arange(B, dtype=torch.int32, device=k.device)[:, None]  # [B, 1]
        return PagedKV(k, v, table, seq_lens, layout)
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
    """[B, H, D] float64: each sequence's keys gathered through the block table, dequantized."""
    B, H, D = q.shape
    _, H_kv, P, _ = layout.dims(k_cache)
    kf, vf = dequantize_kv(k_cache, k_scale, layout), dequantize_kv(v_cache, v_scale, layout)
    if layout is KVLayout.NHD:
        kf, vf = kf.transpose(1, 2), vf.transpose(1, 2)  # -> [N, H_kv, P, D]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = torch.zeros(B, H, D, dtype=torch.float64, device=q.device)
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
    """K and V of every cached token read once (plus per-token scales), q read, o written.
    Block-table entries and split partials are ignored (under 1% at P >= 16, splits << tokens)."""
    return float(2 * kv_tokens * H_kv * (D * kv_dtype_bytes + scale_bytes_per_token) + 2 * B * H * D * q_dtype_bytes)
