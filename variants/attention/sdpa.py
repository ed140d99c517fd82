"""attention=sdpa: torch's scaled_dot_product_attention as the core, a peer of the Triton kernel.

Same weights and head layout as the checkpoint (GQA through `enable_gqa`); torch picks its own
backend (flash, memory-efficient, cuDNN or math). Full causal prefill and decode steps pass no
mask, so the fused kernels are eligible; padded batches pass a boolean mask.
"""
from __future__ import annotations

from lab.registry import VariantConfig, register
from variants.attention._common import attention_modules, sdpa_core


@register("attention", "sdpa", config=VariantConfig)
def apply_(model, cfg: VariantConfig) -> None:
    """torch scaled_dot_product_attention on the checkpoint's GQA heads."""
    for attn in attention_modules(model):
        attn.core = sdpa_core
