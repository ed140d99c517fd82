"""kernels.swiglu: silu(gate) · up (two tensors, or one packed [..., 2F]) against eager torch.

On CPU the kernel runs under TRITON_INTERPRET=1 (float32/float16); on a GPU the same tests run
compiled, bfloat16 included.
"""
from __future__ import annotations

import zlib

import torch

import pytest

from kernels.swiglu import bytes_moved, flops, swiglu, swiglu_packed, swiglu_packed_reference, swiglu_reference
from kernel_env import DEVICE, GPU

DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if GPU else [])
# silu is rounded to the dtype before the product, as F.silu(g) * u does: at most ~1 ulp apart
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def rand(*shape, dtype, g):
    return (torch.randn(*shape, generator=g) * 4).to(device=DEVICE, dtype=dtype)


SHAPES = [(1,), (7, 33), (2, 3, 1536), (5, 4097)]  # 4097: two column blocks, the second ragged


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, dtype):
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, dtype)).encode()))
    gate, up = rand(*shape, dtype=dtype, g=g), rand(*shape, dtype=dtype, g=g)
    y = swiglu(gate, up)
    assert y.shape == gate.shape and y.dtype == dtype
    torch.testing.assert_close(y.float(), swiglu_reference(gate, up).float(), atol=TOL[dtype], rtol=TOL[dtype])
    truth = swiglu_reference(gate.double(), up.double())
    assert ((y.double() - truth).abs().max() / truth.abs().max()).item() < 2 * TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 2 * 37), (2, 2, 2 * 576)], ids=str)
def test_packed_matches_reference(shape, dtype):
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, dtype, "packed")).encode()))
    gu = rand(*shape, dtype=dtype, g=g)
    y = swiglu_packed(gu)
    assert y.shape == (*shape[:-1], shape[-1] // 2)
    torch.testing.assert_close(y.float(), swiglu_packed_reference(gu).float(), atol=TOL[dtype], rtol=TOL[dtype])


def test_strided_rows():
    g = torch.Generator().manual_seed(5)
    big = rand(4, 300, dtype=torch.float32, g=g)
    gate, up = big[:, :100], big[:, 150:250]  # rows 300 apart, views into one buffer
    torch.testing.assert_close(swiglu(gate, up), swiglu_reference(gate, up), atol=2e-6, rtol=2e-6)


def test_cost_formulas():
    assert flops(3, 10) == 150 and bytes_moved(3, 10, 2) == 180


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(3, 8), torch.randn(3, 9)), r"up shape \(3, 9\) must equal gate's \(3, 8\)"),
        ((torch.randn(3, 8), torch.randn(3, 8).half()), r"up is torch.float16 .* must match gate"),
        ((torch.randint(0, 4, (3, 8)), torch.randint(0, 4, (3, 8))), r"gate has dtype torch.int64"),
        ((torch.randn(8, 3).t(), torch.randn(3, 8)), r"gate must be contiguous along its last dim"),
    ],
)
def test_launcher_errors(args, match):
    with pytest.raises(ValueError, match=match):
        swiglu(*(a.to(DEVICE) for a in args))


def test_packed_errors():
    with pytest.raises(ValueError, match=r"last dim must be even"):
        swiglu_packed(torch.randn(3, 9, device=DEVICE))
