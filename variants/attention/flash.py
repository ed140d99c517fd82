"""attention=flash: the lab's Triton kernels as the core.

Prefill (T > 1): kernels/attention_prefill.flash_attention, FlashAttention-2 with GQA read in
place (kv head = h // G), causal bottom-right when a cache prefix exists. Decode (T == 1): the
paged decode kernel of kernels/attention_decode over the contiguous cache viewed as pages, when
that kernel is present (else the prefill kernel with one query row). Without CUDA it runs only
under TRITON_INTERPRET=1, in float32/float16 (the interpreter computes with numpy).
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.errors import LabError
from lab.registry import VariantConfig, register
from variants.attention._common import FLASH_HEAD_DIMS, attention_modules, flash_core


@dataclass(frozen=True)
class FlashConfig(VariantConfig):
    def validate(self, args) -> None:
        if args.head_dim not in FLASH_HEAD_DIMS:
            raise LabError(f"attention=flash: the kernel supports head dims {FLASH_HEAD_DIMS}; the model has {args.head_dim}")


@register("attention", "flash", config=FlashConfig, requires=("triton",))
def apply_(model, cfg: FlashConfig) -> None:
    """The Triton FlashAttention-2 prefill kernel and paged decode kernel."""
    for attn in attention_modules(model):
        attn.core = flash_core
