"""kernels.rope: rope / rope_qk against lab.model.llama.apply_rotary (rotate-half, partial rotary).

On CPU the kernel runs under TRITON_INTERPRET=1 (float32/float16); on a GPU the same tests run
compiled, bfloat16 included.
"""
from __future__ import annotations

import zlib

import torch

import pytest

from kernels.rope import bytes_moved, flops, rope, rope_qk, rope_reference
from lab.model.llama import ModelArgs, RotaryEmbedding, apply_rotary
from kernel_env import DEVICE, GPU

DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if GPU else [])
# the kernel rounds each product like the reference; float32 may fuse a multiply-add (1 ulp)
TOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def seeded(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(parts).encode()))


def tables(B, T, R, g, *, model=False, start=0):
    """cos/sin [B, T, R]: the model's own RotaryEmbedding at random positions, or random tables
    whose two halves differ (the kernel must not assume cos[:R/2] == cos[R/2:])."""
    if model:
        rot = RotaryEmbedding(ModelArgs(head_dim=R, rope_theta=10000.0))
        pos = start + torch.randint(0, 4096, (B, T), generator=g)
        cos, sin = rot(pos)
    else:
        cos, sin = torch.randn(B, T, R, generator=g), torch.randn(B, T, R, generator=g)
    return cos.to(DEVICE), sin.to(DEVICE)


CASES = [  # B, H, T, D, R
    (1, 1, 1, 2, 2),  # the smallest rotation
    (2, 3, 7, 64, 64),  # full rotary
    (1, 9, 5, 64, 32),  # partial rotary: half the dims pass through
    (2, 5, 3, 48, 16),  # D not a power of two
    (1, 2, 9, 128, 128),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}H{}T{}D{}R{}".format(*c))
@pytest.mark.parametrize("model_tables", [True, False], ids=["model", "random"])
def test_matches_reference(case, dtype, model_tables):
    B, H, T, D, R = case
    g = seeded(case, dtype, model_tables)
    x = torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype)
    cos, sin = tables(B, T, R, g, model=model_tables)
    out = rope(x, cos, sin)
    ref = apply_rotary(x, cos, sin)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out.float(), ref.float(), atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(out[..., R:], x[..., R:], atol=0, rtol=0)  # pass-through is a copy


def test_float64_truth_and_reference_alias():
    g = seeded("truth")
    x = torch.randn(2, 4, 6, 64, generator=g).to(DEVICE)
    cos, sin = tables(2, 6, 64, g, model=True)
    truth = apply_rotary(x.double(), cos.double(), sin.double())
    assert (rope(x, cos, sin).double() - truth).abs().max().item() < 1e-5
    torch.testing.assert_close(rope_reference(x, cos, sin), apply_rotary(x, cos, sin), atol=0, rtol=0)


def test_model_layout_and_broadcast_tables():
    """q as the model makes it: a transposed view of [B, T, H, D]; tables shared by the batch."""
    g = seeded("layout")
    B, T, H, D = 3, 5, 4, 32
    q = torch.randn(B, T, H, D, generator=g).to(DEVICE).transpose(1, 2)  # [B, H, T, D], strided
    cos, sin = tables(1, T, D, g)
    out = rope(q, cos, sin)
    torch.testing.assert_close(out, apply_rotary(q, cos, sin), atol=1e-6, rtol=1e-6)


def test_in_place_partial():
    g = seeded("inplace")
    x = torch.randn(2, 3, 4, 64, generator=g).to(DEVICE)
    cos, sin = tables(2, 4, 32, g)
    ref = apply_rotary(x, cos, sin)
    out = rope(x, cos, sin, out=x)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(x, ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("H, H_kv, R", [(8, 2, 64), (3, 3, 32), (16, 1, 64)])
def test_qk_one_launch(dtype, H, H_kv, R):
    g = seeded("qk", dtype, H, H_kv, R)
    B, T, D = 2, 5, 64
    q = torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype)
    k = torch.randn(B, H_kv, T, D, generator=g).to(DEVICE, dtype)
    cos, sin = tables(B, T, R, g, model=True)
    q2, k2 = rope_qk(q, k, cos, sin)
    torch.testing.assert_close(q2.float(), apply_rotary(q, cos, sin).float(), atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(k2.float(), apply_rotary(k, cos, sin).float(), atol=TOL[dtype], rtol=TOL[dtype])
    q_ref, k_ref = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    q3, k3 = rope_qk(q, k, cos, sin, inplace=True)
    assert q3.data_ptr() == q.data_ptr() and k3.data_ptr() == k.data_ptr()
    torch.testing.assert_close(q.float(), q_ref.float(), atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(k.float(), k_ref.float(), atol=TOL[dtype], rtol=TOL[dtype])


def test_cost_formulas():
    assert flops(2, 3, 4, 64) == 3 * 2 * 3 * 4 * 64
    assert bytes_moved(2, 3, 4, 64, 64, 2, 4) == 2 * 2 * 3 * 4 * 64 * 2 + 2 * 2 * 4 * 64 * 4


def _x(*s):
    return torch.randn(*s, device=DEVICE)


@pytest.mark.parametrize(
    "args, match",
    [
        ((_x(2, 3, 4, 16), _x(2, 4, 15), _x(2, 4, 15)), r"R=15 rotary dims; R must be even"),
        ((_x(2, 3, 4, 16), _x(2, 4, 32), _x(2, 4, 32)), r"R=32 .* <= head dim D=16"),
        ((_x(2, 3, 4, 16), _x(2, 5, 16), _x(2, 5, 16)), r"cos must be \[B or 1, T, R\] = \[2 or 1, 4, R\]"),
        ((_x(2, 3, 4, 16), _x(2, 4, 16), _x(2, 4, 8)), r"sin shape \(2, 4, 8\) must equal cos's"),
        ((_x(3, 4, 16), _x(2, 4, 16), _x(2, 4, 16)), r"x must be \[B, H, T, D\]"),
        ((_x(2, 3, 16, 4).transpose(2, 3), _x(2, 4, 4), _x(2, 4, 4)), r"x must be contiguous along D"),
        ((_x(2, 3, 4, 16).long(), _x(2, 4, 16), _x(2, 4, 16)), r"x has dtype torch.int64"),
    ],
)
def test_launcher_errors(args, match):
    with pytest.raises(ValueError, match=match):
        rope(*args)


def test_qk_errors():
    with pytest.raises(ValueError, match=r"k shape .* must be \[B, H_kv, T, D\] with q's B, T, D"):
        rope_qk(_x(2, 4, 3, 16), _x(2, 2, 5, 16), _x(2, 3, 16), _x(2, 3, 16))
