"""Hugging Face checkpoint dirs: save/load round-trips (tied, untied, sharded with and without an
index), a tokenizer saved beside them, and clear errors for every kind of bad directory."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lab.errors import LabError
from lab.model import safetensors_io as st
from tests.model.conftest import make_tiny


@pytest.mark.parametrize("tie", [True, False])
def test_save_load_round_trip(tmp_path, tie):
    model = make_tiny(tie_embeddings=tie)
    st.save(model, tmp_path)
    names = set(load_file(tmp_path / "model.safetensors"))
    assert "model.layers.1.mlp.down_proj.weight" in names and ("lm_head.weight" in names) == (not tie)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["tie_word_embeddings"] == tie and cfg["num_key_value_heads"] == 2
    loaded = st.load(tmp_path, device="cpu", dtype=torch.float64)
    assert loaded.args == model.args and loaded.tokenizer is None
    ids = torch.randint(0, 512, (2, 7))
    torch.testing.assert_close(loaded.model(ids), model.double()(ids), atol=1e-6, rtol=1e-6)
    one = st.load(tmp_path, device="cpu", dtype=torch.float32, n_layers=1)
    assert len(one.model.layers) == 1


def _shard(tmp_path, model, with_index: bool):
    st.save(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2], "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for file, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / file))
    if with_index:
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: f for f, ks in parts.items() for k in ks}}))
    return parts


@pytest.mark.parametrize("with_index", [True, False])
def test_sharded_checkpoints(tmp_path, with_index):
    model = make_tiny(tie_embeddings=False)
    _shard(tmp_path, model, with_index)
    loaded = st.load(tmp_path, device="cpu", dtype=torch.float32)
    for name, p in model.named_parameters():
        assert torch.equal(dict(loaded.model.named_parameters())[name], p), name


def test_missing_shard_truncated_and_bad_config(tmp_path):
    model = make_tiny()
    parts = _shard(tmp_path, model, with_index=True)
    second = tmp_path / list(parts)[1]
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])
    with pytest.raises(LabError, match="truncated or corrupt") as e:
        st.load(tmp_path, device="cpu", dtype=torch.float32)
    assert str(second) in str(e.value)
    second.unlink()
    with pytest.raises(LabError, match="lists shard 'model-00002-of-00002.safetensors', which is missing"):
        st.load(tmp_path, device="cpu", dtype=torch.float32)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LabError, match="not valid JSON"):
        st.read_config(tmp_path)


def test_wrong_model_type_shapes_and_pickles(tmp_path):
    model = make_tiny()
    st.save(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(LabError, match="model_type 'gpt2' is not Llama-family"):
        st.read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    with pytest.raises(LabError, match=r"'layers.0.mlp.gate_proj.weight' has shape \(128, 64\), expected \(96, 64\)"):
        st.load(tmp_path, device="cpu", dtype=torch.float32)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "attention_bias": True}))
    with pytest.raises(LabError, match="attention_bias"):
        st.read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(LabError, match="never loaded"):
        st.load(tmp_path, device="cpu", dtype=torch.float32)
    with pytest.raises(LabError, match="no config.json"):
        st.read_config(tmp_path / "nowhere")


def test_hf_preset_needs_path_and_reads_config_cheaply(tmp_path):
    from dataclasses import replace

    from lab import registry

    e = registry.get("model", "hf")
    with pytest.raises(LabError, match="needs model.path"):
        e.default_config().model_args()
    st.save(make_tiny(), tmp_path)
    cfg = replace(e.default_config(), path=str(tmp_path))
    assert cfg.model_args().dim == 64
    assert e.fn(cfg, device="cpu", dtype=torch.float32).args.n_layers == 2


def test_tokenizer_saved_and_reloaded(tmp_path, smollm2):
    tiny = make_tiny(vocab_size=49152)
    st.save(tiny, tmp_path, tokenizer=smollm2.tokenizer)
    loaded = st.load(tmp_path, device="cpu", dtype=torch.float32)
    tok = loaded.tokenizer
    text = "def f(x):\n    return 'héllo' + 12"
    assert tok.encode(text) == smollm2.tokenizer.encode(text) and tok.decode(tok.encode(text)) == text
    assert (tok.bos_id, tok.eos_id, tok.chat_template) == (1, 2, smollm2.tokenizer.chat_template)
