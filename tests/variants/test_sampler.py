"""Samplers: greedy is argmax; the torch sampler draws from exactly the filtered distribution
(chi-square against probs()), and each filter keeps the set it promises."""
from __future__ import annotations

import math

import pytest
import torch

from lab import registry
from lab.errors import LabError
from variants.sampler.multinomial import MultinomialConfig, probs, sample


def _cfg(**kw) -> MultinomialConfig:
    return MultinomialConfig(name="multinomial", **kw)


def test_registry_entries_and_reference():
    table = registry.entries("sampler")
    assert {"greedy", "multinomial"} <= set(table)
    assert registry.reference("sampler").name == "greedy"
    for name, entry in table.items():
        if entry.requires:
            continue
        s = entry.fn(entry.default_config())
        out = s(torch.randn(3, 50), torch.Generator().manual_seed(0))
        assert out.shape == (3,) and out.dtype == torch.long and bool(((0 <= out) & (out < 50)).all()), name


def test_greedy_is_argmax():
    s = registry.get("sampler", "greedy").fn(registry.get("sampler", "greedy").default_config())
    x = torch.randn(7, 1000)
    assert torch.equal(s(x, None), x.argmax(-1))


def _chi2_pvalue(counts: torch.Tensor, p: torch.Tensor, n: int) -> float:
    """Pearson chi-square p-value over the categories with p > 0 (Wilson–Hilferty approximation)."""
    keep = p > 0
    exp = p[keep] * n
    stat = float(((counts[keep] - exp) ** 2 / exp).sum())
    k = int(keep.sum()) - 1
    if k <= 0:
        return 1.0
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8), dict(min_p=0.1),
                                dict(temperature=1.3, top_k=12, top_p=0.9, min_p=0.02)])
def test_draws_follow_the_filtered_distribution(kw):
    torch.manual_seed(0)
    V, N = 24, 40000
    logits = torch.randn(V) * 2
    cfg = _cfg(**kw)
    p = probs(logits[None], cfg)[0]
    draws = sample(logits.expand(N, V), cfg, torch.Generator().manual_seed(1))
    counts = torch.bincount(draws, minlength=V).double()
    assert counts[p == 0].sum() == 0  # filtered tokens are never drawn
    assert _chi2_pvalue(counts, p.double(), N) > 1e-3


def test_filters_keep_what_they_promise():
    torch.manual_seed(0)
    logits = torch.randn(4, 100)
    soft = torch.softmax(logits, -1)
    p = probs(logits, _cfg(top_k=7))
    assert ((p > 0).sum(-1) == 7).all()
    assert torch.equal((p > 0), soft >= soft.topk(7, -1).values[:, -1:])
    p = probs(logits, _cfg(top_p=0.5))
    for row, s in zip(p, soft):
        kept = s[row > 0]
        assert kept.sum() >= 0.5 and kept.sum() - kept.min() < 0.5  # the smallest set reaching 0.5
        assert s[row == 0].max() <= kept.min()
    p = probs(logits, _cfg(min_p=0.3))
    assert torch.equal(p > 0, soft >= 0.3 * soft.max(-1, keepdim=True).values)
    p = probs(logits, _cfg(top_p=1e-6))  # at least one token always survives
    assert torch.equal(p.argmax(-1), logits.argmax(-1)) and ((p > 0).sum(-1) == 1).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(4))


def test_temperature_zero_is_greedy_and_generator_reproduces():
    x = torch.randn(5, 300)
    assert torch.equal(sample(x, _cfg(temperature=0.0)), x.argmax(-1))
    a = sample(x, _cfg(top_p=0.9), torch.Generator().manual_seed(3))
    b = sample(x, _cfg(top_p=0.9), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kw,msg", [(dict(temperature=-1), "temperature"), (dict(top_k=-2), "top_k"),
                                    (dict(top_p=0.0), "top_p"), (dict(min_p=1.5), "min_p")])
def test_bad_configs_raise_lab_error(kw, msg):
    with pytest.raises(LabError, match=msg):
        registry.get("sampler", "multinomial").fn(_cfg(**kw))
