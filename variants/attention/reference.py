"""attention=reference: the model as loaded, eager attention that materializes the softmax.

Every other attention variant is tested and benchmarked against this one. The scores
``[B, H, T, S]`` exist in float32 (B·H·T·S·4 bytes), which is what tiled kernels avoid.
"""
from __future__ import annotations

from lab.model.llama import eager_attention
from lab.registry import VariantConfig, register
from variants.attention._common import attention_modules


@register("attention", "reference", config=VariantConfig, reference=True)
def apply_(model, cfg: VariantConfig) -> None:
    """Eager attention (the materialized softmax), GQA as in the checkpoint."""
    for attn in attention_modules(model):
        attn.core = eager_attention
