"""What the attention variants share: the three attention cores, the backend field, and the
per-sequence state of variants that keep their own compact cache.

A core is the attention math alone, `core(q, k, v, ctx, *, window=None, sinks=0) -> y`:
q ``[B, H, T, D]``, k/v ``[B, H_kv, S, D]`` (S = cached slots + T, causal bottom-right), y
``[B, H, T, D]``. Three interchangeable implementations, picked by a variant's `backend` field:

  reference  eager masked softmax in float32, the [B, H, T, S] scores materialized
             (`lab.model.llama.eager_attention`, the model as loaded)
  sdpa       torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient / cuDNN /
             math, torch's choice), GQA via enable_gqa
  flash      the lab's Triton kernels: kernels/attention_prefill.flash_attention for T > 1, and the
             paged decode kernel (kernels/attention_decode) for T == 1 when it is present
"""
from __future__ import annotations

import importlib.util
import math
import os
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lab.errors import LabError
from lab.model.llama import AttnContext, eager_attention
from lab.registry import VariantConfig

BACKENDS = ("reference", "sdpa", "flash")
FLASH_HEAD_DIMS = (16, 32, 64, 128)  # kernels/attention_prefill.SUPPORTED_HEAD_DIMS


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------
def window_mask(T: int, S: int, window: int | None, sinks: int, device) -> torch.Tensor:
    """[T, S] bool in slot coordinates (query t at slot S - T + t): keys within the last `window`
    slots (the query's own included) or among the first `sinks` slots. Causality is ctx.mask's."""
    q_slot = torch.arange(T, device=device)[:, None] + (S - T)
    s = torch.arange(S, device=device)[None, :]
    if window is None:
        return torch.ones(T, S, dtype=torch.bool, device=device)
    return (s > q_slot - window) | (s < sinks)


def allowed(ctx: AttnContext, T: int, S: int, device, window: int | None = None, sinks: int = 0) -> torch.Tensor:
    """[B|1, 1, T, S] bool: the model's causal+padding mask, narrowed to the window when given."""
    m = ctx.mask(T, S, device)
    if window is not None:
        m = m & window_mask(T, S, window, sinks, device)
    return m


