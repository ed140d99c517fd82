"""kernels.rmsnorm: the fused residual-add + RMSNorm against lab.model.llama.RMSNorm's math.

On CPU the kernel runs under TRITON_INTERPRET=1 (float32/float16); on a GPU the same tests run
compiled, bfloat16 included.
"""
from __future__ import annotations

import zlib

import torch

import pytest

from kernels.rmsnorm import bytes_moved, flops, rmsnorm, rmsnorm_reference
from lab.model.llama import RMSNorm
from kernel_env import DEVICE, GPU

DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if GPU else [])
# one rounding of the output in its dtype (plus float32 sum-order noise)
TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def rand(*shape, dtype, g):
    return torch.randn(*shape, generator=g).to(device=DEVICE, dtype=dtype)


SHAPES = [(1, 1), (3, 77), (2, 5, 576), (4, 1000), (1, 3, 2049)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_matches_reference(shape, dtype, residual):
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, dtype, residual)).encode()))
    C = shape[-1]
    x = rand(*shape, dtype=dtype, g=g) * 3
    w = rand(C, dtype=dtype, g=g)
    r = rand(*shape, dtype=dtype, g=g) if residual else None
    y, h = rmsnorm(x, w, 1e-5, residual=r)
    y_ref, h_ref = rmsnorm_reference(x, w, 1e-5, residual=r)
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    torch.testing.assert_close(h, h_ref, atol=0, rtol=0)  # the add rounds once, like torch's
    torch.testing.assert_close(y.float(), y_ref.float(), atol=TOL[dtype], rtol=TOL[dtype])
    # and against float64 truth (the benchmark's error metric): within the dtype's rounding
    y64, _ = rmsnorm_reference(h_ref.double(), w.double(), 1e-5)
    assert ((y.double() - y64).abs().max() / y64.abs().max()).item() < 4 * TOL[dtype]


def test_reference_is_the_model_module():
    g = torch.Generator().manual_seed(7)
    x, w = rand(3, 64, dtype=torch.float32, g=g), rand(64, dtype=torch.float32, g=g)
    mod = RMSNorm(64, eps=1e-6).to(DEVICE)
    with torch.no_grad():
        mod.weight.copy_(w)
    torch.testing.assert_close(rmsnorm_reference(x, w, 1e-6)[0], mod(x), atol=0, rtol=0)
    torch.testing.assert_close(rmsnorm(x, w, 1e-6)[0], mod(x), atol=1e-5, rtol=1e-5)


def test_weight_dtype_promotes_like_torch():
    g = torch.Generator().manual_seed(3)
    x, w = rand(5, 96, dtype=torch.float16, g=g), rand(96, dtype=torch.float32, g=g)
    y, _ = rmsnorm(x, w)
    y_ref, _ = rmsnorm_reference(x, w)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)


def test_strided_rows_and_no_residual_returns_input():
    g = torch.Generator().manual_seed(11)
    big = rand(6, 130, dtype=torch.float32, g=g)
    x = big[:, :100]  # rows 130 apart: read in place, no copy
    w = rand(100, dtype=torch.float32, g=g)
    y, h = rmsnorm(x, w, 1e-6)
    assert h is x
    torch.testing.assert_close(y, rmsnorm_reference(x, w, 1e-6)[0], atol=1e-5, rtol=1e-5)


def test_cost_formulas():
    assert flops(10, 64) == 10 * 64 * 4 and flops(10, 64, residual=True) == 10 * 64 * 5
    assert bytes_moved(10, 64, 2, residual=True) == 10 * 64 * 2 * 4 + 64 * 2


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: (torch.randn(4, 8), torch.randn(7)), r"weight must have shape \(8,\)"),
        (lambda: (torch.randint(0, 3, (4, 8)), torch.randn(8)), r"x has dtype torch.int64"),
        (lambda: (torch.randn(8, 4).t(), torch.randn(8)), r"x must be contiguous along its last dim"),
        (lambda: (torch.randn(4, 70000), torch.randn(70000)), r"C=70000 > 65536"),
    ],
)
def test_launcher_errors(make, match):
    x, w = make()
    with pytest.raises(ValueError, match=match):
        rmsnorm(x.to(DEVICE), w.to(DEVICE))


def test_residual_errors():
    x = torch.randn(4, 8, device=DEVICE)
    with pytest.raises(ValueError, match=r"residual must match x"):
        rmsnorm(x, torch.randn(8, device=DEVICE), residual=torch.randn(4, 9, device=DEVICE))
    with pytest.raises(ValueError, match=r"eps must be a float >= 0"):
        rmsnorm(x, torch.randn(8, device=DEVICE), eps=-1.0)
