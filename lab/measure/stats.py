"""Statistics on raw samples: summaries (median, IQR, bootstrap 95% CI of the median) and the
two-sample tests the regression gate runs (Mann-Whitney U, bootstrap CI of a ratio of medians).

Latency samples are skewed (a floor plus a tail of interruptions), so everything here is
rank- or median-based; nothing assumes normality.
"""
from __future__ import annotations

import math

import numpy as np


def summarize(samples, bootstrap: int = 2000, seed: int = 0) -> dict[str, float]:
    x = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    if len(x) > 1 and bootstrap > 0:
        rng = np.random.default_rng(seed)
        meds = np.median(rng.choice(x, size=(bootstrap, len(x)), replace=True), axis=1)
        lo, hi = np.percentile(meds, [2.5, 97.5])
    else:
        lo = hi = med
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "ci_lo": float(lo), "ci_hi": float(hi), "n": int(len(x))}


def mann_whitney_greater(x, y) -> float:
    """One-sided p-value of the Mann-Whitney U test that `x` tends to be larger than `y`.

    Normal approximation with tie correction and continuity correction (the exact distribution
    matters only for a handful of samples, where no p-value is convincing anyway). Returns 1.0 when
    either side is empty or every value is tied.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 1.0
    allv = np.concatenate([x, y])
    ranks = _rankdata(allv)
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0  # pairs (xi, yj) with xi > yj, ties counted half
    n = n1 + n2
    _, counts = np.unique(allv, return_counts=True)
    tie = (counts**3 - counts).sum() / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie)
    if var <= 0:
        return 1.0
    z = (u1 - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return float(0.5 * math.erfc(z / math.sqrt(2.0)))


def _rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = np.argsort(a, kind="mergesort")
    sa = a[order]
    ranks = np.empty(len(a), dtype=np.float64)
    i = 0
    while i < len(sa):
        j = i
        while j + 1 < len(sa) and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def ratio_of_medians_ci(num, den, bootstrap: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """median(num) / median(den) and a percentile-bootstrap CI, each side resampled on its own."""
    a = np.asarray(num, dtype=np.float64)
    b = np.asarray(den, dtype=np.float64)
    point = float(np.median(a) / np.median(b))
    if len(a) < 2 or len(b) < 2 or bootstrap <= 0:
        return point, point, point
    rng = np.random.default_rng(seed)
    ma = np.median(rng.choice(a, size=(bootstrap, len(a)), replace=True), axis=1)
    mb = np.median(rng.choice(b, size=(bootstrap, len(b)), replace=True), axis=1)
    r = ma / mb
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(r, [tail, 100 - tail])
    return point, float(lo), float(hi)
