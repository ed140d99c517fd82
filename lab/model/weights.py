"""Making a model's storage and filling it: empty on the target device, random, or from a state dict.

Every loader (GGUF, safetensors, random) goes through here, so they share two guarantees:
weights are allocated once, directly in the target dtype on the target device (an 8B model in
bf16 is 16 GB: it never exists in float32 on the CPU), and a model is handed out only complete —
a missing, extra or mis-shaped tensor raises one LabError before anything is returned.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from lab.errors import LabError
from lab.model.llama import ModelArgs, RotaryEmbedding, Transformer


def empty_model(args: ModelArgs, *, device: torch.device | str, dtype: torch.dtype) -> Transformer:
    """A Transformer whose parameters are allocated (uninitialized) on `device` in `dtype`.
    Built on the meta device first, so no throwaway float32 copy is ever made."""
    model = _meta_model(args, device)
    model = model.to(dtype=dtype).to_empty(device=device)
    return _finish(model, args, device)


def _meta_model(args: ModelArgs, device) -> Transformer:
    with torch.device("meta"):
        model = Transformer(args)
    return model


def _finish(model: Transformer, args: ModelArgs, device) -> Transformer:
    model.rotary = RotaryEmbedding(args).to(device)  # its float32 tables are computed, not stored
    if args.tie_embeddings:  # to_empty / assignment may have replaced the shared Parameter by two
        model.lm_head.weight = model.embed_tokens.weight
    return model.requires_grad_(False).eval()


@torch.no_grad()
def init_random_(model: Transformer, std: float = 0.02) -> Transformer:
    """Normal(0, std) matrices and unit norms. With RMSNorm before every block the residual stream
    stays O(1) per layer, so activations stay finite at any depth and in bf16."""
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, std)
    return model


@torch.no_grad()
def from_state(args: ModelArgs, state: Mapping[str, torch.Tensor], source: str, *, device, dtype: torch.dtype) -> Transformer:
    """A complete Transformer from `state` (lab/HF names without the `model.` prefix). Checks
    every name and shape first, then moves tensors one at a time to `device`/`dtype` (no copy when
    they already match), so peak memory is the state plus one tensor. Raises one LabError naming
    `source` and the tensor; nothing half-built escapes."""
    model = _meta_model(args, device)
    params = dict(model.named_parameters())  # a tied lm_head appears once, as embed_tokens.weight
    missing = [n for n in params if n not in state]
    extra = [n for n in state if n not in params and not (args.tie_embeddings and n == "lm_head.weight")]
    if missing:
        raise LabError(f"{source}: tensor {missing[0]!r} is missing ({len(missing)} missing in all); the checkpoint does not match the model shape {_shape(args)}")
    if extra:
        raise LabError(f"{source}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all); a Llama-family checkpoint of shape {_shape(args)} has no such tensor (biases, MoE and rope_freqs are not supported)")
    for name, p in params.items():
        shape = tuple(state.shape(name) if hasattr(state, "shape") else state[name].shape)  # lazy states read headers only
        if shape != tuple(p.shape):
            raise LabError(f"{source}: tensor {name!r} has shape {shape}, expected {tuple(p.shape)} from the model config {_shape(args)}")
    for name in params:
        t = state[name]
        # one sum instead of an isfinite mask (30x faster): NaN/Inf anywhere makes it non-finite
        if t.is_floating_point() and not torch.isfinite(t.sum()):
            raise LabError(f"{source}: tensor {name!r} holds NaN or Inf; the checkpoint is corrupt")
        mod_name, _, leaf = name.rpartition(".")
        model.get_submodule(mod_name)._parameters[leaf] = nn.Parameter(t.to(device=device, dtype=dtype), requires_grad=False)
    return _finish(model, args, device)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and persistent buffers (tied tensors once): what a decode step reads.
    Quantized variants that keep packed weights in buffers are counted at their packed size."""
    seen, total = set(), 0
    tensors = list(model.parameters()) + [b for n, b in model.named_buffers() if _persistent(model, n)]
    for t in tensors:
        if t.data_ptr() in seen or t.device.type == "meta":
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def _persistent(model: torch.nn.Module, name: str) -> bool:
    mod_name, _, buf = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    return buf not in getattr(mod, "_non_persistent_buffers_set", set())


def _shape(a: ModelArgs) -> str:
    return f"(dim={a.dim}, layers={a.n_layers}, heads={a.n_heads}/{a.n_kv_heads}, head_dim={a.head_dim}, ffn={a.ffn_dim}, vocab={a.vocab_size})"
