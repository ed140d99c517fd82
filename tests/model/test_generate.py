"""The decode loop: batches of ragged prompts, stop tokens, pluggable samplers, cost formulas."""
from __future__ import annotations

import pytest
import torch

from lab.model.generate import decode_cost, generate, greedy, left_pad, prefill_cost
from lab.model.kv_cache import ContiguousKVCache
from tests.model.conftest import make_tiny


def _reference_greedy(model, prompt, n):
    """Greedy by recomputing the whole sequence each step (no cache, no padding)."""
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_batch_rows_equal_each_prompt_alone_and_recomputation():
    model = make_tiny(torch.float64, n_kv_heads=2)
    torch.manual_seed(3)
    prompts = [torch.randint(0, 512, (n,)).tolist() for n in (7, 2, 11, 1)]
    batch = generate(model, prompts, max_new_tokens=12)
    assert batch.prompt_len == 11 and batch.steps == 11
    outs = set()
    for p, row in zip(prompts, batch.tokens):
        alone = generate(model, [p], max_new_tokens=12).tokens[0]
        assert row == alone == _reference_greedy(model, p, 12)
        outs.add(tuple(row))
    assert len(outs) == 4 and all(len(set(r)) > 2 for r in outs)  # the model is not degenerate


def test_stop_tokens_end_rows_independently():
    model = make_tiny(torch.float64)
    prompts = [[5, 6, 7], [100, 3]]
    free = generate(model, prompts, max_new_tokens=10).tokens
    stop = free[0][3]  # row 0 stops at its 4th token
    out = generate(model, prompts, max_new_tokens=10, stop_ids=[stop])
    assert out.tokens[0] == free[0][:3] and out.stopped[0]
    if stop in free[1]:
        assert out.tokens[1] == free[1][: free[1].index(stop)] and out.stopped[1]
    else:
        assert out.tokens[1] == free[1] and not out.stopped[1]
    # every row stopped at once: the loop ends early
    first = generate(model, [[5, 6, 7]], max_new_tokens=10, stop_ids=[free[0][0]])
    assert first.tokens == [[]] and first.steps == 0


def test_sampler_and_cache_are_pluggable():
    model = make_tiny()
    seen = []

    def always_42(logits, generator):
        seen.append(tuple(logits.shape))
        return torch.full(logits.shape[:1], 42, dtype=torch.long)

    caches = []

    def make_cache(b, n):
        caches.append((b, n))
        return ContiguousKVCache(model.args.n_layers, b, n)

    out = generate(model, [[1, 2, 3], [4]], max_new_tokens=5, sampler=always_42, make_cache=make_cache)
    assert out.tokens == [[42] * 5, [42] * 5]
    assert seen == [(2, 512)] * 5 and caches == [(2, 3 + 5)]
    with pytest.raises(ValueError):
        generate(model, [[]], max_new_tokens=2)


def test_left_pad_positions_and_mask():
    tokens, key_mask, pos = left_pad([[1, 2, 3], [7]], pad_id=0, total_len=6, device="cpu")
    assert tokens.tolist() == [[1, 2, 3], [0, 0, 7]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert key_mask.tolist() == [[True] * 6, [False, False, True, True, True, True]]
    assert left_pad([[1, 2], [3, 4]], 0, 4, "cpu")[1] is None  # no padding, no mask


def test_greedy_is_argmax():
    x = torch.randn(4, 33)
    assert torch.equal(greedy(x), x.argmax(-1))


def test_cost_formulas_sum_per_token_costs():
    from lab import registry

    args = registry.get("model", "llama3_8b").default_config().model_args()
    f, b = prefill_cost(args, batch=3, seq_len=50, weight_bytes=1000, kv_bytes_per_token=7)
    assert f == pytest.approx(3 * sum(args.flops_per_token(t + 1) for t in range(50)))
    assert b == 1000 + 3 * 50 * 7
    f, b = decode_cost(args, batch=8, context=100, weight_bytes=1000, kv_bytes_per_token=7)
    assert f == 8 * args.flops_per_token(101) and b == 1000 + 8 * 101 * 7
    # batch-1 decode of an 8B model in bf16 is memory-bound: ~1 FLOP per byte
    f, b = decode_cost(args, batch=1, context=512, weight_bytes=args.weight_bytes(2), kv_bytes_per_token=args.kv_bytes_per_token(2))
    assert 0.9 < f / b < 1.1
