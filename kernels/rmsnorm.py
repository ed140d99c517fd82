"""RMSNorm fused with the residual add, in Triton, beside its eager reference.

    y, h = rmsnorm(x, weight, eps, residual=r)   # h = x + r;  y = h / rms(h) · w

A pre-norm block does `h = h + attn(norm(h))` then `norm(h)` again: unfused that is an add
(read 2, write 1) and a norm (read 1, write 1). Fused, one program owns one row of C values: it
reads x and r once, writes h (the next residual) and y, and keeps the row in registers between the
sum of squares and the scaling. Rounding follows `lab.model.llama.RMSNorm` step by step:

    h  = (x + r) rounded to x.dtype          (what `x = x + attn_out` does in the model)
    n  = h · rsqrt(mean(h²) + eps)            in float32, rounded to x.dtype
    y  = n · w                                in promote(x.dtype, w.dtype), as torch's `*` does
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_C = 65536  # one row lives in registers; wider rows would spill


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _rmsnorm_fwd(
    X, R, W, Y, H,  # x, residual, weight, out y, out h (new residual)
    stride_x, stride_r, stride_y, stride_h,  # row strides; the last dim is contiguous
    C, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    mask = cols < C
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)  # one rounding, as torch's add
        tl.store(H + row * stride_h + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / C + eps)  # stats in float32
    n = (xf * rstd).to(X.dtype.element_ty)  # the reference rounds before the weight multiply
    w = tl.load(W + cols, mask=mask, other=0.0)
    y = n.to(tl.float32) * w.to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Configs: a heuristic table (no autotuning: the kernel is one row, one load, one store; the
# only knob is how many warps share the row)
# ---------------------------------------------------------------------------------------------
def _num_warps(block_c: int) -> int:
    # ~8 to 16 values per thread keeps loads 16 bytes wide without spilling
    return max(1, min(16, block_c // 256))


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def _fail(name: str, msg: str):
    raise ValueError(f"rmsnorm: {name} {msg}")


def _rows(name: str, t: torch.Tensor, C: int) -> torch.Tensor:
    """t [..., C] as a [N, C] view with contiguous rows (no copy)."""
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        _fail(name, f"must be contiguous along its last dim (stride(-1) == 1), got strides {tuple(t.stride())}; pass {name}.contiguous()")
    try:
        return t.view(-1, C)
    except RuntimeError:
        _fail(name, f"with shape {tuple(t.shape)} and strides {tuple(t.stride())} cannot be viewed as rows of {C}; pass {name}.contiguous()")


def rmsnorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMS-normalize the last dim of ``x`` (``(..., C)``) and scale by ``weight`` ``(C,)``.

    With ``residual`` (same shape and dtype as x) the input is ``h = x + residual`` and the
    return is ``(y, h)``; without, ``(y, x)``. y has dtype promote(x.dtype, weight.dtype).
    """
    for name, t in (("x", x), ("weight", weight)) + ((("residual", residual),) if residual is not None else ()):
        if not isinstance(t, torch.Tensor):
            _fail(name, f"must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES:
            _fail(name, f"has dtype {t.dtype}; supported: float16, bfloat16, float32")
        if t.device != x.device:
            _fail(name, f"is on {t.device}; must be on x's device {x.device}")
    if x.device.type != "cuda" and not _interpreting():
        _fail("x", f"is on {x.device}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if x.dim() < 1 or x.shape[-1] == 0:
        _fail("x", f"must be [..., C] with C >= 1, got shape {tuple(x.shape)}")
    C = x.shape[-1]
    if C > MAX_C:
        _fail("x", f"has C={C} > {MAX_C}; this kernel keeps one row in registers")
    if weight.shape != (C,):
        _fail("weight", f"must have shape ({C},) to match x's last dim, got {tuple(weight.shape)}")
    if weight.stride(0) != 1 and C > 1:
        _fail("weight", f"must be contiguous, got stride {weight.stride(0)}; pass weight.contiguous()")
    if residual is not None:
        if residual.shape != x.shape or residual.dtype != x.dtype:
            _fail("residual", f"must match x: {tuple(x.shape)} {x.dtype}, got {tuple(residual.shape)} {residual.dtype}")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        _fail("eps", f"must be a float >= 0, got {eps!r}")

    x2 = _rows("x", x, C)
    y = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    y2 = y.view(-1, C)
    if residual is not None:
        r2 = _rows("residual", residual, C)
        h = torch.empty_like(x, memory_format=torch.contiguous_format)
        h2 = h.view(-1, C)
    else:
        r2, h, h2 = x2, x, x2  # never read or written (HAS_RESIDUAL is off)
    N = x2.shape[0]
    if N == 0:
        return y, h
    BLOCK_C = triton.next_power_of_2(C)
    _rmsnorm_fwd[(N,)](
        x2, r2, weight, y2, h2,
        x2.stride(0), r2.stride(0), y2.stride(0), h2.stride(0),
        C, float(eps),
        HAS_RESIDUAL=residual is not None, BLOCK_C=BLOCK_C,
        num_warps=_num_warps(BLOCK_C),
    )
    return y, h


# ---------------------------------------------------------------------------------------------
# Reference: lab.model.llama.RMSNorm's math, with the residual add before it
# ---------------------------------------------------------------------------------------------
def rmsnorm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5, residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    h = x + residual if residual is not None else x
    hf = h.float() if h.dtype != torch.float64 else h  # float64 inputs stay float64 (benchmark truth)
    y = (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype) * weight
    return y, h


# ---------------------------------------------------------------------------------------------
# Cost formulas
# ---------------------------------------------------------------------------------------------
def flops(N: int, C: int, residual: bool = False) -> float:
    """Per element: square, add (the sum), scale by rstd, scale by weight; +1 for the residual add."""
    return N * C * (4 + (1 if residual else 0))


def bytes_moved(N: int, C: int, dtype_bytes: int = 2, residual: bool = False, weight_bytes: int | None = None) -> float:
    """Read x (and r), write y (and h); the weight is read once per program but counted once:
    it stays in L2, so the DRAM traffic is the [N, C] streams plus one weight."""
    streams = 2 + (2 if residual else 0)
    return N * C * dtype_bytes * streams + C * (weight_bytes or dtype_bytes)
