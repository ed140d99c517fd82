"""Sampling in torch: temperature, then top-k, top-p (nucleus) and min-p filters, then one draw.

    p = softmax(logits / T)
    top-k: keep the k most probable tokens
    top-p: keep the smallest set of most probable tokens whose mass reaches p (at least one)
    min-p: keep tokens with p_i >= min_p · max_j p_j
    draw:  argmax(p_i / E_i) with E_i ~ Exp(1), an exact draw from p without torch.multinomial's
           host sync (gpt-fast's multinomial_sample_one_no_sync)

Costs per step: a sort of the vocabulary only when top-p is on (B·V·log V), else O(B·V).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.errors import LabError
from lab.registry import VariantConfig, register


@dataclass(frozen=True)
class MultinomialConfig(VariantConfig):
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    min_p: float = 0.0  # 0.0: off

    def validate(self, args=None) -> None:
        if self.temperature < 0:
            raise LabError(f"sampler.temperature={self.temperature}: must be >= 0 (0 is greedy)")
        if self.top_k < 0:
            raise LabError(f"sampler.top_k={self.top_k}: must be >= 0 (0 is off)")
        if not 0.0 < self.top_p <= 1.0:
            raise LabError(f"sampler.top_p={self.top_p}: must be in (0, 1] (1 is off)")
        if not 0.0 <= self.min_p <= 1.0:
            raise LabError(f"sampler.min_p={self.min_p}: must be in [0, 1] (0 is off)")


def probs(logits: torch.Tensor, cfg: MultinomialConfig) -> torch.Tensor:
    """The distribution a draw comes from: [B, V] float32, rows summing to 1. (Tests compare
    empirical frequencies against it.)"""
    x = logits.float() / max(cfg.temperature, 1e-6)
    V = x.shape[-1]
    if 0 < cfg.top_k < V:
        kth = torch.topk(x, cfg.top_k, dim=-1).values[..., -1:]  # [B, 1]
        x = x.masked_fill(x < kth, float("-inf"))
    p = torch.softmax(x, dim=-1)
    if cfg.top_p < 1.0:
        sp, idx = torch.sort(p, dim=-1, descending=True)
        before = sp.cumsum(-1) - sp  # mass of the more probable tokens
        drop = before >= cfg.top_p  # the first token is never dropped (before = 0)
        p = p.scatter(-1, idx, sp.masked_fill(drop, 0.0))
    if cfg.min_p > 0.0:
        p = p.masked_fill(p < cfg.min_p * p.amax(-1, keepdim=True), 0.0)
    return p / p.sum(-1, keepdim=True)


def sample(logits: torch.Tensor, cfg: MultinomialConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row: logits [B, V] -> [B] (int64)."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    p = probs(logits, cfg)
    e = torch.empty_like(p).exponential_(1.0, generator=generator)
    return (p / e).argmax(-1)


@register("sampler", "multinomial", config=MultinomialConfig)
def build(cfg: MultinomialConfig):
    """temperature / top-k / top-p / min-p sampling in torch"""
    cfg.validate()
    return lambda logits, generator=None: sample(logits, cfg, generator)
