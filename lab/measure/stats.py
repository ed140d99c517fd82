"""Summaries of raw samples: median, IQR and a bootstrap 95% CI of the median."""
from __future__ import annotations

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
