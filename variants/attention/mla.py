"""attention=mla: multi-head latent attention (DeepSeek-V2), converted from the checkpoint by SVD.

DeepSeek-V2 caches, per token and layer, one latent c = W_dkv·x of width r shared by all heads,
plus one small RoPE key; keys and values are up-projections of the latent (k = W_uk·c, v = W_uv·c).
At decode W_uk can be absorbed into the query (q·W_uk·c = (W_ukᵀ·q)·c) and W_uv into the output,
so attention reads only the latent: r + rope dims per token instead of 2·H_kv·D.

Conversion without training (as in MHA2MLA, Ji et al., 2025): the no-rope rows of [W_k; W_v]
(all KV heads stacked, [H_kv·(D_nope + D), C]) are factorized by truncated SVD, U_r·Σ_r·V_rᵀ:
W_dkv = V_rᵀ ([r, C]), [W_uk; W_uv] = U_r·Σ_r. At full rank the product is exact; below it the
error is the dropped singular values (weights only: no calibration data, so the K and V blocks are
weighted by their raw norms, not by what they do to the output).

RoPE, the honest part. RoPE rotates every key dim by a position-dependent angle, and a rotation
between W_uk and the dot product forbids absorbing W_uk. Two modes:

  rope="partial" (default; absorbable)  the `rope_dim` dims (default head_dim / 4) of the highest-frequency rotary pairs
      (rotate-half pairs (i, i + D/2), ranked by the model's inv_freq) stay a decoupled, exact,
      per-KV-head key k_rope = RoPE(W_kr·x), cached beside the latent; the other D - rope_dim dims
      of q and k are NOT rotated any more (NoPE dims) and their K rows go into the SVD. Dropping the
      rotation changes the model even at full rank, by little where the dropped frequencies turn
      slowly over the context (the lowest ones: θ^(-2i/D) rad per token) and by much otherwise.
      Exact only at rope_dim = D (then every key dim is decoupled and only V is compressed).
      Decode steps (T == 1) use the absorbed form when decode="absorbed"/"auto", else the naive
      one (reconstruct K and V for every cached slot); they are the same function (tested).
  rope="full" (exact at full rank; not absorbable)  nothing is decoupled: K is reconstructed
      from the latent and rotated at its own position, every step, for every cached slot. The
      cache holds the latent only, plus each slot's position (8 bytes per token per sequence, not
      per layer, kept beside the cache) to rotate reconstructed keys with; the rotary tables of
      all S slots are recomputed per layer per step, O(S·D).

Cache layout in the model's KV cache: the latent in the K slot ``[B, 1, S, r]`` and the rope key in
the V slot ``[B, H_kv, S, rope_dim]`` (width 0 in full mode). KV bytes per token per layer:
(r + H_kv·rope_dim)·bytes (partial) or r·bytes (full); the checkpoint's is 2·H_kv·D·bytes
(SmolLM2: 384 values, so MLA saves only where r + 3·rope_dim < 384).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lab.errors import LabError
from lab.model.llama import AttnContext, apply_rotary
from lab.registry import register
from variants.attention._common import CORES, BackendConfig, _STATE, linear_from


@dataclass(frozen=True)
class MLAConfig(BackendConfig):
    rank: int = 0  # latent width r per token per layer; 0 = rank_fraction of the largest rank
    rank_fraction: float = 0.5  # used when rank = 0: the same setting fits any model's shape
    rope_dim: int = -1  # decoupled RoPE key dims per KV head (rope="partial"), even; -1 = head_dim / 4
    rope: str = "partial"  # partial | full (see the module docstring)
    decode: str = "auto"  # auto (absorbed when rope=partial) | absorbed | naive

    def resolved(self, args) -> tuple[int, int]:
        """(rank, rope_dim) for this model."""
        dr = 0 if self.rope == "full" else (args.head_dim // 4 // 2 * 2 if self.rope_dim < 0 else self.rope_dim)
        hi = max_rank(args.dim, args.n_kv_heads, args.head_dim, dr)
        rank = self.rank if self.rank > 0 else max(1, round(self.rank_fraction * hi))
        return rank, dr

    def validate(self, args) -> None:
        super().validate(args)
        who = f"attention={self.name}"
        if self.rope not in ("partial", "full"):
            raise LabError(f"{who}: rope={self.rope!r}; valid: partial, full")
        if self.decode not in ("auto", "absorbed", "naive"):
            raise LabError(f"{who}: decode={self.decode!r}; valid: auto, absorbed, naive")
        if self.rope == "full" and self.decode == "absorbed":
            raise LabError(f"{who}: rope=full rotates reconstructed keys, so W_uk cannot be absorbed; use decode=naive or rope=partial")
        if self.rope == "partial" and self.rope_dim != -1 and (self.rope_dim % 2 or not 0 <= self.rope_dim <= args.head_dim):
            raise LabError(f"{who}: rope_dim={self.rope_dim} must be even and in [0, head_dim={args.head_dim}] (or -1: head_dim / 4)")
        if self.rank < 0 or (self.rank == 0 and not 0 < self.rank_fraction <= 1):
            raise LabError(f"{who}: rank={self.rank}, rank_fraction={self.rank_fraction}: give rank >= 1, or rank=0 and rank_fraction in (0, 1]")
        rank, dr = self.resolved(args)
        hi = max_rank(args.dim, args.n_kv_heads, args.head_dim, dr)
        if not 1 <= rank <= hi:
            raise LabError(f"{who}: rank={rank} must be in [1, {hi}] (the rank of [W_k_nope; W_v] for this model; or give rank_fraction)")


def max_rank(C: int, H_kv: int, D: int, rope_dim: int) -> int:
    """The rank of the stacked no-rope K rows and V rows: at most their count, at most C."""
    return min(C, H_kv * (2 * D - rope_dim))


class MLAAttention(nn.Module):
    """Latent attention: q_proj and o_proj as in the checkpoint; kv_down [C -> r]; k_up, v_up
    [r -> H_kv·D_nope], [r -> H_kv·D]; k_rope [C -> H_kv·rope_dim] (partial mode)."""

    def __init__(self, src: nn.Module, rank: int, rope_dim: int, rope: str, absorb: bool, rotary: nn.Module, core):
        super().__init__()
        H, H_kv, D = src.n_heads, src.n_kv_heads, src.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim, self.layer_idx = H, H_kv, D, src.layer_idx
        self.rank, self.rope, self.absorb = rank, rope, absorb
        self.rope_dim = rope_dim if rope == "partial" else 0
        self.d_nope = D - self.rope_dim
        self.q_proj, self.o_proj, self.core = src.q_proj, src.o_proj, core
        self._rotary = (rotary,)  # a tuple, so it is not registered as a submodule (not in state_dict)
        C, dev, dt = src.k_proj.in_features, src.k_proj.weight.device, src.k_proj.weight.dtype
        # which head dims stay rotary: the rope_dim/2 fastest-turning pairs (i, i + D/2)
        pairs = torch.argsort(rotary.inv_freq.detach().cpu(), descending=True)[: self.rope_dim // 2].sort().values
        rope_idx = torch.cat((pairs, pairs + D // 2))
        nope_idx = torch.tensor([i for i in range(D) if i not in set(rope_idx.tolist())], dtype=torch.long)
        self.register_buffer("rope_idx", rope_idx.to(dev), persistent=False)
        self.register_buffer("nope_idx", nope_idx.to(dev), persistent=False)

        with torch.no_grad():
            wk = src.k_proj.weight.double().view(H_kv, D, C)
            wv = src.v_proj.weight.double().view(H_kv, D, C)
            stacked = torch.cat((wk[:, nope_idx.to(dev)].reshape(-1, C), wv.reshape(-1, C)))  # [H_kv·(D_nope + D), C]
            U, S, Vh = torch.linalg.svd(stacked, full_matrices=False)
            up = U[:, :rank] * S[:rank]  # [rows, r]
            self.kv_down = linear_from(Vh[:rank], dt)  # c = V_rᵀ x
            self.k_up = linear_from(up[: H_kv * self.d_nope], dt)
            self.v_up = linear_from(up[H_kv * self.d_nope :], dt)
            self.k_rope = linear_from(wk[:, rope_idx.to(dev)].reshape(-1, C), dt) if self.rope_dim else None

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        B, T, _ = x.shape
        H, H_kv, D, dr = self.n_heads, self.n_kv_heads, self.head_dim, self.rope_dim
        if ctx.cos.shape[-1] != D:
            raise ValueError(f"mla: rotary tables of width {ctx.cos.shape[-1]}, expected the head dim {D}")
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
        c = self.kv_down(x)[:, None]  # [B, 1, T, r]
        if self.rope == "partial":
            cos, sin = ctx.cos[..., self.rope_idx], ctx.sin[..., self.rope_idx]  # [B, T, dr]
            kr = apply_rotary(self.k_rope(x).view(B, T, H_kv, dr).transpose(1, 2), cos, sin) if dr else c.new_empty(B, H_kv, T, 0)
            q = torch.cat((q[..., self.nope_idx], apply_rotary(q[..., self.rope_idx], cos, sin)), -1)  # [B, H, T, D_nope + dr]
        else:
            kr = c.new_empty(B, 1, T, 0)
            q = ctx.rotate(q)
        if ctx.cache is not None:
            c, kr = ctx.cache.update(ctx.layer, c, kr, ctx.start)  # [B, 1, S, r], [B, H_kv|1, S, dr]
        if T == 1 and self.absorb:
            y = self.absorbed(q, c, kr, ctx)
        else:
            y = self.core(q, *self.keys_values(c, kr, ctx), ctx)  # [B, H, T, D]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * D))

    def keys_values(self, c: torch.Tensor, kr: torch.Tensor, ctx: AttnContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The naive path: K and V of every slot from the latent. k_up costs 2·S·r·H_kv·D_nope
        FLOPs and writes S·H_kv·D values per step, which the absorbed path never does."""
        B, _, S, _ = c.shape
        H_kv, D = self.n_kv_heads, self.head_dim
        k = self.k_up(c[:, 0]).view(B, S, H_kv, self.d_nope).transpose(1, 2)  # [B, H_kv, S, D_nope]
        v = self.v_up(c[:, 0]).view(B, S, H_kv, D).transpose(1, 2)  # [B, H_kv, S, D]
        if self.rope == "partial":
            return torch.cat((k, kr), -1), v
        cos, sin = self._rotary[0](self.key_positions(ctx, S))  # [B, S, D]
        return apply_rotary(k, cos, sin), v

    def key_positions(self, ctx: AttnContext, S: int) -> torch.Tensor:
        """[B, S] position of every slot (rope="full"): the new tokens' are ctx.pos, earlier ones
        were recorded beside the cache when they were new."""
        if ctx.cache is None:
            return ctx.pos
        st = _STATE.setdefault(ctx.cache, {}).setdefault(("mla_positions",), {})
        pos = st.get("pos")
        if pos is None or pos.shape[1] < S or pos.shape[0] != ctx.pos.shape[0]:
            grown = torch.zeros(ctx.pos.shape[0], max(S, 2 * (0 if pos is None else pos.shape[1])), dtype=torch.long, device=ctx.pos.device)
            if pos is not None and pos.shape[0] == ctx.pos.shape[0]:
                grown[:, : pos.shape[1]] = pos
            st["pos"] = pos = grown
        pos[:, ctx.start : ctx.start + ctx.pos.shape[1]] = ctx.pos  # every layer writes the same values
        return pos[:, :S]

    def absorbed(self, q: torch.Tensor, c: torch.Tensor, kr: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        """Attention over the latent itself: W_uk folded into the query, W_uv applied after the
        weighted sum, so no per-slot K or V is formed. Reads (r + H_kv·dr) values per slot;
        FLOPs per head 2·S·(r + dr) for scores and 2·S·r for the output. q: [B, H, T, D_nope + dr]."""
        B, H, T, _ = q.shape
        S, r, H_kv, D, dn, dr = c.shape[2], self.rank, self.n_kv_heads, self.head_dim, self.d_nope, self.rope_dim
        G = H // H_kv
        acc = torch.promote_types(q.dtype, torch.float32)
        w_uk = self.k_up.weight.view(H_kv, dn, r).to(acc)
        w_uv = self.v_up.weight.view(H_kv, D, r).to(acc)
        qn = q[..., :dn].to(acc).reshape(B, H_kv, G * T, dn)
        q_lat = torch.einsum("bgtd,gdr->bgtr", qn, w_uk)  # [B, H_kv, G·T, r]
        lat = c.to(acc)  # [B, 1, S, r]
        scores = q_lat @ lat.transpose(-1, -2)  # [B, H_kv, G·T, S]
        if dr:
            scores = scores + q[..., dn:].to(acc).reshape(B, H_kv, G * T, dr) @ kr.to(acc).transpose(-1, -2)
        scores = scores.view(B, H_kv, G, T, S) / math.sqrt(D)
        mask = ctx.mask(T, S, q.device)[:, :, None]  # [B|1, 1, 1, T, S]
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
        o_lat = probs.view(B, H_kv, G * T, S) @ lat  # [B, H_kv, G·T, r]
        y = torch.einsum("bgtr,gdr->bgtd", o_lat, w_uv)  # [B, H_kv, G·T, D]
        return y.reshape(B, H, T, D).to(q.dtype)

    # ---- cost ----------------------------------------------------------------------------------
    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return (self.rank + self.n_kv_heads * self.rope_dim) * dtype_bytes


@register("attention", "mla", config=MLAConfig)
def apply_(model, cfg: MLAConfig) -> None:
    """Multi-head latent attention: [W_k; W_v] by truncated SVD at rank r, decoupled RoPE key."""
    args = model.args
    cfg.validate(args)
    rank, rope_dim = cfg.resolved(args)
    absorb = cfg.rope == "partial" and cfg.decode in ("auto", "absorbed")
    for layer in model.layers:
        layer.self_attn = MLAAttention(layer.self_attn, rank, rope_dim, cfg.rope, absorb, model.rotary, CORES[cfg.backend])
