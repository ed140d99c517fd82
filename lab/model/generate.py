"""Prefill, decode and the generation loop over a KV cache, with their cost formulas.

    cache = ContiguousKVCache(args.n_layers, batch=B, max_len=L + N)
    logits = prefill(model, tokens, cache)                   # [B, V], fills slots 0..L-1
    logits = decode_step(model, next_tok, cache, start=L)    # [B, V], fills slot L
    out = generate(model, [ids_a, ids_b], max_new_tokens=32, sampler=greedy, stop_ids=tok.stop_ids)

A batch of prompts of different lengths is left-padded to a common length L, so every row's next
token sits in the same cache slot: row b's prompt occupies slots L-n_b..L-1, `key_mask` marks the
real slots, and positions count from each row's first real token (so RoPE sees the same positions
as for that prompt alone).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from lab.model.kv_cache import ContiguousKVCache
from lab.model.llama import ModelArgs

Sampler = Callable[[torch.Tensor, Any], torch.Tensor]  # (logits [B, V], generator) -> tokens [B]


def greedy(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return logits.argmax(dim=-1)  # [B]


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def prefill(model, tokens: torch.Tensor, cache, *, key_mask: torch.Tensor | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
    """Run the prompt tokens [B, T] through the model, writing slots 0..T-1; logits of the last: [B, V]."""
    return model(tokens, cache=cache, start=0, key_mask=key_mask, pos=pos, last_only=True)[:, -1]


@torch.inference_mode()
def decode_step(model, tokens: torch.Tensor, cache, start: int, *, key_mask: torch.Tensor | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
    """One new token per row, tokens [B, 1], written at slot `start`; attends to slots 0..start. -> [B, V]"""
    return model(tokens, cache=cache, start=start, key_mask=key_mask, pos=pos, last_only=True)[:, -1]


@torch.inference_mode()
def prefill_chunked(model, tokens: torch.Tensor, cache, *, chunk: int, key_mask: torch.Tensor | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
    """prefill() in chunks of `chunk` tokens (each attends to the cache so far): the same result,
    with attention scores of B·H·chunk·S instead of B·H·T·S. -> logits of the last token [B, V]"""
    T = tokens.shape[1]
    for s in range(0, T, chunk):
        e = min(s + chunk, T)
        logits = model(tokens[:, s:e], cache=cache, start=s, key_mask=key_mask, pos=None if pos is None else pos[:, s:e], last_only=True)
    return logits[:, -1]


def chunk_for(batch: int, n_heads: int, seq_len: int, budget_bytes: float = 2**31) -> int:
    """A prefill chunk whose float32 score matrix B·H·chunk·S stays under `budget_bytes` (2 GiB)."""
    return int(max(16, min(seq_len, budget_bytes // (batch * n_heads * max(seq_len, 1) * 4))))


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, total_len: int, device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """tokens [B, L], key_mask [B, total_len] (None when no row is padded), pos [B, L]."""
    L = max(len(p) for p in prompts)
    B = len(prompts)
    tokens = torch.full((B, L), pad_id, dtype=torch.long)
    pad = torch.tensor([L - len(p) for p in prompts])  # [B]
    for b, p in enumerate(prompts):
        tokens[b, L - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
    slots = torch.arange(total_len)
    key_mask = slots[None, :] >= pad[:, None]  # [B, total_len]: a row's real slots are pad..L-1, then every generated one
    pos = (torch.arange(L)[None, :] - pad[:, None]).clamp(min=0)  # [B, L]
    key_mask = key_mask.to(device) if bool(pad.any()) else None
    return tokens.to(device), key_mask, pos.to(device)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
@dataclass
class Generation:
    tokens: list[list[int]]  # new tokens of each prompt, a stop token excluded
    stopped: list[bool]  # whether each row ended on a stop token (else: max_new_tokens)
    prompt_len: int  # L, the padded prompt length
    steps: int  # decode steps run (the model calls after prefill)


@torch.inference_mode()
def generate(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sampler: Sampler = greedy,
    stop_ids: Sequence[int] = (),
    make_cache: Callable[[int, int], Any] | None = None,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> Generation:
    """Generate up to `max_new_tokens` for each prompt (a list of token-id lists) in one batch.
    `make_cache(batch, max_len)` builds the KV cache (default: contiguous, in the model's dtype)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, each of at least one token")
    device = model.embed_tokens.weight.device
    B, L = len(prompts), max(len(p) for p in prompts)
    total = L + max_new_tokens
    if make_cache is None:
        make_cache = lambda b, n: ContiguousKVCache(model.args.n_layers, b, n, dtype=model.embed_tokens.weight.dtype, device=device)
    cache = make_cache(B, total)
    tokens, key_mask, pos = left_pad(prompts, pad_id, total, device)
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # [B] next position of each row

    logits = prefill(model, tokens, cache, key_mask=key_mask, pos=pos)  # [B, V]
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    stopped = torch.zeros(B, dtype=torch.bool, device=device)
    n_new = torch.full((B,), max_new_tokens, dtype=torch.long, device=device)
    steps = 0
    for i in range(max_new_tokens):
        nxt = sampler(logits, generator)  # [B]
        hit = torch.isin(nxt, stop) & ~done
        n_new = torch.where(hit, torch.full_like(n_new, i), n_new)
        stopped |= hit
        done |= hit
        out[:, i] = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        if i == max_new_tokens - 1 or (len(stop) and bool(done.all())):  # one host sync per step, only with stop tokens
            break
        step_pos = (lengths + i)[:, None]  # [B, 1]
        logits = decode_step(model, out[:, i : i + 1], cache, L + i, key_mask=key_mask, pos=step_pos)
        steps += 1
    n_new, stopped, out = n_new.tolist(), stopped.tolist(), out.tolist()
    return Generation([row[:n] for row, n in zip(out, n_new)], stopped, L, steps)


# ---------------------------------------------------------------------------------------------
# Costs (analytic; the recorder turns them into TFLOP/s, GB/s and roofline fractions)
# ---------------------------------------------------------------------------------------------
def prefill_cost(args: ModelArgs, *, batch: int, seq_len: int, weight_bytes: int, kv_bytes_per_token: int) -> tuple[float, float]:
    """(FLOPs, bytes) of prefilling `seq_len` tokens per row: token t attends to t+1 keys, so
    FLOPs = B·Σ_t flops_per_token(t+1); bytes = weights read once + the K/V written."""
    f0 = args.flops_per_token(0)
    per_key = args.flops_per_token(1) - f0  # 4·L·H·D
    T = seq_len
    flops = batch * (T * f0 + per_key * T * (T + 1) / 2)
    return flops, weight_bytes + batch * T * kv_bytes_per_token


def decode_cost(args: ModelArgs, *, batch: int, context: int, weight_bytes: int, kv_bytes_per_token: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step with `context` tokens cached: every weight is read once
    for the whole batch, each row reads its context's K/V and writes one token's."""
    flops = batch * args.flops_per_token(context + 1)
    return flops, weight_bytes + batch * (context + 1) * kv_bytes_per_token
