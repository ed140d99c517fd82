"""A Llama-family decoder in plain torch (SmolLM2, Llama-2/3, Qwen2-style without biases).

The model knows no variant by name. It is handed its parts as factories:

    Transformer(args, attention=Attention, mlp=SwiGLU, norm=RMSNorm, position=RotaryEmbedding)

and each axis swaps its part from outside (`variants.attention.mla.apply_(model, cfg)` replaces
`model.layers[i].self_attn`). What an attention module gets besides its input is one
`AttnContext`: positions, the rotary tables, the KV cache and which slots are valid keys.

Parameter names follow Hugging Face's LlamaForCausalLM (`layers.0.self_attn.q_proj.weight` …) so
that safetensors checkpoints load and save without renaming.

Letters: B batch, T new tokens, S keys (cache slots so far + T), C model width, H query heads,
H_kv key/value heads, D head dim, V vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 64
    ffn_dim: int = 1536
    vocab_size: int = 49152
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    max_seq_len: int = 8192
    # Hugging Face's `rope_scaling` as sorted (key, value) pairs, e.g. Llama-3.1's
    # (("factor", 32.0), ("high_freq_factor", 4.0), …, ("rope_type", "llama3")); None: plain RoPE
    rope_scaling: Optional[tuple] = None

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")

    # ---- cost formulas (used by scenarios, the roofline and reports) ---------------------------
    def n_params(self, embeddings: bool = True) -> int:
        C, D = self.dim, self.head_dim
        attn = C * self.n_heads * D * 2 + C * self.n_kv_heads * D * 2  # q, o ; k, v
        mlp = 3 * C * self.ffn_dim
        per_layer = attn + mlp + 2 * C
        emb = self.vocab_size * C * (1 if self.tie_embeddings else 2)
        return self.n_layers * per_layer + C + (emb if embeddings else 0)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V of every layer for one token: 2 · L · H_kv · D · bytes."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * dtype_bytes

    def flops_per_token(self, context: int) -> float:
        """Forward FLOPs for one new token attending to `context` keys: 2 per weight multiply-add
        (the output head included, the embedding lookup not) plus 2·2·L·H·D·context for QKᵀ and PV."""
        matmul = 2 * (self.n_params(embeddings=False) + self.vocab_size * self.dim)
        return matmul + 4 * self.n_layers * self.n_heads * self.head_dim * context

    def weight_bytes(self, dtype_bytes: int = 2) -> int:
        return self.n_params() * dtype_bytes


# ---------------------------------------------------------------------------------------------
# The context an attention module is handed
# ---------------------------------------------------------------------------------------------
@dataclass
class AttnContext:
    pos: torch.Tensor  # [B, T] absolute positions of the new tokens (left padding shifts them)
    cos: torch.Tensor  # [B, T, D] rotary tables for those positions
    sin: torch.Tensor  # [B, T, D]
    start: int = 0  # cache slot of the first new token: the new tokens are slots start..start+T-1
    cache: Any = None  # a KV cache with .update(layer, k, v, start) -> (k_all, v_all), or None
    key_mask: Optional[torch.Tensor] = None  # [B, S] True where a slot holds a real token
    layer: int = 0
    extra: dict = field(default_factory=dict)  # scratch for variants (e.g. per-layer state)
    _memo: dict = field(default_factory=dict, repr=False)  # per-forward: the mask and cast tables are built once, not per layer

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """RoPE in the rotate-half convention on x: [B, H, T, D] (D may exceed the table's width:
        only the first cos.shape[-1] dims rotate)."""
        key = ("rot", x.dtype)
        if key not in self._memo:
            self._memo[key] = (self.cos[:, None].to(x.dtype), self.sin[:, None].to(x.dtype))  # [B, 1, T, R]
        return _rotate_half(x, *self._memo[key])

    def mask(self, T: int, S: int, device=None) -> torch.Tensor:
        """[B|1, 1, T, S] bool, True where query t may attend to key slot s: causal in slot
        coordinates (query t sits at slot start + t, S - T == start when a cache is used) and
        only to valid slots. A query always sees its own slot, so a padding query (whose own slot is
        invalid) attends to itself alone: no row is all -inf, and no kernel makes NaN there."""
        device = device or self.pos.device
        key = ("mask", T, S, str(device), id(self.key_mask))
        if key not in self._memo:
            q_slot = torch.arange(T, device=device)[:, None] + (S - T)
            k_slot = torch.arange(S, device=device)[None, :]
            allowed = (k_slot <= q_slot)[None, None]  # [1, 1, T, S]
            if self.key_mask is not None:
                allowed = allowed & (self.key_mask[:, None, None, :S] | (k_slot == q_slot))  # [B, 1, T, S]
            self._memo[key] = allowed
        return self._memo[key]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, D]; cos, sin: [B, T, R] with R <= D and even. Rotate-half convention
    (pairs (i, i + R/2)), as in Hugging Face Llama."""
    return _rotate_half(x, cos[:, None].to(x.dtype), sin[:, None].to(x.dtype))


