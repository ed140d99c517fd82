"""What to show, decided from metric names and from which columns vary; no experiment is named here.

Columns of the tidy table fall in three kinds: the fixed row columns (`metric`, `value`, `status`
…), statistics of a latency row (`q1`, `q3`, `ci_lo`, `ci_hi`, `n`), and everything else, the
*dimensions*: variant and parameter columns (`attention`, `kv`, `seq_len`, `impl` …). Within one
scenario's rows a dimension that takes several values is what the reader compares along: a numeric
one with several values is a sweep (x axis of a line chart), the rest name the compared variants.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from lab.records import ROW_COLUMNS

STATS = ("q1", "q3", "ci_lo", "ci_hi", "n")
# Attributes a run measures rather than is asked for: the mean context a timed decode loop ran at
# depends on how many steps the timer took, so two runs of one point may differ in it.
MEASURED = {"context_timed"}
# Never dimensions: ids that differ per point by construction, the row's own fields, and what a
# run measured (a point must match its baseline however far its timed loop got).
NOT_DIMS = set(ROW_COLUMNS) - {"run_id"} | set(STATS) | {"point", "sample"} | MEASURED

# ---- metric kinds --------------------------------------------------------------------------------
QUALITY = re.compile(r"(^|_)(perplexity|ppl|kl|nll|loss|err|error|max_rel_err|max_abs_err|rel_err|abs_err|sqnr|sqnr_db|accuracy|acc|match|match_rate|acceptance|accept_rate|agreement|bleu|rouge)(_|$)")
HIGHER_QUALITY = re.compile(r"(sqnr|accuracy|(^|_)acc(_|$)|match|acceptance|accept|agreement|bleu|rouge)")
MEM_TOTALS = ("mem_peak_allocated_bytes", "mem_peak_reserved_bytes", "mem_device_used_bytes")


def kind(metric: str) -> str:
    """latency | throughput | roofline | memory | quality | energy | analytic | other."""
    m = str(metric)
    if m.endswith("_ms"):
        return "latency"
    if m.endswith(("_tokens_per_s", "_tflops", "_gbps")):
        return "throughput"
    if m.endswith(("_roofline_frac", "_intensity")):
        return "roofline"
    if m.startswith("mem_") and m.endswith("_bytes"):
        return "memory"
    if m == "kv_bytes_per_token" or m.endswith("_bytes_per_token"):
        return "cost"
    if QUALITY.search(m):
        return "quality"
    if m.startswith("energy") or m.endswith(("_j", "_j_per_token", "_power_w")):
        return "energy"
    if m.endswith(("_flops", "_bytes")):
        return "analytic"
    return "other"


def higher_is_better(metric: str) -> bool | None:
    """Direction of a metric for highlighting and Pareto fronts; None when it has none."""
    k = kind(metric)
    if k == "throughput" or metric.endswith("_roofline_frac"):
        return True
    if k in ("latency", "memory", "cost", "energy"):
        return False
    if k == "quality":
        return bool(HIGHER_QUALITY.search(metric))
    return None


# ---- dimensions and labels -----------------------------------------------------------------------
def dims(df: pd.DataFrame) -> list[str]:
    """Dimension columns that hold at least one value in df."""
    return [c for c in df.columns if c not in NOT_DIMS and df[c].notna().any()]


def _distinct(s: pd.Series) -> list[Any]:
    vals = list(dict.fromkeys("∅" if _isna(v) else v for v in s.tolist()))
    return vals


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def varying(df: pd.DataFrame) -> list[str]:
    return [c for c in dims(df) if len(_distinct(df[c])) > 1]


def is_numeric(s: pd.Series) -> bool:
    vals = s.dropna()
    if not len(vals) or pd.api.types.is_bool_dtype(vals) or any(isinstance(v, bool) for v in vals.tolist()):
        return False
    return bool(pd.to_numeric(vals, errors="coerce").notna().all())


@dataclass
class Layout:
    """How one chart's rows are arranged: x (a swept numeric dimension) and series labels."""

    x: str | None  # the swept numeric dimension, or None for a bar chart
    series: list[str]  # dimensions whose values name a series (bar or line)


