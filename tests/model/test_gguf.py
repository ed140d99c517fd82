"""GGUF: synthetic files written like llama.cpp's converter round-trip; the real SmolLM2 file's raw
blocks decode to the same weights; every kind of bad file is one LabError naming file and tensor."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from lab.errors import LabError
from lab.model import gguf as lgguf
from tests.model.conftest import make_tiny
from tests.model.gguf_util import write_llama_gguf


def _sqnr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - x).pow(2).sum()))


@pytest.mark.parametrize("tie", [True, False])
def test_f32_roundtrip_unpermutes_qk_exactly(tmp_path, tie):
    model = make_tiny(tie_embeddings=tie)
    path = tmp_path / "tiny.gguf"
    write_llama_gguf(path, model)
    args = lgguf.model_args(path)
    assert (args.dim, args.n_heads, args.n_kv_heads, args.head_dim, args.n_layers) == (64, 4, 2, 16, 2)
    loaded = lgguf.load(path, device="cpu", dtype=torch.float32)
    assert loaded.args.tie_embeddings == tie and loaded.source == str(path)
    for name, p in model.named_parameters():
        assert torch.equal(dict(loaded.model.named_parameters())[name], p), name
    ids = torch.randint(0, 512, (2, 11))
    torch.testing.assert_close(loaded.model(ids), model(ids), atol=0, rtol=0)


def test_q8_0_roundtrip_and_truncated_layers(tmp_path):
    model = make_tiny(torch.float32)
    path = tmp_path / "q8.gguf"
    write_llama_gguf(path, model, qtype="Q8_0")
    raw = lgguf.read_quantized(path)
    assert raw["layers.0.self_attn.q_proj.weight"].qtype == "Q8_0" and raw["norm.weight"].qtype == "F32"
    assert raw["layers.0.self_attn.q_proj.weight"].shape == (64, 64)
    loaded = lgguf.load(path, device="cpu", dtype=torch.float32)
    got = dict(loaded.model.named_parameters())
    for name, p in model.named_parameters():  # Q8_0 keeps ~8 bits: > 35 dB per matrix (a wrong row order would be ~0 dB)
        assert _sqnr_db(p, got[name]) > (35 if p.ndim == 2 else 200), name
    ids = torch.randint(0, 512, (1, 9))
    assert _sqnr_db(model(ids), loaded.model(ids)) > 20
    one = lgguf.load(path, device="cpu", dtype=torch.float32, n_layers=1)
    assert one.args.n_layers == 1 and len(one.model.layers) == 1


def _dequant_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_1 written out by hand: 20-byte blocks (fp16 d, fp16 m, 16 bytes: low nibbles are weights
    0..15, high nibbles 16..31), w = d·q + m."""
    b = raw.reshape(raw.shape[0], -1, 20)
    d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
    m = b[..., 2:4].copy().view(np.float16).astype(np.float32)
    qs = b[..., 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
    return (d * q + m).reshape(raw.shape[0], -1)


def _dequant_q8_0(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(raw.shape[0], -1, 34)
    d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
    return (d * b[..., 2:].copy().view(np.int8).astype(np.float32)).reshape(raw.shape[0], -1)


def test_real_file_blocks_decode_to_loaded_weights(smollm2_path, smollm2):
    args = lgguf.model_args(smollm2_path)
    assert (args.dim, args.n_layers, args.n_heads, args.n_kv_heads, args.vocab_size) == (576, 30, 9, 3, 49152)
    raw = lgguf.read_quantized(smollm2_path, args)
    assert len(raw) == 272 and raw["embed_tokens.weight"].qtype == "Q8_0"
    params = dict(smollm2.model.named_parameters())
    for name in ("layers.0.self_attn.q_proj.weight", "layers.7.self_attn.k_proj.weight", "layers.29.mlp.down_proj.weight"):
        q = raw[name]
        assert q.qtype == "Q4_1" and q.shape == tuple(params[name].shape)
        np.testing.assert_allclose(_dequant_q4_1(q.raw), params[name].numpy(), rtol=0, atol=1e-6)
    emb = raw["embed_tokens.weight"]
    np.testing.assert_allclose(_dequant_q8_0(emb.raw[:1000]), params["embed_tokens.weight"][:1000].numpy(), rtol=0, atol=1e-6)


# ---- bad files ----------------------------------------------------------------------------------
def test_missing_and_not_gguf(tmp_path):
    with pytest.raises(LabError, match="no such GGUF file"):
        lgguf.load(tmp_path / "nope.gguf", device="cpu", dtype=torch.float32)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(LabError, match="bad magic"):
        lgguf.model_args(bad)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_file(tmp_path, keep):
    model = make_tiny()
    path = tmp_path / "full.gguf"
    write_llama_gguf(path, model)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(LabError) as e:
        lgguf.load(cut, device="cpu", dtype=torch.float32)
    assert str(cut) in str(e.value) and "truncated" in str(e.value)
    if keep > 0.9:
        assert "tensor 'blk." in str(e.value) or "tensor 'output" in str(e.value)


def test_truncated_header_of_real_file(tmp_path, smollm2_path):
    cut = tmp_path / "head.gguf"
    with open(smollm2_path, "rb") as f:
        cut.write_bytes(f.read(200_000))  # ends inside the vocabulary
    with pytest.raises(LabError, match="truncated or corrupt"):
        lgguf.model_args(cut)


def test_wrong_architecture(tmp_path):
    path = tmp_path / "gpt2.gguf"
    write_llama_gguf(path, make_tiny(), arch="gpt2")
    with pytest.raises(LabError, match="architecture 'gpt2' is not supported"):
        lgguf.load(path, device="cpu", dtype=torch.float32)


def test_mismatched_shape_missing_extra_and_nan(tmp_path):
    model = make_tiny()
    cases = {
        "shape": dict(replace_tensors={"blk.1.ffn_up.weight": np.zeros((128, 32), np.float32)}),
        "missing": dict(skip={"blk.1.attn_v.weight"}),
        "extra": dict(extra={"rope_freqs.weight": np.ones(8, np.float32)}),
        "nan": dict(replace_tensors={"blk.0.ffn_down.weight": np.full((64, 128), np.nan, np.float32)}),
    }
    expect = {"shape": r"'layers.1.mlp.up_proj.weight' has shape \(128, 32\), expected \(128, 64\)",
              "missing": r"'layers.1.self_attn.v_proj.weight' is missing",
              "extra": r"unexpected tensor 'rope_freqs.weight'",
              "nan": r"'layers.0.mlp.down_proj.weight' holds NaN"}
    for case, kw in cases.items():
        path = tmp_path / f"{case}.gguf"
        write_llama_gguf(path, model, **kw)
        with pytest.raises(LabError, match=expect[case]) as e:
            lgguf.load(path, device="cpu", dtype=torch.float32)
        assert str(path) in str(e.value)


def test_preset_with_local_gguf_path(tmp_path):
    from dataclasses import replace

    from lab import registry

    model = make_tiny()
    path = tmp_path / "m.gguf"
    write_llama_gguf(path, model)
    e = registry.get("model", "smollm2_135m")
    cfg = replace(e.default_config(), path=str(path), n_layers=1)
    assert cfg.model_args().n_layers == 1 and cfg.model_args().dim == 64
    loaded = e.fn(cfg, device="cpu", dtype=torch.float64)
    assert loaded.model.embed_tokens.weight.dtype == torch.float64 and len(loaded.model.layers) == 1
    assert loaded.tokenizer is not None and loaded.tokenizer.vocab_size == 512
