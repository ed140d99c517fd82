"""perplexity: quality of the model as transformed by the chosen variants, on a text corpus.

Sliding-window perplexity (lab.model.perplexity) over the first `max_tokens` tokens of the corpus
(default: Python's pydoc topics; any file via corpus.path). When any model transform (position,
attention, quant) differs from its axis' reference, the unconverted model is run on the same
windows and `kl_to_reference` (mean KL(reference || variant) per token, nats) and
`top1_agreement` are recorded too. One window's forward pass is timed (end to end: the host's
launches inside, as a caller waits) so the point sits on the roofline (FLOPs of a prefill of
`window` tokens, bytes = weights).

A model without a tokenizer (random-weight presets) reads the corpus as UTF-8 bytes, one token
each: its perplexity means nothing, but the KL between variants still does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from lab import registry
from lab.context import MODEL_TRANSFORMS, RunContext
from lab.model.generate import prefill_cost
from lab.model.perplexity import perplexity
from lab.model.weights import weight_bytes
from lab.registry import VariantConfig, register


@dataclass(frozen=True)
class PerplexityConfig(VariantConfig):
    window: int = 0  # tokens per forward pass; 0 = by size: small 128, full 2048
    stride: int = 0  # 0 = window // 2
    max_tokens: int = 0  # tokens of the corpus scored; 0 = corpus.max_tokens (small: at most 1024)
    time_window: bool = True  # time one window's forward pass (roofline point)


def corpus_ids(ctx: RunContext, max_tokens: int) -> tuple[torch.Tensor, str]:
    """The first max_tokens token ids of the corpus, and how they were made."""
    text = ctx.corpus_text()
    tok = ctx.loaded().tokenizer
    if tok is None:
        ids = list(text.encode("utf-8")[:max_tokens])
        return torch.tensor(ids, dtype=torch.long), "utf-8 bytes as token ids (the model has no tokenizer)"
    ids = tok.encode(text[: max_tokens * 8])  # ~4 characters a token: 8 per token is plenty
    if len(ids) < max_tokens:
        ids = tok.encode(text)
    return torch.tensor(ids[:max_tokens], dtype=torch.long), "tokenizer"


def transformed(ctx: RunContext) -> bool:
    """Whether any model transform differs from its axis' reference (so a KL is meaningful)."""
    for group in MODEL_TRANSFORMS:
        chosen, ref = ctx.choices.get(group), registry.reference(group)
        if chosen is not None and (ref is None or chosen != ref.default_config()):
            return True
    return False


@register("scenario", "perplexity", config=PerplexityConfig)
def run(ctx: RunContext, cfg: PerplexityConfig) -> None:
    """sliding-window perplexity, and KL to the unconverted model when variants change it"""
    full = ctx.size == "full"
    window = cfg.window or (2048 if full else 128)
    stride = cfg.stride or max(1, window // 2)
    max_tokens = cfg.max_tokens or (ctx.corpus_max_tokens if full else min(ctx.corpus_max_tokens, 1024))
    rec = ctx.rec
    model = ctx.model()
    reference = ctx.model(reference=True) if transformed(ctx) else None
    ids, how = corpus_ids(ctx, max_tokens)
    ids = ids % ctx.args.vocab_size
    method = f"sliding window {window}, stride {stride}, {how}"
    with rec.point(window=window, stride=stride):
        q = perplexity(model, ids, window=window, stride=stride, reference=reference,
                       progress=lambda it: ctx.progress(it, desc="perplexity"))
        rec.metric("perplexity", q.ppl, "", method=method, tokens_scored=q.tokens)
        rec.metric("nll", q.nll, "nats/token", method=method, tokens_scored=q.tokens)
        rec.metric("tokens_scored", q.tokens, "tokens", method=method)
        if reference is not None:
            rec.metric("kl_to_reference", q.kl, "nats/token", method=f"KL(reference || variant), {method}", tokens_scored=q.tokens)
            rec.metric("top1_agreement", q.top1_agree, "fraction", method=f"argmax equal to the reference's, {method}")
        if cfg.time_window:
            x = ids[: min(window, len(ids))][None].to(ctx.device)
            flops, _ = prefill_cost(ctx.args, batch=1, seq_len=x.shape[1], weight_bytes=0, kv_bytes_per_token=0)
            m = rec.measure
            quick = replace(m, reps=min(m.reps, 10), min_reps=min(m.min_reps, 3), warmup_ms=min(m.warmup_ms, 50.0), end_to_end=True)

            @torch.inference_mode()
            def fwd():
                return model(x)

            rec.time(fwd, metric="window", flops=flops, bytes_moved=weight_bytes(model), tokens=x.shape[1], measure=quick)