def layout(df: pd.DataFrame) -> Layout:
    var = varying(df)
    numeric = [c for c in var if is_numeric(df[c]) and df[c].notna().all()]
    x = max(numeric, key=lambda c: (len(_distinct(df[c])), c)) if numeric else None
    return Layout(x, [c for c in var if c != x])


def fmt_value(v: Any) -> str:
    if _isna(v):
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return str(v)


def label_of(row: pd.Series | dict, series: list[str]) -> str:
    """'mla' when one dimension with text values names the series, 'batch=4' when its values are
    numbers (a bare '4' says nothing), 'attention=mla, kv=int8' when several, 'all' when none."""
    if not series:
        return "all"
    if len(series) == 1:
        v = row[series[0]]
        text = fmt_value(v)
        numeric = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        return f"{series[0]}={text}" if numeric or text in ("True", "False", "∅", "–") else text
    return ", ".join(f"{c}={fmt_value(row[c])}" for c in series)


def sort_key(v: Any) -> tuple:
    """Numbers numerically, before strings; NA last."""
    if _isna(v):
        return (2, 0.0, "")
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def sort_rows(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    if not cols or not len(df):
        return df
    keys = df[cols].apply(lambda r: tuple(sort_key(v) for v in r), axis=1)
    return df.loc[keys.sort_values(kind="stable").index]


# ---- Pareto front -----------------------------------------------------------------------------
def pareto_mask(x: Iterable[float], y: Iterable[float], higher_x: bool = False, higher_y: bool = False) -> np.ndarray:
    """True for points no other point beats on both axes (lower is better unless told)."""
    xa = np.asarray(list(x), dtype=float) * (-1 if higher_x else 1)
    ya = np.asarray(list(y), dtype=float) * (-1 if higher_y else 1)
    keep = np.ones(len(xa), dtype=bool)
    for i in range(len(xa)):
        dominated = (xa <= xa[i]) & (ya <= ya[i]) & ((xa < xa[i]) | (ya < ya[i]))
        keep[i] = not dominated.any() and math.isfinite(xa[i]) and math.isfinite(ya[i])
    return keep


# ---- pairing two metrics -----------------------------------------------------------------------
def pair(ok: pd.DataFrame, mx: str, my: str) -> tuple[pd.DataFrame, str]:
    """Rows of metric `my` joined with rows of metric `mx` on the dimensions both carry: a frame
    with columns x, y and the dimensions, and a note. Where one side is swept along a numeric
    dimension the other lacks (latency over seq_len, perplexity measured once), the largest value
    of that sweep is used (there the variants differ most) and the note says so."""
    a, b = ok[ok.metric == mx], ok[ok.metric == my]
    if not len(a) or not len(b):
        return pd.DataFrame(), ""
    da, db = set(dims(a)) - {"scenario"}, set(dims(b)) - {"scenario"}
    notes = []

    def at_max(df: pd.DataFrame, only: set[str]) -> pd.DataFrame:
        for c in sorted(only):
            if is_numeric(df[c]) and len(_distinct(df[c])) > 1:
                num = pd.to_numeric(df[c], errors="coerce")
                notes.append(f"{c}={fmt_value(num.max())}")
                df = df[num == num.max()]
        return df

    a, b = at_max(a, da - db), at_max(b, db - da)
    shared = sorted(da & db)

    def keyed(df: pd.DataFrame, val: str, extra: set[str]) -> pd.DataFrame:
        out = pd.DataFrame({c: df[c].map(fmt_value) for c in shared}, index=df.index)
        for c in sorted(extra):
            out[c] = df[c]
        out[val] = df["value"].astype(float)
        return out

    ka, kb = keyed(a, "x", da - db), keyed(b, "y", db - da)
    m = kb.merge(ka, on=shared, how="inner") if shared else kb.merge(ka, how="cross")
    return m.reset_index(drop=True), ", ".join(notes)


def finite_pair(a: Any, b: Any) -> bool:
    try:
        return math.isfinite(float(a)) and math.isfinite(float(b))
    except (TypeError, ValueError):
        return False
