"""attention=mha: multi-head attention, every query head with its own K/V head.

Made from a GQA checkpoint by repeating each KV head for the query heads that shared it: the
same function as the checkpoint (exact), with H / H_kv times the KV cache (SmolLM2: 9 vs 3 heads,
3x the bytes per token) and that much more K/V read per decode step. What GQA saves is this.
"""
from __future__ import annotations

from lab.registry import register
from variants.attention._common import BackendConfig
from variants.attention.gqa import convert_


@register("attention", "mha", config=BackendConfig)
def apply_(model, cfg: BackendConfig) -> None:
    """Multi-head attention: KV heads repeated to one per query head (exact, H/H_kv x the cache)."""
    convert_(model, model.args.n_heads, cfg.backend)
