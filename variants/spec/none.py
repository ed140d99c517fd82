"""No speculative decoding: one model call per new token. The spec axis' reference."""
from __future__ import annotations

from dataclasses import dataclass

from lab.registry import VariantConfig, register


@dataclass(frozen=True)
class NoSpecConfig(VariantConfig):
    pass


@register("spec", "none", config=NoSpecConfig, reference=True)
def build(cfg: NoSpecConfig):
    """plain autoregressive decoding"""
    return None
