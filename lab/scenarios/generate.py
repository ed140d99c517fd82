"""generate: end-to-end generation of a few prompts in one left-padded batch — tokens/s and the text.

The prompts are wrapped in the model's chat template (when it has one and `chat` is on), generated
with the chosen sampler until a stop token or `max_new_tokens`, and each answer is recorded as a
row (`text` column). The timing reruns the batch with stop tokens ignored, so every repetition
produces exactly B·max_new_tokens tokens: prefill + (max_new_tokens - 1) decode steps, whose
analytic FLOPs and bytes are summed for the roofline.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from lab.context import RunContext
from lab.model.generate import decode_cost, generate, prefill_cost
from lab.model.weights import weight_bytes
from lab.registry import VariantConfig, register

PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Explain in one sentence what a KV cache is.",
)


@dataclass(frozen=True)
class GenerateConfig(VariantConfig):
    prompts: tuple[str, ...] = PROMPTS
    max_new_tokens: int = 0  # 0 = by size: small 16, full 128
    chat: bool = True  # wrap each prompt in the tokenizer's chat template


def encode_prompts(ctx: RunContext, prompts, chat: bool) -> tuple[list[list[int]], object]:
    """Token ids of each prompt and a decode function (UTF-8 bytes when the model has no tokenizer)."""
    tok = ctx.loaded().tokenizer
    if tok is None:
        V = ctx.args.vocab_size
        return [[b % V for b in p.encode("utf-8")] for p in prompts], lambda ids: bytes(i % 256 for i in ids).decode("utf-8", "replace")
    texts = [tok.apply_chat_template([{"role": "user", "content": p}]) if chat else p for p in prompts]
    return [tok.encode(t) for t in texts], tok.decode


@register("scenario", "generate", config=GenerateConfig)
def run(ctx: RunContext, cfg: GenerateConfig) -> None:
    """end-to-end generation of a few prompts: tokens/s and the text"""
    n_new = cfg.max_new_tokens or (128 if ctx.size == "full" else 16)
    model = ctx.model()
    rec, args = ctx.rec, ctx.args
    tok = ctx.loaded().tokenizer
    prompts, decode = encode_prompts(ctx, cfg.prompts, cfg.chat)
    stop_ids = tok.stop_ids if tok is not None else ()
    pad_id = tok.pad_id if tok is not None and tok.pad_id is not None else 0
    sampler = ctx.sampler()
    make_cache = lambda b, n: ctx.make_cache(b, n)
    B, L = len(prompts), max(len(p) for p in prompts)
    with rec.point(batch=B, prompt_len=L, max_new_tokens=n_new):
        gen = torch.Generator(ctx.device).manual_seed(ctx.seed)
        out = generate(model, prompts, max_new_tokens=n_new, sampler=sampler, stop_ids=stop_ids,
                       make_cache=make_cache, pad_id=pad_id, generator=gen)
        for i, (prompt, new, stopped) in enumerate(zip(cfg.prompts, out.tokens, out.stopped)):
            rec.metric("new_tokens", len(new), "tokens", method="stop token" if stopped else "max_new_tokens",
                       prompt_index=i, prompt=prompt, text=decode(new))

        wbytes = weight_bytes(model)
        kv_tok = model.kv_bytes_per_token(torch.finfo(ctx.dtype).bits // 8)
        flops, nbytes = prefill_cost(args, batch=B, seq_len=L, weight_bytes=wbytes, kv_bytes_per_token=kv_tok)
        for i in range(n_new - 1):
            f, b = decode_cost(args, batch=B, context=L + i, weight_bytes=wbytes, kv_bytes_per_token=kv_tok)
            flops, nbytes = flops + f, nbytes + b
        m = rec.measure
        quick = replace(m, reps=min(m.reps, 5), min_reps=min(m.min_reps, 3), warmup_ms=0.0, cuda_graph=False, end_to_end=True)
        rec.time(lambda: generate(model, prompts, max_new_tokens=n_new, sampler=sampler, make_cache=make_cache, pad_id=pad_id, generator=gen),
                 metric="generate", flops=flops, bytes_moved=nbytes, tokens=B * n_new, measure=quick)
