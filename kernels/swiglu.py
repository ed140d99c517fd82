"""SwiGLU's elementwise half, in Triton, beside its eager reference.

    y = swiglu(gate, up)           # silu(gate) · up, gate/up [..., F] (the two projections' outputs)
    y = swiglu_packed(gate_up)     # the same from one [..., 2F] tensor (a fused gate_up projection:
                                   # gate = [..., :F], up = [..., F:])

Unfused, eager torch runs silu (read F, write F) then the multiply (read 2F, write F): 5 passes
over [N, F]. Fused: read 2, write 1. The packed form is the same kernel on two strided views.

Rounding follows `F.silu(gate) * up`: silu in float32 rounded to the input dtype, then the
product in float32 rounded again.
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
def _swiglu_fwd(
    G, U, Y,
    stride_g, stride_u, stride_y,  # row strides; the last dim is contiguous
    F,
    BLOCK_F: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask = cols < F
    g = tl.load(G + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + row * stride_u + cols, mask=mask, other=0.0)
    silu = (g / (1.0 + tl.exp(-g))).to(U.dtype.element_ty)  # rounded, as F.silu returns it
    y = silu.to(tl.float32) * u.to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Configs: a heuristic table. Each program does BLOCK_F columns of one row; 2-D grid so that rows
# narrower than a block do not waste lanes and wide rows still fill the GPU.
# ---------------------------------------------------------------------------------------------
def _config(F: int) -> tuple[int, int]:
    block = min(4096, triton.next_power_of_2(F))
    return block, max(1, min(8, block // 512))  # (BLOCK_F, num_warps): 16 B per thread per load


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def _fail(fn: str, name: str, msg: str):
    raise ValueError(f"{fn}: {name} {msg}")


def _rows(fn: str, name: str, t: torch.Tensor, F: int) -> torch.Tensor:
    if t.stride(-1) != 1 and F > 1:
        _fail(fn, name, f"must be contiguous along its last dim (stride(-1) == 1), got strides {tuple(t.stride())}; pass {name}.contiguous()")
    try:
        return t.view(-1, F)
    except RuntimeError:
        _fail(fn, name, f"with shape {tuple(t.shape)} and strides {tuple(t.stride())} cannot be viewed as rows of {F}; pass {name}.contiguous()")


def _check(fn: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(fn, name, f"must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        _fail(fn, name, f"has dtype {t.dtype}; supported: float16, bfloat16, float32")
    if t.device.type != "cuda" and not _interpreting():
        _fail(fn, name, f"is on {t.device}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if t.dim() < 1:
        _fail(fn, name, f"must be [..., F], got a 0-d tensor")


def _launch(g2: torch.Tensor, u2: torch.Tensor, y2: torch.Tensor) -> None:
    N, F = g2.shape
    if N == 0 or F == 0:
        return
    BLOCK_F, warps = _config(F)
    _swiglu_fwd[(N, triton.cdiv(F, BLOCK_F))](
        g2, u2, y2, g2.stride(0), u2.stride(0), y2.stride(0), F, BLOCK_F=BLOCK_F, num_warps=warps,
    )


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) · up for gate, up ``(..., F)`` of one dtype and device -> ``(..., F)``."""
    _check("swiglu", "gate", gate)
    _check("swiglu", "up", up)
    if up.shape != gate.shape:
        _fail("swiglu", "up", f"shape {tuple(up.shape)} must equal gate's {tuple(gate.shape)}")
    if up.dtype != gate.dtype or up.device != gate.device:
        _fail("swiglu", "up", f"is {up.dtype} on {up.device}; must match gate: {gate.dtype} on {gate.device}")
    F = gate.shape[-1]
    y = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    _launch(_rows("swiglu", "gate", gate, F), _rows("swiglu", "up", up, F), y.view(-1, F))
    return y


def swiglu_packed(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate_up[..., :F]) · gate_up[..., F:] for gate_up ``(..., 2F)`` -> ``(..., F)``."""
    _check("swiglu_packed", "gate_up", gate_up)
    if gate_up.shape[-1] % 2:
        _fail("swiglu_packed", "gate_up", f"last dim must be even (2F: gate then up), got {gate_up.shape[-1]}")
    F = gate_up.shape[-1] // 2
    rows = _rows("swiglu_packed", "gate_up", gate_up, 2 * F)  # [N, 2F]
    y = torch.empty((*gate_up.shape[:-1], F), dtype=gate_up.dtype, device=gate_up.device)
    _launch(rows[:, :F], rows[:, F:], y.view(-1, F))
    return y


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------
def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(gate) * up


def swiglu_packed_reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


# ---------------------------------------------------------------------------------------------
# Cost formulas
# ---------------------------------------------------------------------------------------------
def flops(N: int, F: int) -> float:
    """Per output: silu = g / (1 + exp(-g)) as 4 (negate, exp, add, divide), then the product."""
    return 5 * N * F


def bytes_moved(N: int, F: int, dtype_bytes: int = 2) -> float:
    """Read gate and up, write y."""
    return 3 * N * F * dtype_bytes