def _rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, D]; cos, sin: [B, 1, T, R] already in x's dtype."""
    R = cos.shape[-1]
    xr = x[..., :R]
    x1, x2 = xr[..., : R // 2], xr[..., R // 2 :]
    out = xr * cos + torch.cat((-x2, x1), dim=-1) * sin
    return out if R == x.shape[-1] else torch.cat((out, x[..., R:]), dim=-1)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: AttnContext, scale: float | None = None) -> torch.Tensor:
    """The plain reference: materialize the [B, H, T, S] scores, mask, softmax in float32.
    q: [B, H, T, D], k/v: [B, H_kv, S, D] -> [B, H, T, D]. Memory: B·H·T·S·4 bytes of scores.
    GQA/MQA without copying K/V per query head: the G = H / H_kv query heads that share a KV
    head (heads kv·G .. kv·G+G-1, as repeat_interleave would pair them) are stacked along T."""
    B, H, T, D = q.shape
    S, H_kv = k.shape[2], k.shape[1]
    G = H // H_kv
    acc = torch.promote_types(q.dtype, torch.float32)  # float32 at least; float64 stays float64
    qg = q.reshape(B, H_kv, G * T, D).to(acc)  # [B, H_kv, G·T, D]
    scores = (qg @ k.to(acc).transpose(-1, -2)) * (scale or 1.0 / math.sqrt(D))  # [B, H_kv, G·T, S]
    allowed = ctx.mask(T, S, q.device)[:, :, None]  # [B|1, 1, 1, T, S]
    scores = scores.view(B, H_kv, G, T, S).masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no valid key -> 0
    out = probs.view(B, H_kv, G * T, S) @ v.to(acc)  # [B, H_kv, G·T, D]
    return out.view(B, H, T, D).to(q.dtype)


# ---------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # float32 at least: bf16 sums of squares lose digits
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class RotaryEmbedding(nn.Module):
    """Rotary tables from positions. Scaling variants (NTK, YaRN, Llama-3) replace `inv_freq`
    or subclass `forward`; the kernels take the tables as input, so every variant reuses them."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        D = args.head_dim
        inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
        if args.rope_scaling:
            inv_freq = llama3_scale_inv_freq(inv_freq, dict(args.rope_scaling))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self.attention_scale = 1.0  # YaRN-style variants scale cos/sin (i.e. the logits) by this

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = pos[..., None].float() * self.inv_freq  # [B, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [B, T, D]
        return emb.cos() * self.attention_scale, emb.sin() * self.attention_scale


def llama3_scale_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama-3.1's frequency rescaling, as the checkpoint's config asks: wavelengths longer than
    original_max_position_embeddings / low_freq_factor are slowed by `factor`, shorter than
    … / high_freq_factor kept, and the band between interpolated smoothly."""
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv_freq
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not built in (only 'llama3'); the position axis provides others")
    factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
    return torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


class Attention(nn.Module):
    """Grouped-query attention as in the checkpoint. `core(q, k, v, ctx)` is the attention math
    (eager by default; backends such as SDPA or the Triton kernels swap it)."""

    def __init__(self, args: ModelArgs, layer_idx: int = 0, core: Callable | None = None):
        super().__init__()
        C, H, H_kv, D = args.dim, args.n_heads, args.n_kv_heads, args.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim, self.layer_idx = H, H_kv, D, layer_idx
        self.q_proj = nn.Linear(C, H * D, bias=False)
        self.k_proj = nn.Linear(C, H_kv * D, bias=False)
        self.v_proj = nn.Linear(C, H_kv * D, bias=False)
        self.o_proj = nn.Linear(H * D, C, bias=False)
        self.core = core or eager_attention

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, H_kv, T, D]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = ctx.rotate(q), ctx.rotate(k)
        if ctx.cache is not None:
            k, v = ctx.cache.update(ctx.layer, k, v, ctx.start)  # [B, H_kv, S, D]
        y = self.core(q, k, v, ctx)  # [B, H, T, D]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.n_kv_heads * self.head_dim * dtype_bytes


class SwiGLU(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.up_proj = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.down_proj = nn.Linear(args.ffn_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs, layer_idx: int, attention, mlp, norm):
        super().__init__()
        self.input_layernorm = norm(args.dim, args.norm_eps)
        self.self_attn = attention(args, layer_idx)
        self.post_attention_layernorm = norm(args.dim, args.norm_eps)
        self.mlp = mlp(args)

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs, attention=Attention, mlp=SwiGLU, norm=RMSNorm, position=RotaryEmbedding):
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args, i, attention, mlp, norm) for i in range(args.n_layers))
        self.norm = norm(args.dim, args.norm_eps)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = position(args)

    def forward(
        self,
        tokens: torch.Tensor,  # [B, T]
        cache: Any = None,
        start: int = 0,
        key_mask: Optional[torch.Tensor] = None,  # [B, S] valid slots (left-padded batches)
        pos: Optional[torch.Tensor] = None,  # [B, T]; default start + arange(T)
        last_only: bool = False,  # logits of the last position only (prefill/decode need no more)
    ) -> torch.Tensor:
        B, T = tokens.shape
        if pos is None:
            pos = (start + torch.arange(T, device=tokens.device)).expand(B, T)
        cos, sin = self.rotary(pos)
        ctx = AttnContext(pos=pos, cos=cos, sin=sin, start=start, cache=cache, key_mask=key_mask)
        x = self.embed_tokens(tokens)  # [B, T, C]
        for i, layer in enumerate(self.layers):
            ctx.layer = i
            x = layer(x, ctx)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))  # [B, T, V]

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Sum over layers of what each attention module caches per token (variants change it)."""
        return sum(layer.self_attn.kv_bytes_per_token(dtype_bytes) for layer in self.layers)

    def kv_bytes(self, context: int, dtype_bytes: int = 2) -> int:
        """Cache bytes for one sequence of `context` tokens, all layers: an attention module with a
        `kv_bytes(context, dtype_bytes)` says it itself (a rolling window is bounded by the window,
        a Performer's state is fixed); the others cache kv_bytes_per_token for every token."""
        total = 0
        for layer in self.layers:
            attn = layer.self_attn
            if hasattr(attn, "kv_bytes"):
                total += attn.kv_bytes(context, dtype_bytes)
            else:
                total += attn.kv_bytes_per_token(dtype_bytes) * context
        return total


def with_args(args: ModelArgs, **changes) -> ModelArgs:
    return replace(args, **changes)
