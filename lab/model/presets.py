"""Model presets: `model=NAME` on the command line. A preset is a shape and where weights come from.

    smollm2_135m  SmolLM2-135M-Instruct, the real Q4_1 GGUF (default; fetched by lab.model.fetch)
    hf            any local Hugging Face Llama-family checkpoint dir (model.path=DIR)
    llama3_8b     Llama-3-8B shape, random weights (no tokenizer)
    llama32_1b    Llama-3.2-1B shape (tied embeddings, llama3 RoPE scaling), random weights
    qwen25_05b    Qwen2.5-0.5B shape, random weights; its q/k/v biases are left out (the lab's
                  Llama has none), which changes no shape and only ~0.1% of the FLOPs
    tiny          2 layers, width 64, GQA 4/2, vocab 512: builds in milliseconds, for tests

Any preset takes `model.source=random|gguf|safetensors` and `model.path=...` (a real checkpoint
of that shape, or random weights at a real model's shape) and `model.n_layers=K` (keep the first
K blocks: quick runs with real weights). `ModelConfig.model_args()` reads only the GGUF header or
config.json, so the runner checks head counts for every point before any weight is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lab.errors import LabError
from lab.model import LoadedModel
from lab.model.llama import ModelArgs
from lab.registry import VariantConfig, register

SOURCES = ("gguf", "safetensors", "random")

_LLAMA31_ROPE = (("factor", 32.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
                 ("original_max_position_embeddings", 8192), ("rope_type", "llama3"))


@dataclass(frozen=True)
class Preset:
    args: ModelArgs | None  # None: read from the checkpoint (hf)
    source: str  # default source
    doc: str


PRESETS: dict[str, Preset] = {
    "smollm2_135m": Preset(
        ModelArgs(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, ffn_dim=1536, vocab_size=49152,
                  rope_theta=100000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=8192),
        "gguf", "SmolLM2-135M-Instruct, real Q4_1 GGUF weights dequantized (default)"),
    "hf": Preset(None, "safetensors", "a local Hugging Face Llama-family checkpoint directory (model.path=DIR)"),
    "llama3_8b": Preset(
        ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, ffn_dim=14336, vocab_size=128256,
                  rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=False, max_seq_len=8192),
        "random", "Llama-3-8B shape, random weights (16 GB in bf16)"),
    "llama32_1b": Preset(
        ModelArgs(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64, ffn_dim=8192, vocab_size=128256,
                  rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=131072, rope_scaling=_LLAMA31_ROPE),
        "random", "Llama-3.2-1B shape, random weights"),
    "qwen25_05b": Preset(
        ModelArgs(dim=896, n_layers=24, n_heads=14, n_kv_heads=2, head_dim=64, ffn_dim=4864, vocab_size=151936,
                  rope_theta=1000000.0, norm_eps=1e-6, tie_embeddings=True, max_seq_len=32768),
        "random", "Qwen2.5-0.5B shape without its q/k/v biases, random weights"),
    "tiny": Preset(
        ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128, vocab_size=512,
                  rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False, max_seq_len=1024),
        "random", "tiny random model for tests (2 layers, width 64, GQA 4/2)"),
}


@dataclass(frozen=True)
class ModelConfig(VariantConfig):
    source: str = ""  # gguf | safetensors | random; "" = the preset's own
    path: str | None = None  # a .gguf file or a checkpoint dir; None = the preset's default
    n_layers: int | None = None  # keep only the first n_layers blocks (quick runs)

    @property
    def preset(self) -> Preset:
        if self.name not in PRESETS:
            raise LabError(f"model={self.name!r} is not a preset; presets: {', '.join(PRESETS)}")
        return PRESETS[self.name]

    def resolved_source(self) -> str:
        src = self.source or self.preset.source
        if src not in SOURCES:
            raise LabError(f"model.source={src!r}; choose one of {', '.join(SOURCES)}")
        if src == "safetensors" and not self.path:
            raise LabError(f"model={self.name} model.source=safetensors needs model.path=DIR (a Hugging Face checkpoint directory)")
        if src == "random" and self.preset.args is None:
            raise LabError(f"model={self.name} has no shape of its own; give model.path=DIR (and source=safetensors)")
        if self.n_layers is not None and self.n_layers < 1:
            raise LabError(f"model.n_layers={self.n_layers}: must be >= 1")
        return src

    def model_args(self) -> ModelArgs:
        """The shape, cheaply: the preset's, or the GGUF header / config.json of the checkpoint."""
        from lab.model import fetch, gguf, safetensors_io

        src = self.resolved_source()
        if src == "safetensors":
            args = safetensors_io.read_config(self.path)
        elif src == "gguf":
            path = self.path or fetch.locate(download=False)
            if path is None:  # not downloaded yet: the default file has the preset's shape
                args = self.preset.args
            else:
                args = gguf.model_args(path)
        else:
            args = self.preset.args
        if self.n_layers:
            args = replace(args, n_layers=min(self.n_layers, args.n_layers))
        return args

    def validate(self, args: ModelArgs) -> None:
        self.resolved_source()


def build_model(cfg: ModelConfig, *, device, dtype: torch.dtype) -> LoadedModel:
    """The LoadedModel a config asks for, complete, on `device` in `dtype` (or one LabError)."""
    from lab.model import fetch, gguf, safetensors_io
    from lab.model.weights import empty_model, init_random_

    src = cfg.resolved_source()
    if src == "gguf":
        path = Path(cfg.path).expanduser() if cfg.path else fetch.locate()
        return gguf.load(path, device=device, dtype=dtype, n_layers=cfg.n_layers)
    if src == "safetensors":
        return safetensors_io.load(Path(cfg.path).expanduser(), device=device, dtype=dtype, n_layers=cfg.n_layers)
    args = cfg.model_args()
    model = init_random_(empty_model(args, device=device, dtype=dtype))
    return LoadedModel(model.eval(), args, None, source=f"random ({cfg.name} shape)")


def _register(name: str, preset: Preset) -> None:
    def build(cfg: ModelConfig, *, device, dtype: torch.dtype) -> LoadedModel:
        return build_model(cfg, device=device, dtype=dtype)

    build.__doc__, build.__name__ = preset.doc, f"build_{name}"
    register("model", name, config=ModelConfig, reference=(name == "smollm2_135m"))(build)


for _name, _preset in PRESETS.items():
    _register(_name, _preset)
