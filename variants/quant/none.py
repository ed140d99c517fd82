"""No quantization: weights stay in the run's dtype (bf16 on GPU, float32 on CPU). The quant
axis' reference, against which every scheme's perplexity, KL and SQNR are reported."""
from __future__ import annotations

from dataclasses import dataclass

from lab.registry import VariantConfig, register


@dataclass(frozen=True)
class NoQuantConfig(VariantConfig):
    pass


@register("quant", "none", config=NoQuantConfig, reference=True)
def apply_(model, cfg: NoQuantConfig) -> None:
    """weights in the run's dtype (no change)"""
    return None
