"""Rotary position embedding (RoPE) in Triton, beside its eager reference.

    out = rope(x, cos, sin)               # x [B, H, T, D], cos/sin [B|1, T, R], R <= D, R even
    q2, k2 = rope_qk(q, k, cos, sin)      # q and k in one launch (H and H_kv heads)

The kernel takes the rotary tables as input, so every scaling variant (linear, NTK, YaRN,
Llama-3, partial rotary with R < D) only changes how cos/sin are built and reuses it.
Convention: rotate-half, pairs (i, i + R/2), exactly `lab.model.llama.apply_rotary`:

    out[:R/2]  = x[:R/2] · cos[:R/2] - x[R/2:R] · sin[:R/2]
    out[R/2:R] = x[R/2:R] · cos[R/2:R] + x[:R/2] · sin[R/2:R]
    out[R:]    = x[R:]                                  (partial rotary: the rest passes through)

Rounding follows the reference: cos/sin are cast to x's dtype and, for 16-bit x, each product
is rounded before the sum (as two separate torch multiplies and an add would).

One program owns one (b, t) and BLOCK_H heads: it loads that position's cos/sin once and reuses
them for every head in the block (the tables are read B·T·R times, not B·H·T·R).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _rope_block(
    X, O, b, t, h0, n_heads,
    sxb, sxh, sxt, sob, soh, sot,
    c1, c2, s1, s2,  # [1, HALF] this position's tables, already in x's dtype
    R, D,
    BLOCK_H: tl.constexpr, HALF: tl.constexpr, BLOCK_P: tl.constexpr, COPY_PASS: tl.constexpr,
):
    heads = h0 + tl.arange(0, BLOCK_H)[:, None]  # [BH, 1]
    i = tl.arange(0, HALF)[None, :]  # [1, HALF]
    hm = heads < n_heads
    m = hm & (i < R // 2)
    xb = X + b * sxb + t * sxt + heads * sxh
    ob = O + b * sob + t * sot + heads * soh
    dt = X.dtype.element_ty
    x1 = tl.load(xb + i, mask=m, other=0.0)  # [BH, HALF]
    x2 = tl.load(xb + i + R // 2, mask=m, other=0.0)
    # each product rounded to x's dtype before the sum, as in the reference (no-op for float32)
    o1 = (x1 * c1).to(dt).to(tl.float32) - (x2 * s1).to(dt).to(tl.float32)
    o2 = (x2 * c2).to(dt).to(tl.float32) + (x1 * s2).to(dt).to(tl.float32)
    tl.store(ob + i, o1.to(O.dtype.element_ty), mask=m)
    tl.store(ob + i + R // 2, o2.to(O.dtype.element_ty), mask=m)
    if COPY_PASS:  # partial rotary, out of place: dims R..D-1 are copied
        p = R + tl.arange(0, BLOCK_P)[None, :]
        pm = hm & (p < D)
        tl.store(ob + p, tl.load(xb + p, mask=pm, other=0.0), mask=pm)


@triton.jit
def _rope_fwd(
    X, O, X2, O2, COS, SIN,
    sxb, sxh, sxt, sob, soh, sot,
    sx2b, sx2h, sx2t, so2b, so2h, so2t,
    scb, sct, ssb, sst,  # table strides over (b, t); the last dim is contiguous
    T, H, H2, R, D,
    BLOCK_H: tl.constexpr, HALF: tl.constexpr, BLOCK_P: tl.constexpr,
    COPY_PASS: tl.constexpr, TWO: tl.constexpr,
):
    pid_bt = tl.program_id(0)
    pid_h = tl.program_id(1)
    b = (pid_bt // T).to(tl.int64)
    t = (pid_bt % T).to(tl.int64)
    i = tl.arange(0, HALF)[None, :]
    im = i < R // 2
    dt = X.dtype.element_ty
    # this position's tables, loaded once for all BLOCK_H heads (and for q and k)
    c1 = tl.load(COS + b * scb + t * sct + i, mask=im, other=0.0).to(dt)
    c2 = tl.load(COS + b * scb + t * sct + i + R // 2, mask=im, other=0.0).to(dt)
    s1 = tl.load(SIN + b * ssb + t * sst + i, mask=im, other=0.0).to(dt)
    s2 = tl.load(SIN + b * ssb + t * sst + i + R // 2, mask=im, other=0.0).to(dt)
    n_blocks_1 = tl.cdiv(H, BLOCK_H)
    if pid_h < n_blocks_1:
        _rope_block(X, O, b, t, pid_h * BLOCK_H, H, sxb, sxh, sxt, sob, soh, sot,
                    c1, c2, s1, s2, R, D, BLOCK_H, HALF, BLOCK_P, COPY_PASS)
    elif TWO:
        _rope_block(X2, O2, b, t, (pid_h - n_blocks_1) * BLOCK_H, H2, sx2b, sx2h, sx2t, so2b, so2h, so2t,
                    c1, c2, s1, s2, R, D, BLOCK_H, HALF, BLOCK_P, COPY_PASS)


# ---------------------------------------------------------------------------------------------
# Configs: a heuristic table. A program should move a few KB: BLOCK_H heads of one position.
# ---------------------------------------------------------------------------------------------
def _config(H: int, D: int) -> tuple[int, int]:
    block_h = max(1, min(triton.next_power_of_2(H), max(1, 2048 // max(D, 1))))
    elems = block_h * triton.next_power_of_2(D)
    return block_h, max(1, min(8, elems // 256))  # (BLOCK_H, num_warps)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def _fail(fn: str, name: str, msg: str):
    raise ValueError(f"{fn}: {name} {msg}")


def _check_x(fn: str, name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        _fail(fn, name, f"must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        _fail(fn, name, f"has dtype {x.dtype}; supported: float16, bfloat16, float32")
    if x.dim() != 4:
        _fail(fn, name, f"must be [B, H, T, D], got shape {tuple(x.shape)}")
    if x.stride(-1) != 1 and x.shape[-1] > 1:
        _fail(fn, name, f"must be contiguous along D (stride(-1) == 1), got strides {tuple(x.stride())}; pass {name}.contiguous()")
    if x.device.type != "cuda" and not _interpreting():
        _fail(fn, name, f"is on {x.device}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")


def _check_tables(fn: str, x: torch.Tensor, cos, sin) -> tuple[int, tuple[int, int, int, int]]:
    B, H, T, D = x.shape
    for name, c in (("cos", cos), ("sin", sin)):
        if not isinstance(c, torch.Tensor):
            _fail(fn, name, f"must be a torch.Tensor, got {type(c).__name__}")
        if c.dtype not in SUPPORTED_DTYPES:
            _fail(fn, name, f"has dtype {c.dtype}; supported: float16, bfloat16, float32")
        if c.device != x.device:
            _fail(fn, name, f"is on {c.device}; must be on x's device {x.device}")
        if c.dim() != 3 or c.shape[0] not in (1, B) or c.shape[1] != T:
            _fail(fn, name, f"must be [B or 1, T, R] = [{B} or 1, {T}, R], got shape {tuple(c.shape)}")
        if c.stride(-1) != 1 and c.shape[-1] > 1:
            _fail(fn, name, f"must be contiguous along R (stride(-1) == 1), got strides {tuple(c.stride())}; pass {name}.contiguous()")
    R = cos.shape[-1]
    if sin.shape != cos.shape:
        _fail(fn, "sin", f"shape {tuple(sin.shape)} must equal cos's {tuple(cos.shape)}")
    if R % 2 or R == 0 or R > D:
        _fail(fn, "cos", f"has R={R} rotary dims; R must be even, >= 2 and <= head dim D={D}")
    strides = (cos.stride(0) if cos.shape[0] == B else 0, cos.stride(1), sin.stride(0) if sin.shape[0] == B else 0, sin.stride(1))
    return R, strides


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _launch(x, out, x2, out2, cos, sin, R, table_strides):
    B, H, T, D = x.shape
    H2 = x2.shape[1] if x2 is not None else 0
    if x.numel() == 0:
        return
    block_h, warps = _config(max(H, H2), D)
    n_blocks = triton.cdiv(H, block_h) + (triton.cdiv(H2, block_h) if x2 is not None else 0)
    copy_pass = R < D and out.data_ptr() != x.data_ptr()
    _rope_fwd[(B * T, n_blocks)](
        x, out, x2 if x2 is not None else x, out2 if out2 is not None else out, cos, sin,
        *_strides(x), *_strides(out),
        *_strides(x2 if x2 is not None else x), *_strides(out2 if out2 is not None else out),
        *table_strides, T, H, H2, R, D,
        BLOCK_H=block_h, HALF=triton.next_power_of_2(R // 2),
        BLOCK_P=triton.next_power_of_2(max(D - R, 1)), COPY_PASS=copy_pass, TWO=x2 is not None,
        num_warps=warps,
    )


def _check_out(fn: str, name: str, out, x: torch.Tensor) -> torch.Tensor:
    if out is None:
        return torch.empty_like(x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        _fail(fn, name, f"must be a tensor like the input: {tuple(x.shape)} {x.dtype} on {x.device}")
    if out.stride(-1) != 1:
        _fail(fn, name, f"must be contiguous along D, got strides {tuple(out.stride())}")
    if out.data_ptr() == x.data_ptr() and out.stride() != x.stride():
        _fail(fn, name, "aliases the input with different strides; pass the input itself for in place")
    return out


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate x ``(B, H, T, D)`` by the tables ``(B or 1, T, R)``; ``out=x`` rotates in place."""
    _check_x("rope", "x", x)
    R, ts = _check_tables("rope", x, cos, sin)
    out = _check_out("rope", "out", out, x)
    _launch(x, out, None, None, cos, sin, R, ts)
    return out


