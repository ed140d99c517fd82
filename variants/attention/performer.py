"""attention=performer: FAVOR+ linear attention (Choromanski et al., 2021), an approximation.

softmax(q·kᵀ/√D) weighs key s by exp(q·k_s/√D). FAVOR+ writes that kernel as an expectation
over random features, exp(x·y) = E_ω[φ(x)·φ(y)] with φ(x) = exp(ωᵀx - |x|²/2) (positive, so
the normalizer never goes negative), ω drawn from N(0, I) in orthogonal blocks, x = q/D^¼,
y = k/D^¼. With `features` = m samples, causal attention becomes two running sums,

    S_t = Σ_{s<=t} φ(k_s) v_sᵀ   [m, D]        z_t = Σ_{s<=t} φ(k_s)   [m]
    y_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t

so a decode step costs O(m·D) per head whatever the context, and the cache is a fixed-size state
per layer (H_kv·(m·D + m + 1) float32 values, here in float32 whatever the model dtype): "KV bytes
per token" is that state divided by the context length.

Honest status: the estimate is unbiased but its variance grows like exp(|q|²+|k|²)/m, and a
pretrained model's queries and keys are large, so without training quality drops a lot (measured:
perplexity and KL). Causality is exact: prefill runs in chunks, each chunk quadratic inside
(masked) and linear across; features are shifted for range (a per-query shift cancels in the
ratio; the keys' shift is a running maximum, and the state is rescaled when it grows, so no future
key ever enters a past output, only the same math in another floating-point order).
The features are drawn once per layer from `seed` (no redraws). Padded keys are zeroed.
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
class PerformerConfig(VariantConfig):
    features: int = 256  # random features m per layer
    seed: int = 0
    chunk: int = 64  # prefill chunk: quadratic inside, linear across

    def validate(self, args) -> None:
        if self.features < 1 or self.chunk < 1:
            raise LabError(f"attention={self.name}: features={self.features} and chunk={self.chunk} must be >= 1")


def orthogonal_features(m: int, D: int, generator: torch.Generator) -> torch.Tensor:
    """[m, D] rows from N(0, I), orthogonal within each block of D (FAVOR+'s lower-variance
    draw), each row rescaled to the norm of an independent Gaussian vector."""
    blocks = []
    for _ in range(math.ceil(m / D)):
        g = torch.randn(D, D, generator=generator, dtype=torch.float64)
        qmat, _ = torch.linalg.qr(g)
        blocks.append(qmat.T)
    w = torch.cat(blocks)[:m]
    norms = torch.randn(m, D, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return w * norms


def favor_causal(q, k, v, omega, state: dict | None = None, chunk: int = 64, key_mask: torch.Tensor | None = None):
    """Causal FAVOR+ attention. q [B, H, T, D], k/v [B, H_kv, T, D], omega [m, D] ->
    [B, H, T, D]. `state` (S, z, M: sums and the keys' running shift) is continued and updated
    in place when given. key_mask [B, T] zeroes padded keys."""
    B, H, T, D = q.shape
    H_kv = k.shape[1]
    G = H // H_kv
    acc = torch.promote_types(q.dtype, torch.float32)
    w = omega.to(device=q.device, dtype=acc)
    m = w.shape[0]
    s4 = D ** -0.25
    xq = q.to(acc).reshape(B, H_kv, G, T, D) * s4
    xk = k.to(acc) * s4
    lq = xq @ w.T - 0.5 * (xq * xq).sum(-1, keepdim=True)  # [B, H_kv, G, T, m]: log φ(q)
    lk = xk @ w.T - 0.5 * (xk * xk).sum(-1, keepdim=True)  # [B, H_kv, T, m]
    fq = torch.exp(lq - lq.amax(-1, keepdim=True))  # a per-query shift cancels in num/den
    vv = v.to(acc)
    st = state if state is not None else {}
    if "S" not in st:
        st["S"] = torch.zeros(B, H_kv, m, D, dtype=acc, device=q.device)
        st["z"] = torch.zeros(B, H_kv, m, dtype=acc, device=q.device)
        st["M"] = torch.full((B, H_kv, 1, 1), float("-inf"), dtype=acc, device=q.device)
    S, z, M = st["S"], st["z"], st["M"]
    out = torch.empty(B, H_kv, G, T, D, dtype=acc, device=q.device)
    for c0 in range(0, T, chunk):
        c1 = min(T, c0 + chunk)
        lkc = lk[:, :, c0:c1]  # [B, H_kv, c, m]
        if key_mask is not None:  # padded keys: weight 0, and no say in the shift
            lkc = lkc.masked_fill(~key_mask[:, None, c0:c1, None], float("-inf"))
        M_new = torch.maximum(M, lkc.amax((-1, -2), keepdim=True))
        shift = torch.where(torch.isfinite(M_new), M_new, torch.zeros_like(M_new))  # -inf: nothing seen yet
        rescale = torch.exp(M - shift)  # the shift grew: rescale what was summed (0 before any key)
        S, z = S * rescale, z * rescale[..., 0]
        fk = torch.exp(lkc - shift)  # [B, H_kv, c, m]
        fqc = fq[:, :, :, c0:c1]  # [B, H_kv, G, c, m]
        A = fqc @ fk[:, :, None].transpose(-1, -2)  # [B, H_kv, G, c, c]
        A = A * torch.ones(c1 - c0, c1 - c0, dtype=torch.bool, device=q.device).tril()
        num = fqc @ S[:, :, None] + A @ vv[:, :, None, c0:c1]  # [B, H_kv, G, c, D]
        den = fqc @ z[:, :, None, :, None] + A.sum(-1, keepdim=True)  # [B, H_kv, G, c, 1]
        out[:, :, :, c0:c1] = num / den.clamp_min(torch.finfo(acc).tiny)
        S = S + fk.transpose(-1, -2) @ vv[:, :, c0:c1]
        z = z + fk.sum(-2)
        M = M_new
    st["S"], st["z"], st["M"] = S, z, M
    return out.reshape(B, H, T, D).to(q.dtype)


class PerformerAttention(ProjectedAttention):
    def __init__(self, src, features: int, seed: int, chunk: int):
        super().__init__(src)
        g = torch.Generator().manual_seed(seed * 1000003 + src.layer_idx)
        omega = orthogonal_features(features, src.head_dim, g)
        self.register_buffer("omega", omega.to(device=src.q_proj.weight.device, dtype=torch.float32), persistent=False)
        self.features, self.chunk = features, chunk

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        q, k, v = self.qkv(x, ctx)
        T = q.shape[2]
        km = None if ctx.key_mask is None else ctx.key_mask[:, ctx.start : ctx.start + T]
        if ctx.cache is None:
            return self.out(favor_causal(q, k, v, self.omega, None, self.chunk, km))
        st = layer_state(ctx, "performer")
        y = favor_causal(q, k, v, self.omega, st, self.chunk, km)
        advance(ctx, st, T)
        return self.out(y)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 0  # nothing grows per token: the state is fixed (kv_bytes says how large)

    def kv_bytes(self, context: int, dtype_bytes: int = 2) -> int:
        """The fixed state, float32: S [H_kv, m, D], z [H_kv, m], the shift [H_kv]."""
        return 4 * self.n_kv_heads * (self.features * self.head_dim + self.features + 1)


@register("attention", "performer", config=PerformerConfig)
def apply_(model, cfg: PerformerConfig) -> None:
    """FAVOR+ positive random features: linear-time causal attention (approximate)."""
    cfg.validate(model.args)
    for layer in model.layers:
        layer.self_attn = PerformerAttention(layer.self_attn, cfg.features, cfg.seed, cfg.chunk)
