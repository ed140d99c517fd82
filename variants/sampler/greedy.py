"""Greedy decoding: the next token is the argmax of the logits. The sampler axis' reference:
deterministic, so any other sampler at temperature -> 0, and speculative decoding, must match it."""
from __future__ import annotations

from dataclasses import dataclass

from lab.model.generate import greedy
from lab.registry import VariantConfig, register


@dataclass(frozen=True)
class GreedyConfig(VariantConfig):
    pass


@register("sampler", "greedy", config=GreedyConfig, reference=True)
def build(cfg: GreedyConfig):
    """argmax of the logits (deterministic)"""
    return greedy  # (logits [B, V], generator) -> tokens [B]