def rope_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """rope(q), rope(k) in one launch: q ``(B, H, T, D)``, k ``(B, H_kv, T, D)``, same tables."""
    _check_x("rope_qk", "q", q)
    _check_x("rope_qk", "k", k)
    if k.dtype != q.dtype or k.device != q.device:
        _fail("rope_qk", "k", f"is {k.dtype} on {k.device}; must match q: {q.dtype} on {q.device}")
    if k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:]:
        _fail("rope_qk", "k", f"shape {tuple(k.shape)} must be [B, H_kv, T, D] with q's B, T, D {tuple(q.shape)}")
    R, ts = _check_tables("rope_qk", q, cos, sin)
    q_out, k_out = (q, k) if inplace else (torch.empty_like(q), torch.empty_like(k))
    _launch(q, q_out, k, k_out, cos, sin, R, ts)
    return q_out, k_out


# ---------------------------------------------------------------------------------------------
# Reference (the model's own function)
# ---------------------------------------------------------------------------------------------
def rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    from lab.model.llama import apply_rotary

    return apply_rotary(x, cos, sin)


# ---------------------------------------------------------------------------------------------
# Cost formulas
# ---------------------------------------------------------------------------------------------
def flops(B: int, H: int, T: int, R: int) -> float:
    """Per rotated element: two multiplies and an add."""
    return 3 * B * H * T * R


def bytes_moved(B: int, H: int, T: int, D: int, R: int, dtype_bytes: int = 2, table_bytes: int = 4) -> float:
    """Read and write x (the pass-through dims too: out of place copies them), read the tables once
    per position."""
    return 2 * B * H * T * D * dtype_bytes + 2 * B * T * R * table_bytes
