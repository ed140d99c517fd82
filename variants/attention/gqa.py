"""attention=gqa: grouped-query attention with `groups` KV heads, converted from the checkpoint.

    apply_(model, GQAConfig(groups=1))      # SmolLM2: 9 query heads, 3 KV heads -> 1 (= MQA)

No training: fewer KV heads are made by mean-pooling the K and V projections of the checkpoint's
KV heads within each new group (Ainslie et al., 2023, the GQA uptraining initialization). RoPE is
linear and the same for every head, so pooling the weights is pooling the rotated keys: the
result is exact whenever the pooled heads were equal, and an approximation otherwise (quality is
measured, not assumed). More KV heads than the checkpoint's (a multiple of it that divides H)
repeat each head: the same function with more cache (`mha` is groups = H).

Groups that do not divide the query heads evenly (SmolLM2's 3 KV heads pooled into 2) are
allowed: KV heads are split into contiguous groups of near-equal size, each query head keeps the
group of its original KV head, and the core sees K/V expanded to H heads by that table (the cache
still holds `groups` heads; the expansion costs one gather per step, and no kernel sees it).

KV cache: 2 · groups · D · bytes per token per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lab.errors import LabError
from lab.registry import register
from variants.attention._common import CORES, BackendConfig, attention_modules, linear_from


@dataclass(frozen=True)
class GQAConfig(BackendConfig):
    groups: int = 0  # KV heads after conversion; 0 = the checkpoint's (identity)

    def validate(self, args) -> None:
        super().validate(args)
        check_groups(f"attention={self.name}", self.groups or args.n_kv_heads, args.n_heads, args.n_kv_heads)


def check_groups(who: str, groups: int, H: int, H_kv: int) -> None:
    if groups <= H_kv:
        if groups < 1:
            raise LabError(f"{who}: groups={groups} must be >= 1")
        return
    if groups % H_kv or H % groups:
        raise LabError(
            f"{who}: groups={groups} exceeds the checkpoint's {H_kv} KV heads, so it must be a multiple of {H_kv} "
            f"that divides the {H} query heads (heads are repeated, not invented); valid above {H_kv}: "
            f"{[g for g in range(H_kv + 1, H + 1) if g % H_kv == 0 and H % g == 0]}"
        )


class ExpandHeads:
    """Core wrapper for uneven groups: k/v [B, groups, S, D] -> [B, H, S, D] by head_map [H]."""

    def __init__(self, core, head_map: torch.Tensor):
        self.core, self.head_map = core, head_map

    def __call__(self, q, k, v, ctx, **kw):
        idx = self.head_map.to(k.device)
        return self.core(q, k.index_select(1, idx), v.index_select(1, idx), ctx, **kw)


def group_of_kv_head(H_kv: int, groups: int) -> torch.Tensor:
    """[H_kv] new group of each checkpoint KV head: contiguous, sizes differ by at most one."""
    return torch.arange(H_kv) * groups // H_kv


@torch.no_grad()
def regroup_(attn: nn.Module, groups: int) -> None:
    """Convert one Attention module in place to `groups` KV heads (see the module docstring)."""
    H, H_kv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    check_groups("gqa", groups, H, H_kv)
    if groups == H_kv:
        return
    C = attn.k_proj.in_features
    wk = attn.k_proj.weight.view(H_kv, D, C)
    wv = attn.v_proj.weight.view(H_kv, D, C)
    head_map = None
    if groups > H_kv:  # repeat: new head j is old head j // (groups / H_kv)
        rep = groups // H_kv
        new_k, new_v = wk.repeat_interleave(rep, 0), wv.repeat_interleave(rep, 0)
    else:  # mean-pool contiguous groups of old heads, in float32 at least
        g = group_of_kv_head(H_kv, groups).to(wk.device)
        acc = torch.promote_types(wk.dtype, torch.float32)
        pool = torch.zeros(groups, H_kv, dtype=acc, device=wk.device)
        pool[g, torch.arange(H_kv, device=wk.device)] = 1.0
        pool /= pool.sum(1, keepdim=True)  # [groups, H_kv] rows average their members
        new_k = torch.einsum("gh,hdc->gdc", pool, wk.to(acc)).to(wk.dtype)
        new_v = torch.einsum("gh,hdc->gdc", pool, wv.to(acc)).to(wv.dtype)
        if H_kv % groups:  # uneven: query head h keeps the group of its old KV head h // (H / H_kv)
            head_map = g[torch.arange(H, device=g.device) // (H // H_kv)].cpu()
    attn.k_proj = linear_from(new_k.reshape(groups * D, C))
    attn.v_proj = linear_from(new_v.reshape(groups * D, C))
    attn.n_kv_heads = groups
    if head_map is not None:
        # the core sees H KV heads; the cache (written before the core) holds `groups`
        attn.core = ExpandHeads(attn.core, head_map)


def convert_(model, groups: int, backend: str) -> None:
    """Set every layer's core to `backend`, then regroup its KV heads (the wrapper, if any, goes
    around the chosen core)."""
    for attn in attention_modules(model):
        attn.core = CORES[backend]
        regroup_(attn, groups or attn.n_kv_heads)


@register("attention", "gqa", config=GQAConfig)
def apply_(model, cfg: GQAConfig) -> None:
    """GQA with `groups` KV heads, mean-pooled from the checkpoint's."""
    convert_(model, cfg.groups, cfg.backend)
