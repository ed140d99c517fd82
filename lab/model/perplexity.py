"""Perplexity over a long text with a sliding window, and KL(reference || variant) on the same windows.

Hugging Face's strided method: windows of `window` tokens start every `stride` tokens; in each,
only the tokens not scored by an earlier window are scored, each with up to window-1 tokens of
context. stride == window gives disjoint chunks (fast, less context); a smaller stride costs
window/stride times the forward passes and gives every token more context. The first token of the
text is never scored (nothing predicts it).

    q = perplexity(model, ids, window=1024, stride=512)                  # q.ppl, q.nll, q.tokens
    q = perplexity(variant, ids, window=1024, stride=512, reference=ref)  # + q.kl, q.top1_agree
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F


@dataclass
class Quality:
    nll: float  # mean negative log-likelihood per scored token (nats)
    ppl: float  # exp(nll)
    tokens: int  # tokens scored
    windows: int  # forward passes
    kl: float | None = None  # mean KL(reference || model) per scored token (nats), if a reference was given
    top1_agree: float | None = None  # fraction of scored tokens where both models' argmax agree


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_scored) for each window: input ids[begin:end], targets at positions
    first_scored..end-1 (absolute), i.e. those not scored before."""
    if window < 2 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got window={window}, stride={stride}")
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        first = max(prev_end, begin + 1)
        if first < end:  # HF would run a window that scores nothing here; skip it
            out.append((begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return out


@torch.inference_mode()
def perplexity(
    model,
    ids: torch.Tensor,  # [N] token ids of the whole text
    *,
    window: int,
    stride: int,
    reference=None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> Quality:
    """Sliding-window perplexity of `model` on `ids`; with `reference`, also the KL divergence
    KL(p_ref || p_model) of the next-token distributions at every scored position. Sums in float64."""
    device = model.embed_tokens.weight.device
    ids = ids.to(device)
    nll_sum, kl_sum, agree, count = 0.0, 0.0, 0, 0
    spans = windows(len(ids), window, stride)
    for begin, end, first in progress(spans):
        x = ids[begin:end][None]  # [1, T]
        lo = first - begin  # first scored position inside the window (>= 1)
        logits = _f32(model(x)[0, lo - 1 : -1])  # [n, V] predict positions lo..T-1
        target = x[0, lo:]  # [n]
        logp = F.log_softmax(logits, dim=-1)
        nll_sum += float(-logp.gather(1, target[:, None]).double().sum())
        count += len(target)
        if reference is not None:
            ref_logp = F.log_softmax(_f32(reference(x)[0, lo - 1 : -1]), dim=-1)
            kl_sum += float(F.kl_div(logp, ref_logp, log_target=True, reduction="sum").double())  # Σ p_ref (log p_ref - log p)
            agree += int((ref_logp.argmax(-1) == logp.argmax(-1)).sum())
    nll = nll_sum / max(count, 1)
    q = Quality(nll=nll, ppl=math.exp(nll), tokens=count, windows=len(spans))
    if reference is not None:
        q.kl, q.top1_agree = kl_sum / max(count, 1), agree / max(count, 1)
    return q


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))  # float32 at least; float64 stays


def kl_divergence(reference, model, ids: torch.Tensor, *, window: int, stride: int) -> float:
    """Mean KL(reference || model) per scored token over the same windows as perplexity()."""
    return perplexity(model, ids, window=window, stride=stride, reference=reference).kl
