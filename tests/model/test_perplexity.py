"""Sliding-window perplexity against a brute-force loop written like Hugging Face's guide, and KL."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lab.model.perplexity import kl_divergence, perplexity, windows
from tests.model.conftest import make_tiny


def _hf_loop(model, ids, window, stride):
    """The HF perplexity guide's loop: labels -100 except the last trg_len, loss over shifted labels."""
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    N = len(ids)
    for begin in range(0, N, stride):
        end = min(begin + window, N)
        trg_len = end - prev_end
        x = ids[begin:end][None]
        labels = x.clone()
        labels[:, :-trg_len] = -100
        logits = model(x)
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        valid = int((shift_labels != -100).sum())
        if valid:
            nll_sum += float(F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]).double(), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"))
            n_tokens += valid
        prev_end = end
        if end == N:
            break
    return nll_sum / n_tokens, n_tokens


@pytest.mark.parametrize("N,window,stride", [(100, 32, 16), (100, 32, 32), (65, 64, 7), (20, 64, 32), (33, 16, 16)])
def test_matches_hf_strided_loop(N, window, stride):
    model = make_tiny(torch.float64)
    ids = torch.randint(0, 512, (N,))
    with torch.inference_mode():
        q = perplexity(model, ids, window=window, stride=stride)
        nll, n = _hf_loop(model, ids, window, stride)
    assert q.tokens == n and q.nll == pytest.approx(nll, rel=1e-9) and q.ppl == pytest.approx(math.exp(nll))


def test_windows_score_each_token_once():
    for N, w, s in [(1000, 128, 64), (1000, 128, 128), (257, 100, 1), (5, 8, 4)]:
        scored = [t for b, e, f in windows(N, w, s) for t in range(f, e)]
        assert len(scored) == len(set(scored)) and all(e - b <= w for b, e, _ in windows(N, w, s))
        if s < w:  # with overlap every token but the first is scored
            assert sorted(scored) == list(range(1, N))
    with pytest.raises(ValueError):
        windows(10, 8, 9)


def test_kl_zero_for_same_model_positive_for_perturbed():
    model = make_tiny(torch.float64)
    ids = torch.randint(0, 512, (80,))
    q = perplexity(model, ids, window=32, stride=16, reference=model)
    assert abs(q.kl) < 1e-12 and q.top1_agree == 1.0
    other = make_tiny(torch.float64)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.02 * torch.randn_like(p))
    kl = kl_divergence(model, other, ids, window=32, stride=16)
    # brute force: every scored position's Σ p_ref (log p_ref - log p_other), averaged
    terms = []
    for b, e, first in windows(len(ids), 32, 16):
        x = ids[b:e][None]
        lr, lo = torch.log_softmax(model(x)[0], -1), torch.log_softmax(other(x)[0], -1)
        for t in range(first - b, e - b):
            terms.append(float((lr[t - 1].exp() * (lr[t - 1] - lo[t - 1])).sum()))
    assert len(terms) == 79 and kl == pytest.approx(sum(terms) / len(terms), rel=1e-9) and kl > 1e-4
