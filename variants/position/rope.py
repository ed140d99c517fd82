"""RoPE as the checkpoint defines it (theta, and Llama-3.1 scaling when its config has it): the
position axis' reference. The model is built with it, so applying it changes nothing; other
position variants (NTK, YaRN, ALiBi …) replace `model.rotary` or the attention's use of it."""
from __future__ import annotations

from dataclasses import dataclass

from lab.registry import VariantConfig, register


@dataclass(frozen=True)
class RopeConfig(VariantConfig):
    pass


@register("position", "rope", config=RopeConfig, reference=True)
def apply_(model, cfg: RopeConfig) -> None:
    """rotary embedding as in the checkpoint (no change)"""
    return None
