"""Hugging Face checkpoint directories (config.json + *.safetensors) in and out. Never unpickles.

    args = read_config(dir)                                  # config.json only
    loaded = load(dir, device="cuda", dtype=torch.bfloat16)  # shards streamed tensor by tensor
    save(loaded, out_dir)                                    # config.json, model.safetensors, tokenizer

Names on disk are LlamaForCausalLM's (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`);
the lab's are the same without `model.`. A tied `lm_head.weight` is absent on disk (HF's habit).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from lab.errors import LabError
from lab.model.llama import ModelArgs

MODEL_TYPES = ("llama", "mistral", "qwen2", "smollm")  # config model_types whose layout matches (qwen2 only without biases)


def read_config(path: str | Path) -> ModelArgs:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise LabError(f"{path}: no config.json; model.path must be a Hugging Face checkpoint directory (config.json + *.safetensors)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabError(f"{cfg_file}: not valid JSON ({e})") from None
    return args_from_config(cfg, str(cfg_file))


def args_from_config(cfg: dict[str, Any], source: str = "config.json") -> ModelArgs:
    mt = cfg.get("model_type")
    if mt not in MODEL_TYPES:
        raise LabError(f"{source}: model_type {mt!r} is not Llama-family; the lab loads {', '.join(MODEL_TYPES)}")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise LabError(f"{source}: attention_bias/mlp_bias are set; the lab's Llama has no biases")
    rope = dict(cfg.get("rope_parameters") or {})  # transformers >= 5 keeps theta and scaling here
    scaling = cfg.get("rope_scaling") or ({k: v for k, v in rope.items() if k != "rope_theta"} if rope.get("rope_type") not in (None, "default") else None)
    if scaling and scaling.get("rope_type", scaling.get("type")) not in ("llama3", "default"):
        raise LabError(f"{source}: rope scaling {scaling!r} is not supported by the base model (only llama3)")
    try:
        H = int(cfg["num_attention_heads"])
        return ModelArgs(
            dim=int(cfg["hidden_size"]),
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=H,
            n_kv_heads=int(cfg.get("num_key_value_heads") or H),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // H),
            ffn_dim=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_seq_len=int(cfg.get("max_position_embeddings", 4096)),
            rope_scaling=tuple(sorted(scaling.items())) if scaling else None,
        )
    except KeyError as e:
        raise LabError(f"{source}: missing key {e} needed to build the model") from None
    except ValueError as e:
        raise LabError(f"{source}: {e}") from None


def config_from_args(args: ModelArgs) -> dict[str, Any]:
    """A config.json that transformers' LlamaForCausalLM reads back to the same model."""
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads,
        "head_dim": args.head_dim,
        "intermediate_size": args.ffn_dim,
        "vocab_size": args.vocab_size,
        "rope_theta": args.rope_theta,
        "rms_norm_eps": args.norm_eps,
        "tie_word_embeddings": args.tie_embeddings,
        "max_position_embeddings": args.max_seq_len,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
    }
    if args.rope_scaling:
        cfg["rope_scaling"] = dict(args.rope_scaling)
    return cfg


class ShardedState(Mapping):
    """Lab-named view of every tensor in a checkpoint's shards; a tensor is read only when asked,
    so a 16 GB model goes to the GPU one tensor at a time."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        index = path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise LabError(f"{index}: not a safetensors index ({e})") from None
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in path.glob("*.safetensors"))
        if not files:
            raise LabError(f"{path}: no *.safetensors files; model.path must hold the weights as safetensors (.bin pickles are never loaded)")
        self._handles, self._where = {}, {}
        for name in files:
            f = path / name
            if not f.is_file():
                raise LabError(f"{index}: lists shard {name!r}, which is missing from {path}")
            try:
                self._handles[name] = h = safe_open(str(f), framework="pt", device="cpu")
                keys = list(h.keys())
            except Exception as e:  # SafetensorError: truncated or garbled header
                raise LabError(f"{f}: not a readable safetensors file ({str(e)[:200]}); truncated or corrupt") from None
            for k in keys:
                lab = k[len("model."):] if k.startswith("model.") else k
                self._where[lab] = (name, k)

    def shape(self, name: str) -> tuple[int, ...]:
        file, key = self._where[name]
        return tuple(self._handles[file].get_slice(key).get_shape())

    def __getitem__(self, name: str) -> torch.Tensor:
        file, key = self._where[name]
        try:
            return self._handles[file].get_tensor(key)
        except Exception as e:
            raise LabError(f"{self.path / file}: cannot read tensor {key!r} ({str(e)[:200]})") from None

    def __contains__(self, name) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def load(path: str | Path, *, device, dtype: torch.dtype, n_layers: int | None = None):
    """A complete LoadedModel from a checkpoint directory (tokenizer from tokenizer.json if there)."""
    from lab.model import LoadedModel
    from lab.model.tokenizer import Tokenizer
    from lab.model.weights import from_state

    path = Path(path)
    args = read_config(path)
    state: Mapping[str, Any] = ShardedState(path)
    if n_layers and n_layers < args.n_layers:
        args = replace(args, n_layers=n_layers)
        state = _TruncatedState(state, n_layers)
    model = from_state(args, state, str(path), device=device, dtype=dtype)
    return LoadedModel(model, args, Tokenizer.from_hf_dir(path), source=str(path))


class _TruncatedState(Mapping):
    """The first n_layers blocks of a state (the rest hidden)."""

    def __init__(self, state, n_layers: int):
        self.state, self.keep = state, [k for k in state if not (k.startswith("layers.") and int(k.split(".")[1]) >= n_layers)]

    def shape(self, name):
        return self.state.shape(name)

    def __getitem__(self, name):
        return self.state[name]

    def __iter__(self):
        return iter(self.keep)

    def __len__(self):
        return len(self.keep)

    def __contains__(self, name):
        return name in self.keep


def save(loaded_or_model, path: str | Path, tokenizer=None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer.json when a tokenizer is known)."""
    from safetensors.torch import save_file

    model = getattr(loaded_or_model, "model", loaded_or_model)
    tokenizer = tokenizer or getattr(loaded_or_model, "tokenizer", None)
    args: ModelArgs = model.args
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{n}" if n != "lm_head.weight" else n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config_from_args(args), indent=2))
    if tokenizer is not None:
        tokenizer.backend.save(str(path / "tokenizer.json"))
        tok = lambda i: tokenizer.token(i) if i is not None else None
        (path / "tokenizer_config.json").write_text(json.dumps({
            "bos_token": tok(tokenizer.bos_id), "eos_token": tok(tokenizer.eos_id), "pad_token": tok(tokenizer.pad_id),
            "add_bos_token": tokenizer.add_bos, "chat_template": tokenizer.chat_template,
        }, indent=2))
    return path
