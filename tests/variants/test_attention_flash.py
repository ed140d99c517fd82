"""backend=flash (the Triton kernels) inside the model, against the reference core, float32.

On CPU the kernels run under TRITON_INTERPRET=1, which is slow: one layer, short sequences.
Prefill goes through kernels/attention_prefill, decode steps through kernels/attention_decode.
"""
from __future__ import annotations

import copy
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported

import pytest

from lab import registry
from lab.model.kv_cache import ContiguousKVCache
from lab.model.llama import ModelArgs, Transformer

ARGS = ModelArgs(dim=48, n_layers=1, n_heads=6, n_kv_heads=3, head_dim=16, ffn_dim=64, vocab_size=97,
                 rope_theta=10000.0, max_seq_len=64)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = dict(rtol=2e-4, atol=2e-4)


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    m = Transformer(ARGS).float().to(DEVICE).eval()
    with torch.no_grad():
        for layer in m.layers:
            layer.self_attn.q_proj.weight.mul_(1.5)
    return m


def converted(base, name, **cfg):
    entry = registry.get("attention", name)
    m = copy.deepcopy(base)
    entry.fn(m, entry.make_config(cfg))
    return m


@torch.no_grad()
def prefill_then_decode(model, tok, prefill: int):
    cache = ContiguousKVCache(ARGS.n_layers, tok.shape[0], tok.shape[1])
    out = [model(tok[:, :prefill], cache=cache, start=0)]
    for t in range(prefill, tok.shape[1]):
        out.append(model(tok[:, t : t + 1], cache=cache, start=t))
    return torch.cat(out, 1)


CASES = [
    ("flash", {}, "reference", {}),
    ("gqa", dict(groups=2, backend="flash"), "gqa", dict(groups=2)),  # uneven groups: K/V expanded to H
    ("mla", dict(rank=24, rope_dim=4, decode="naive", backend="flash"), "mla", dict(rank=24, rope_dim=4, decode="naive")),
    ("sliding_window", dict(window=5, sinks=2, backend="flash"), "sliding_window", dict(window=5, sinks=2)),
]


@pytest.mark.parametrize("name,cfg,ref_name,ref_cfg", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_flash_backend_equals_reference_core(base, name, cfg, ref_name, ref_cfg):
    tok = torch.randint(0, ARGS.vocab_size, (2, 21), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    fast, ref = converted(base, name, **cfg), converted(base, ref_name, **ref_cfg)
    with torch.no_grad():
        want = ref(tok)
        torch.testing.assert_close(fast(tok), want, **TOL)
        torch.testing.assert_close(prefill_then_decode(fast, tok, 17), want, **TOL)


def test_flash_decode_uses_the_paged_decode_kernel(base, monkeypatch):
    import kernels.attention_decode as ad

    calls = []
    real = ad.paged_decode_attention
    monkeypatch.setattr(ad, "paged_decode_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = converted(base, "flash")
    tok = torch.randint(0, ARGS.vocab_size, (1, 6), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with torch.no_grad():
        got = prefill_then_decode(m, tok, 5)
        torch.testing.assert_close(got, converted(base, "reference")(tok), **TOL)
    assert len(calls) == ARGS.n_layers  # one decode step, one layer


def test_flash_with_left_padding_matches_unpadded_rows(base):
    m = converted(base, "flash")
    tok = torch.randint(0, ARGS.vocab_size, (1, 11), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    pad = 5
    padded = torch.cat((torch.zeros(1, pad, dtype=tok.dtype, device=DEVICE), tok), 1)
    key_mask = torch.arange(pad + 11, device=DEVICE)[None] >= pad
    pos = (torch.arange(pad + 11, device=DEVICE) - pad).clamp_min(0)[None]
    with torch.no_grad():
        torch.testing.assert_close(m(padded, key_mask=key_mask, pos=pos)[:, pad:], m(tok), **TOL)
