"""attention=mqa: multi-query attention, one KV head shared by every query head.

Made from the checkpoint by mean-pooling all its KV heads' K and V projections into one
(variants/attention/gqa.py explains why that pools the rotated keys too). Exact only when the
checkpoint's KV heads were equal; otherwise an approximation whose cost is measured as
perplexity and KL. KV cache: 2 · D · bytes per token per layer (SmolLM2: 1/3 of the checkpoint's).
"""
from __future__ import annotations

from lab.registry import register
from variants.attention._common import BackendConfig
from variants.attention.gqa import convert_


@register("attention", "mqa", config=BackendConfig)
def apply_(model, cfg: BackendConfig) -> None:
    """Multi-query attention: all KV heads mean-pooled into one."""
    convert_(model, 1, cfg.backend)
