"""Write small Llama GGUFs the way llama.cpp's converter does (for tests): Q/K rows permuted for
interleaved RoPE, dims listed innermost first, optional block quantization."""
from __future__ import annotations

import numpy as np
import torch

BLOCK = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
         "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's LlamaModel.permute (rotate-half -> interleaved rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(lab: str) -> str:
    if lab == "embed_tokens.weight":
        return "token_embd.weight"
    if lab == "norm.weight":
        return "output_norm.weight"
    if lab == "lm_head.weight":
        return "output.weight"
    _, i, *rest = lab.split(".")
    mod = ".".join(rest[:-1])
    return f"blk.{i}.{BLOCK[mod]}.{rest[-1]}"


def write_llama_gguf(path, model, *, qtype: str = "F32", arch: str = "llama", skip=(), replace_tensors=None, extra=None,
                     vocab: list[str] | None = None) -> None:
    import gguf

    a = model.args
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(a.n_layers)
    w.add_context_length(a.max_seq_len)
    w.add_embedding_length(a.dim)
    w.add_feed_forward_length(a.ffn_dim)
    w.add_head_count(a.n_heads)
    w.add_head_count_kv(a.n_kv_heads)
    w.add_rope_freq_base(a.rope_theta)
    w.add_layer_norm_rms_eps(a.norm_eps)
    w.add_vocab_size(a.vocab_size)
    tokens = vocab or ["t", "0", "t0"] + [f"t{i}" for i in range(3, a.vocab_size)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_merges(["t 0"])
    w.add_token_types([1] * len(tokens))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    tensors = {n: p.detach().float().numpy().copy() for n, p in model.named_parameters()}
    if a.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    for name, t in tensors.items():
        if name.endswith("q_proj.weight"):
            t = permute(t, a.n_heads)
        elif name.endswith("k_proj.weight"):
            t = permute(t, a.n_kv_heads)
        gname = gguf_name(name)
        if gname in skip:
            continue
        t = (replace_tensors or {}).get(gname, t)
        if t.ndim == 2 and qtype != "F32":
            qt = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(gname, gguf.quants.quantize(t, qt), raw_dtype=qt)
        else:
            w.add_tensor(gname, t.astype(np.float32))
    for gname, t in (extra or {}).items():
        w.add_tensor(gname, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
