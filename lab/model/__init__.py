"""The shared model: a Llama-family decoder, its weights (GGUF, safetensors, random), tokenizer,
KV cache, generation and perplexity."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.model.llama import ModelArgs, Transformer


@dataclass
class LoadedModel:
    model: Transformer
    args: ModelArgs
    tokenizer: Any = None  # lab.model.tokenizer.Tokenizer, or None for random-weight presets
    source: str = ""  # where the weights came from (path, "random"), for provenance
