"""attention=linformer: keys and values projected along the sequence (Wang et al., 2020), made
causal by pooling complete blocks, an approximation.

Linformer multiplies K and V ``[n, D]`` by a fixed ``[k, n]`` matrix E, so every query sees k
mixed keys instead of n. That is non-causal (each mixed key contains the future), so it is only
valid for encoders or for scoring a whole fixed-length sequence at once, and E is learned. Here
instead, causally and without training:

  the sequence is cut into blocks of `block` tokens; a query in block j attends to one projected
  key/value per COMPLETE earlier block (e·K_i, e·V_i for blocks i < j) and exactly to the keys
  of its own block up to itself. With projection="mean", e = 1/block (mean pooling), and a
  pooled score gets + log(block): the pooled key stands for `block` tokens, and exp(q·mean k) is
  Jensen's lower bound on the mean of exp(q·k). projection="random" uses a fixed Gaussian
  e ~ N(0, 1/block) (seeded): Linformer's projection without its training, expected to be worse.

So the sequence length k seen by a query at position p is p // block + p % block + 1, not a
constant: memory and decode reads shrink by about `block`x, not to O(1). The cache, kept beside
the model's, holds the pooled blocks plus the raw keys of the current block:
(S // block + S % block) tokens of K/V for a context of S. Exact when block = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lab.errors import LabError
from lab.model.llama import AttnContext
from lab.registry import VariantConfig, register
from variants.attention._common import ProjectedAttention, advance, layer_state


@dataclass(frozen=True)
class LinformerConfig(VariantConfig):
    block: int = 32  # tokens pooled into one key/value
    projection: str = "mean"  # mean | random
    seed: int = 0

    def validate(self, args) -> None:
        if self.block < 1:
            raise LabError(f"attention={self.name}: block={self.block} must be >= 1")
        if self.projection not in ("mean", "random"):
            raise LabError(f"attention={self.name}: projection={self.projection!r}; valid: mean, random")


def pooled_block_attention(q, raw_k, raw_v, pk, pv, start: int, block: int, e: torch.Tensor):
    """One call's attention. q [B, H, T, D] at positions start..start+T-1; raw_k/v
    [B, H_kv, R, D] the keys from the start of start's block through the last new token; pk/pv
    [B, H_kv, n, D] the projected complete blocks before start's block. Returns
    (y [B, H, T, D], pooled keys/values of the blocks completed by this call)."""
    B, H, T, D = q.shape
    H_kv, R = raw_k.shape[1], raw_k.shape[2]
    G, b = H // H_kv, block
    r0 = (start // b) * b  # position of raw_k[:, :, 0]
    off = start - r0
    acc = torch.promote_types(q.dtype, torch.float32)
    n_new = (start + T) // b - start // b  # blocks this call completes
    ew = e.to(device=q.device, dtype=acc)
    new_pk = torch.einsum("bhnjd,j->bhnd", raw_k[:, :, : n_new * b].to(acc).unflatten(2, (n_new, b)), ew)
    new_pv = torch.einsum("bhnjd,j->bhnd", raw_v[:, :, : n_new * b].to(acc).unflatten(2, (n_new, b)), ew)
    all_pk = torch.cat((pk.to(acc), new_pk), 2).repeat_interleave(G, 1)  # [B, H, n_all, D]
    all_pv = torch.cat((pv.to(acc), new_pv), 2).repeat_interleave(G, 1)
    # queries and raw keys laid out block by block: [B, H, nblk, b, D], padded at both ends
    nblk = math.ceil((off + T) / b)
    qp = q.new_zeros(B, H, nblk * b, D, dtype=acc)
    qp[:, :, off : off + T] = q.to(acc)
    kp = raw_k.new_zeros(B, H_kv, nblk * b, D, dtype=acc)
    vp = raw_v.new_zeros(B, H_kv, nblk * b, D, dtype=acc)
    kp[:, :, :R], vp[:, :, :R] = raw_k.to(acc), raw_v.to(acc)
    qb = qp.unflatten(2, (nblk, b))
    kb = kp.repeat_interleave(G, 1).unflatten(2, (nblk, b))
    vb = vp.repeat_interleave(G, 1).unflatten(2, (nblk, b))
    scale = 1.0 / math.sqrt(D)
    local = (qb @ kb.transpose(-1, -2)) * scale  # [B, H, nblk, b, b]
    local = local.masked_fill(~torch.ones(b, b, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    pooled = (qb @ all_pk[:, :, None].transpose(-1, -2)) * scale + math.log(b)  # [B, H, nblk, b, n_all]
    blk = (r0 // b + torch.arange(nblk, device=q.device))[:, None, None]  # block index of each query
    pooled = pooled.masked_fill(torch.arange(all_pk.shape[2], device=q.device)[None, None, :] >= blk, float("-inf"))
    probs = torch.softmax(torch.cat((pooled, local), -1), -1).nan_to_num(0.0)
    y = probs[..., : pooled.shape[-1]] @ all_pv[:, :, None] + probs[..., pooled.shape[-1] :] @ vb  # [B, H, nblk, b, D]
    y = y.flatten(2, 3)[:, :, off : off + T]
    return y.to(q.dtype), new_pk.to(raw_k.dtype), new_pv.to(raw_v.dtype)


class LinformerAttention(ProjectedAttention):
    def __init__(self, src, block: int, projection: str, seed: int):
        super().__init__(src)
        self.block = block
        if projection == "mean":
            e = torch.full((block,), 1.0 / block)
        else:
            g = torch.Generator().manual_seed(seed * 1000003 + src.layer_idx)
            e = torch.randn(block, generator=g) / math.sqrt(block)
        self.register_buffer("e", e, persistent=False)

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        if ctx.key_mask is not None:
            raise ValueError("linformer: padded batches (key_mask) are not supported")
        q, k, v = self.qkv(x, ctx)
        B, H_kv, T, D = k.shape
        st = layer_state(ctx, "linformer") if ctx.cache is not None else {}
        if "pk" not in st:
            st["pk"] = k.new_zeros(B, H_kv, 0, D)
            st["pv"] = v.new_zeros(B, H_kv, 0, D)
            st["rk"], st["rv"] = k.new_zeros(B, H_kv, 0, D), v.new_zeros(B, H_kv, 0, D)
        raw_k, raw_v = torch.cat((st["rk"], k), 2), torch.cat((st["rv"], v), 2)
        y, npk, npv = pooled_block_attention(q, raw_k, raw_v, st["pk"], st["pv"], ctx.start, self.block, self.e)
        if ctx.cache is not None:
            done = npk.shape[2] * self.block
            st["pk"], st["pv"] = torch.cat((st["pk"], npk), 2), torch.cat((st["pv"], npv), 2)
            st["rk"], st["rv"] = raw_k[:, :, done:].clone(), raw_v[:, :, done:].clone()
            advance(ctx, st, T)
        return self.out(y)

    def kv_bytes(self, context: int, dtype_bytes: int = 2) -> int:
        """Pooled blocks plus the current block's raw keys, for one sequence of `context` tokens."""
        return (context // self.block + context % self.block) * self.kv_bytes_per_token(dtype_bytes)


@register("attention", "linformer", config=LinformerConfig)
def apply_(model, cfg: LinformerConfig) -> None:
    """Causal Linformer: complete earlier blocks projected to one key/value each (approximate)."""
    cfg.validate(model.args)
    for layer in model.layers:
        layer.self_attn = LinformerAttention(layer.self_attn, cfg.block, cfg.projection, cfg.seed)
