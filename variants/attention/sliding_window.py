"""attention=sliding_window: each query sees the last `window` tokens (itself included), as in
Mistral, plus the first `sinks` tokens (StreamingLLM's attention sinks; 0 = none).

Same weights as the checkpoint; only the mask changes, so with window >= the sequence length it
is the checkpoint exactly. Below that it is an approximation for a model trained with full
attention (SmolLM2 was): quality is measured. StreamingLLM's observation is that the first tokens
soak up attention mass, and evicting them is what breaks windowed models; sinks keep them.

Cache (`rolling`):
  rolling=true (default)  a ring buffer of sinks + window slots per layer, kept beside the model's
      cache (which then stays unallocated): token p >= sinks lives in slot sinks + (p - sinks) % W.
      A decode step writes one slot and attends to every valid slot with no mask at all (they are
      exactly the sinks and the last W tokens). A prefill chunk attends to [sinks, the previous
      W-1 tokens in order, the chunk] under the window mask. KV bytes for a context S:
      min(S, sinks + W) tokens, so per token of context it falls as W/S. Positions keep counting
      past the window (RoPE uses the true position, as Mistral does, not the slot as StreamingLLM
      does); padded batches (key_mask) are not supported with the ring.
  rolling=false           the model's full cache, masked: saves attention FLOPs per query
      (at most W keys) but no memory, and the decode kernels still read the whole cache.

With a left-padded batch the sinks are the first `sinks` slots, i.e. padding for shorter rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.errors import LabError
from lab.model.llama import AttnContext
from lab.registry import register
from variants.attention._common import CORES, BackendConfig, ProjectedAttention, WithWindow, advance, layer_state


@dataclass(frozen=True)
class WindowConfig(BackendConfig):
    window: int = 256  # keys per query, the query itself included
    sinks: int = 0  # first tokens every query also sees (StreamingLLM)
    rolling: bool = True  # ring cache of sinks + window slots (else the full cache, masked)

    def validate(self, args) -> None:
        super().validate(args)
        if self.window < 1 or self.sinks < 0:
            raise LabError(f"attention={self.name}: window={self.window} must be >= 1 and sinks={self.sinks} >= 0")


class WindowAttention(ProjectedAttention):
    def __init__(self, src, window: int, sinks: int, rolling: bool, core):
        super().__init__(src, core)
        self.window, self.sinks, self.rolling = window, sinks, rolling
        self.windowed = WithWindow(core, window, sinks)

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        q, k, v = self.qkv(x, ctx)
        if ctx.cache is None:
            return self.out(self.windowed(q, k, v, ctx))
        if not self.rolling:
            k, v = ctx.cache.update(ctx.layer, k, v, ctx.start)  # [B, H_kv, S, D]
            return self.out(self.windowed(q, k, v, ctx))
        return self.out(self.ring(q, k, v, ctx))

    def ring(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        if ctx.key_mask is not None:
            raise ValueError("sliding_window: the rolling cache does not support padded batches (key_mask); use attention.rolling=false")
        B, H_kv, T, D = k.shape
        n, W, P = self.sinks, self.window, ctx.start
        st = layer_state(ctx, "sliding_window")
        if "k" not in st:
            st["k"] = k.new_zeros(B, H_kv, n + W, D)  # [B, H_kv, sinks + W, D]
            st["v"] = v.new_zeros(B, H_kv, n + W, D)
        bk, bv = st["k"], st["v"]
        if T == 1:
            slot = self.slot(P)
            bk[:, :, slot], bv[:, :, slot] = k[:, :, 0], v[:, :, 0]
            L = min(P + 1, n + W)  # valid slots form a prefix; all are visible to this query
            y = self.core(q, bk[:, :, :L], bv[:, :, :L], ctx)
        else:
            lo = max(n, P - (W - 1))  # earliest non-sink position still inside the first query's window
            idx = torch.tensor([self.slot(p) for p in range(lo, P)], dtype=torch.long, device=k.device)
            ns = min(n, P)
            kc = torch.cat((bk[:, :, :ns], bk[:, :, idx], k), 2)  # [B, H_kv, S', D] in position order
            vc = torch.cat((bv[:, :, :ns], bv[:, :, idx], v), 2)
            y = self.windowed(q, kc, vc, ctx)  # slot distances equal position distances past the sinks
            keep = [p for p in range(P, P + T) if p < n] + [p for p in range(max(n, P, P + T - W), P + T)]
            if keep:
                dst = torch.tensor([self.slot(p) for p in keep], dtype=torch.long, device=k.device)
                src = torch.tensor([p - P for p in keep], dtype=torch.long, device=k.device)
                bk[:, :, dst], bv[:, :, dst] = k[:, :, src], v[:, :, src]
        advance(ctx, st, T)
        return y

    def slot(self, p: int) -> int:
        return p if p < self.sinks else self.sinks + (p - self.sinks) % self.window

    def kv_bytes(self, context: int, dtype_bytes: int = 2) -> int:
        """Cache bytes for one sequence of `context` tokens: window-bounded when rolling."""
        tokens = min(context, self.sinks + self.window) if self.rolling else context
        return tokens * self.kv_bytes_per_token(dtype_bytes)


@register("attention", "sliding_window", config=WindowConfig)
def apply_(model, cfg: WindowConfig) -> None:
    """Sliding-window attention (Mistral) with optional attention sinks and a rolling cache."""
    cfg.validate(model.args)
    for layer in model.layers:
        layer.self_attn = WindowAttention(layer.self_attn, cfg.window, cfg.sinks, cfg.rolling, CORES[cfg.backend])
