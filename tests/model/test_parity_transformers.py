"""Parity with transformers' LlamaForCausalLM: the real SmolLM2 GGUF loaded by both (transformers
dequantizes and un-permutes with its own code), greedy generations, and checkpoints saved by
transformers loading in the lab."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from lab.model.generate import generate
from lab.model.peers import to_transformers
from lab.model.weights import init_random_
from tests.model.conftest import make_tiny

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_smollm2(smollm2_path):
    """transformers' own GGUF loading: from_pretrained(gguf_file=...) needs `accelerate`; without
    it, the same dequantize + un-permute code (load_gguf_checkpoint) fills a LlamaForCausalLM."""
    d, f = str(smollm2_path.parent), smollm2_path.name
    if importlib.util.find_spec("accelerate") is not None:
        return transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = transformers.AutoConfig.from_pretrained(d, gguf_file=f)
    model = transformers.LlamaForCausalLM(config).float()
    state = load_gguf_checkpoint(str(smollm2_path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected
    model.tie_weights()
    return model.eval()


PROMPT = "The three laws of thermodynamics are"


def test_smollm2_logits_match_transformers(smollm2, hf_smollm2):
    ids = torch.tensor([smollm2.tokenizer.encode(PROMPT + " the rules that govern energy, heat and entropy in every system.")])
    with torch.inference_mode():
        ours = smollm2.model(ids)
        theirs = hf_smollm2(ids).logits
    assert ours.shape == theirs.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=1e-4)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.slow  # ~20 s on a loaded 2-core machine (two 32-token CPU generations)
def test_smollm2_greedy_32_tokens_identical(smollm2, hf_smollm2):
    tok = smollm2.tokenizer
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Write a short story about a robot who learns to paint."}]))
    ours = generate(smollm2.model, [prompt], max_new_tokens=32, stop_ids=tok.stop_ids)
    with torch.inference_mode():
        out = hf_smollm2.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=tok.stop_ids, pad_token_id=2)
    theirs = out[0, len(prompt):].tolist()
    assert len(ours.tokens[0]) == 32 and not ours.stopped[0]  # 32 real tokens compared, no early stop
    assert ours.tokens[0] == theirs
    assert len(set(theirs)) > 8  # real text, not a repeated token


def test_checkpoint_saved_by_transformers_loads_with_matching_logits(tmp_path):
    from lab.model import safetensors_io as st

    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=300, max_position_embeddings=256,
                                      rope_theta=5000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.1)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    loaded = st.load(tmp_path, device="cpu", dtype=torch.float32)
    assert loaded.args.rope_theta == 5000.0 and loaded.args.norm_eps == 1e-6 and not loaded.args.tie_embeddings
    ids = torch.randint(0, 300, (2, 19))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_peer_shares_weights_and_matches_with_llama3_rope_scaling():
    from dataclasses import replace

    from lab import registry
    from lab.model.weights import empty_model

    args = replace(registry.get("model", "llama32_1b").default_config().model_args(), dim=64, n_heads=4, n_kv_heads=2,
                   head_dim=16, ffn_dim=128, vocab_size=300, n_layers=2)
    torch.manual_seed(0)
    model = init_random_(empty_model(args, device="cpu", dtype=torch.float32), std=0.1)
    hf = to_transformers(model)
    assert hf.model.embed_tokens.weight.data_ptr() == model.embed_tokens.weight.data_ptr()  # no copy
    ids = torch.randint(0, 300, (2, 40))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)
    tiny = make_tiny(tie_embeddings=False)
    with torch.inference_mode():
        torch.testing.assert_close(tiny(ids), to_transformers(tiny)(ids).logits, atol=1e-4, rtol=1e-4)