def masked_attention(q, k, v, mask: torch.Tensor, scale: float | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Eager softmax attention with an explicit mask (and optional additive bias), float32 at
    least, as `eager_attention` computes it. q [B, H, T, D], k/v [B, H_kv, S, D]."""
    B, H, T, D = q.shape
    H_kv = k.shape[1]
    if H != H_kv:
        k = k.repeat_interleave(H // H_kv, dim=1)
        v = v.repeat_interleave(H // H_kv, dim=1)
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * (scale or 1.0 / math.sqrt(D))  # [B, H, T, S]
    if bias is not None:
        scores = scores + bias.to(acc)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return (probs @ v.to(acc)).to(q.dtype)


# ---------------------------------------------------------------------------------------------
# Cores
# ---------------------------------------------------------------------------------------------
def reference_core(q, k, v, ctx: AttnContext, *, window: int | None = None, sinks: int = 0):
    """The model's own eager attention; with a window, the same math under the narrower mask."""
    if window is None:
        return eager_attention(q, k, v, ctx)
    return masked_attention(q, k, v, allowed(ctx, q.shape[2], k.shape[2], q.device, window, sinks))


def sdpa_core(q, k, v, ctx: AttnContext, *, window: int | None = None, sinks: int = 0):
    """torch SDPA. The common cases pass no mask so torch may pick its flash kernel: a full causal
    prefill (T == S, is_causal) and a decode step (T == 1 sees every cached slot)."""
    B, H, T, D = q.shape
    S, H_kv = k.shape[2], k.shape[1]
    gqa = H != H_kv
    if ctx.key_mask is None and (window is None or window >= S):
        if T == S:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        if T == 1:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    mask = allowed(ctx, T, S, q.device, window, sinks)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    # a query row with no visible key (left padding) is NaN in SDPA, zero in the reference
    return y.nan_to_num_(0.0) if ctx.key_mask is not None else y


def flash_core(q, k, v, ctx: AttnContext, *, window: int | None = None, sinks: int = 0):
    """The Triton kernels. Padding (ctx.key_mask) becomes an additive bias broadcast over queries
    (stride 0, no [T, S] tensor). Decode steps use the paged decode kernel when it exists."""
    B, H, T, D = q.shape
    S = k.shape[2]
    if T == 1 and ctx.key_mask is None and (window is None or window >= S):
        dec = _decode_kernel()
        if dec is not None:
            return dec(q, k, v)
    from kernels.attention_prefill import flash_attention

    bias = None
    if ctx.key_mask is not None:
        # -1e30, not -inf: a row whose keys are all padding must not turn into NaN inside the kernel
        bias = torch.zeros(B, 1, 1, S, dtype=torch.float32, device=q.device)
        bias.masked_fill_(~ctx.key_mask[:, None, None, :S], -1e30)
        bias = bias.expand(B, 1, T, S)
    if window is not None and window >= S:
        window, sinks = None, 0
    return flash_attention(q, k.contiguous() if k.stride(-1) != 1 else k, v if v.stride(-1) == 1 else v.contiguous(),
                           causal=True, window=window, sinks=sinks if window is not None else 0, bias=bias)


_DECODE: list = []


def _decode_kernel() -> Callable | None:
    """A function (q [B, H, 1, D], k/v [B, H_kv, S, D]) -> [B, H, 1, D] running
    kernels/attention_decode on the contiguous cache viewed as pages, or None without that file."""
    if _DECODE:
        return _DECODE[0]
    fn = None
    if importlib.util.find_spec("kernels.attention_decode") is not None:
        from kernels import attention_decode as ad

        if hasattr(ad, "paged_decode_attention") and hasattr(ad, "paged_from_contiguous"):

            def fn(q, k, v):
                # zero-copy view: each sequence is one page of S slots, strides passed through
                paged = ad.paged_from_contiguous(k, v)
                return ad.paged_decode_attention(q[:, :, 0], **paged.kwargs())[:, :, None]

    _DECODE.append(fn)
    return fn


CORES: dict[str, Callable] = {"reference": reference_core, "sdpa": sdpa_core, "flash": flash_core}


# ---------------------------------------------------------------------------------------------
# The backend field
# ---------------------------------------------------------------------------------------------
def flash_available() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "needs the triton package"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return False, "needs a CUDA GPU, or TRITON_INTERPRET=1 to run Triton on the CPU (slowly)"
    return True, ""


def check_backend(who: str, backend: str, head_dim: int | None = None) -> None:
    if backend not in BACKENDS:
        raise LabError(f"{who}: backend={backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "flash":
        ok, why = flash_available()
        if not ok:
            raise LabError(f"{who}: backend=flash cannot run here: {why}")
        if head_dim is not None and head_dim not in FLASH_HEAD_DIMS:
            raise LabError(f"{who}: backend=flash supports head dims {FLASH_HEAD_DIMS}, the model has {head_dim}")


@dataclass(frozen=True)
class BackendConfig(VariantConfig):
    """A variant whose attention math can run on any of the three cores."""

    backend: str = "reference"  # reference | sdpa | flash

    def validate(self, args) -> None:
        check_backend(f"attention={self.name}", self.backend, args.head_dim)


class WithWindow:
    """A core narrowed to a sliding window (plus sinks): picklable, so deepcopy keeps it."""

    def __init__(self, core: Callable, window: int, sinks: int = 0):
        self.core, self.window, self.sinks = core, window, sinks

    def __call__(self, q, k, v, ctx):
        return self.core(q, k, v, ctx, window=self.window, sinks=self.sinks)


def linear_from(w: torch.Tensor, dtype: torch.dtype | None = None) -> torch.nn.Linear:
    """A bias-free Linear holding w [out, in] (no random init first; zero rows allowed)."""
    lin = torch.nn.Linear(1, 1, bias=False, device=w.device, dtype=dtype or w.dtype)
    lin.weight = torch.nn.Parameter(w.detach().to(dtype or w.dtype).contiguous(), requires_grad=False)
    lin.in_features, lin.out_features = w.shape[1], w.shape[0]
    return lin


def attention_modules(model) -> list:
    return [layer.self_attn for layer in model.layers]


# ---------------------------------------------------------------------------------------------
# State kept beside the model's cache (variants whose cache is not per-token K/V)
# ---------------------------------------------------------------------------------------------
# A rolling window, a Performer state or Linformer's pooled blocks cannot live in the model's
# [B, H_kv, S_max, D] cache, so such a variant keeps its own storage, keyed by the cache object the
# model passes (which stays unallocated: ContiguousKVCache allocates on first update). The model's
# `start` argument tells when a sequence restarts (0) and checks that calls continue each other.
_STATE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def layer_state(ctx: AttnContext, key: str) -> dict:
    """The variant's state for (ctx.cache, ctx.layer). start == 0 clears it; start == the tokens
    it holds continues it; start == the previous call's start replays that call (benchmarks time
    one decode step at the same slot over and over): the tensors the call replaced are put back,
    which is exact for variants that replace their tensors (Performer, Linformer) and for one
    ring slot overwritten again (a decode step of the rolling window). Any other start raises: a
    skipped or rewound chunk would be silently wrong."""
    per_cache = _STATE.setdefault(ctx.cache, {})
    st = per_cache.setdefault((key, ctx.layer), {})
    if ctx.start == 0:
        st.clear()
        st["length"] = 0
    elif st.get("length", 0) == ctx.start:
        pass
    elif st.get("prev_start") == ctx.start:
        st.update(st["prev"])
    else:
        raise ValueError(f"{key}: layer {ctx.layer} holds {st.get('length', 0)} tokens but the model continues at slot {ctx.start}")
    st["prev_start"] = ctx.start
    st["prev"] = {k: v for k, v in st.items() if k not in ("prev", "prev_start")}  # references, not copies
    return st


def advance(ctx: AttnContext, st: dict, T: int) -> None:
    """Record that T tokens were consumed; keep the model cache's `length` right (it is never
    written by these variants, so nothing else would update it)."""
    st["length"] = ctx.start + T
    if hasattr(ctx.cache, "length"):
        ctx.cache.length = ctx.start + T


def state_nbytes(cache: Any) -> int:
    """Bytes of every tensor the compact-cache variants keep for this cache."""
    total = 0
    for st in _STATE.get(cache, {}).values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "prev":
                total += v.numel() * v.element_size()
    return total


# ---------------------------------------------------------------------------------------------
# KV bytes of a whole model at a context length
# ---------------------------------------------------------------------------------------------
def model_kv_bytes(model, context: int, dtype_bytes: int = 2) -> int:
    """What the model's attention caches for one sequence of `context` tokens: modules with a
    `kv_bytes(context, dtype_bytes)` say it themselves (window-bounded, fixed-size states); the
    others cache kv_bytes_per_token per token."""
    total = 0
    for m in attention_modules(model):
        if hasattr(m, "kv_bytes"):
            total += m.kv_bytes(context, dtype_bytes)
        else:
            total += m.kv_bytes_per_token(dtype_bytes) * context
    return total


# ---------------------------------------------------------------------------------------------
# A base for variants that keep the checkpoint's projections but replace what happens after them
# ---------------------------------------------------------------------------------------------
class ProjectedAttention(torch.nn.Module):
    """The checkpoint's q/k/v/o projections (shared, not copied) and RoPE; subclasses define the
    attention and what it caches."""

    def __init__(self, src: torch.nn.Module, core: Callable | None = None):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim, self.layer_idx = src.n_heads, src.n_kv_heads, src.head_dim, src.layer_idx
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = src.q_proj, src.k_proj, src.v_proj, src.o_proj
        self.core = core or src.core

    def qkv(self, x: torch.Tensor, ctx: AttnContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, H_kv, T, D]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return ctx.rotate(q), ctx.rotate(k), v

    def out(self, y: torch.Tensor) -> torch.Tensor:
        B, H, T, D = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * D))

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes of one cached token (K and V of every KV head)."""
        return 2 * self.n_kv_heads * self.head_dim * dtype_bytes
