"""Peers: the same weights in another implementation, for parity tests and side-by-side timings.

    hf = to_transformers(model)      # transformers' LlamaForCausalLM sharing the lab's tensors

The lab's parameter names are LlamaForCausalLM's without the `model.` prefix, so the mapping is
a prefix; the tensors are shared (assign=True), so the peer costs no extra weight memory.
"""
from __future__ import annotations

import importlib.util

import torch

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
WHY_NOT_TRANSFORMERS = "" if HAS_TRANSFORMERS else "transformers is not installed (pip install transformers)"


def to_transformers(model, attn_implementation: str = "sdpa"):
    """transformers.LlamaForCausalLM with `model`'s config and (shared) weights, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lab.model.safetensors_io import config_from_args

    cfg = config_from_args(model.args)
    cfg.pop("architectures")
    cfg.pop("model_type")
    p = model.embed_tokens.weight
    config = LlamaConfig(**cfg, attn_implementation=attn_implementation)
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    state = {(n if n == "lm_head.weight" else f"model.{n}"): t for n, t in model.named_parameters()}
    if model.args.tie_embeddings:
        state["lm_head.weight"] = model.embed_tokens.weight
    hf.load_state_dict(state, strict=True, assign=True)
    hf.model.rotary_emb = type(hf.model.rotary_emb)(config=config).to(p.device)  # its float32 inv_freq was on meta
    if model.args.tie_embeddings:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    return hf.eval()  # parameters are already in the lab's dtype; inv_freq stays float32, as in HF
