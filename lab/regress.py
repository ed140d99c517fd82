"""Regression gate: compare a candidate run with a committed baseline, point by point.

Points are matched by their variant/parameter columns (everything but ids and statistics) plus
scenario and metric. Then, per matched metric:

* latency (`*_ms`, with raw samples on both sides): the ratio of medians candidate/baseline with a
  bootstrap 95% CI, and a one-sided Mann-Whitney U test on the raw samples. A point regressed when
  the ratio exceeds `max_slowdown` AND the test says the candidate is slower (p < alpha); a fixed
  percentage on two single numbers would flag noise on a CPU runner and miss a real slowdown hidden
  in a noisy mean. Throughput and roofline metrics derive from the same samples and are not
  tested twice.
* quality (`perplexity`, `kl_*`, `*_err`, `sqnr*` …) and cost (`kv_bytes_per_token`): absolute /
  relative tolerances, per metric, in the direction that is worse.
* memory components (`mem_<component>_bytes`): relative tolerance; the measured peaks only on CUDA
  (a CPU process's RSS is too noisy to gate on).
* a candidate point that failed, or a baseline point the candidate lacks: a regression
  (`fail_on_missing`).

Baseline on another device (a committed CPU baseline, compared on whatever CPU CI runs on):
a different machine is uniformly faster or slower, so with `cross_device: normalize` (default)
every latency ratio is divided by the median ratio over all latency points (the machine factor)
before the per-point test; a kernel that got 2x slower relative to the rest still stands out. The
machine factor itself is flagged only beyond `max_machine_slowdown` (default 3x). A CPU baseline
is normalized on the same model of CPU too (`normalize_same_cpu`, default true): a shared runner
is uniformly slower while its neighbours are busy (CI's run of session 22's submission read every
point 1.1-1.6x its baseline, unnormalized, and failed on one). What that gives up: a change that
slows every CPU point alike by less than `max_machine_slowdown` passes the CPU gate; a CUDA
baseline on the same GPU model is never normalized, so the GPU gates still catch it. With fewer than
`min_points_to_normalize` latency points there is nothing to normalize by, and each raw ratio is
held to `max_machine_slowdown` instead.

A latency verdict rests on one run of a shared machine, whose jitter can put one point past the
limit with a significant test (a 16-token prefill on a 2-core runner). `lab check` run without
`--run` therefore measures again when the only failures are latency ones, and a point regresses
only when the second, independent run flags it too (`confirm_runs`, default 1; 0 turns it off).
Noise that crosses the limit once rarely crosses it twice; a real 2x slowdown does every time.

Defaults (DEFAULTS below): `max_slowdown` 1.5 for a CPU baseline (shared CI runners jitter by tens
of percent between runs, and a 2x slowdown must still be caught), 1.15 for a CUDA baseline;
alpha 0.01. Override per baseline in `tolerances.yaml` (or `.json`) beside it:

    performance: {max_slowdown: 1.3, alpha: 0.01, cross_device: normalize, confirm_runs: 1}
    quality: {perplexity: {rel: 0.005}, max_rel_err: {abs: 1.0e-3}}
    memory: {rel: 0.05}
    fail_on_missing: true
"""
from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from lab.errors import LabError
from lab.measure.stats import mann_whitney_greater, ratio_of_medians_ci
from lab.report.analysis import MEM_TOTALS, NOT_DIMS, fmt_value, higher_is_better, kind

DEFAULTS: dict[str, Any] = {
    "performance": {
        "alpha": 0.01,
        "max_slowdown": None,  # None: 1.5 for a CPU baseline, 1.15 for a CUDA one
        "max_slowdown_cpu": 1.5,
        "max_slowdown_cuda": 1.15,
        "cross_device": "normalize",  # or "raw"
        "max_machine_slowdown": 3.0,
        "min_points_to_normalize": 4,
        "normalize_same_cpu": True,
        "bootstrap": 2000,
        "confirm_runs": 1,
    },
    "quality": {
        "default": {"rel": 0.02, "abs": 1e-6},
        "perplexity": {"rel": 0.01},
        "max_rel_err": {"rel": 0.25, "abs": 1e-4},
        "max_abs_err": {"rel": 0.25, "abs": 1e-4},
        "kv_bytes_per_token": {"rel": 0.0, "abs": 0.5},
    },
    "memory": {"rel": 0.05, "abs": 4096, "peaks_on_cpu": False},
    "fail_on_missing": True,
}

FAILING = ("regression", "failed", "missing")
TABLE_COLUMNS = ["verdict", "check", "scenario", "point", "metric", "baseline", "candidate", "ratio", "ci_lo", "ci_hi", "p_value", "note"]


# ---- tolerances ----------------------------------------------------------------------------------
def load_tolerances(baseline_dir: str | Path) -> dict[str, Any]:
    """DEFAULTS merged with tolerances.yaml / tolerances.json found in the baseline directory (or
    the one above it, for tolerances shared by every experiment of a device)."""
    tol = copy.deepcopy(DEFAULTS)
    d = Path(baseline_dir)
    for folder in (d.parent, d):  # the nearer file wins
        for name in ("tolerances.yaml", "tolerances.yml", "tolerances.json"):
            f = folder / name
            if f.is_file():
                _merge(tol, _read(f))
    return tol


def _read(f: Path) -> dict:
    try:
        if f.suffix == ".json":
            data = json.loads(f.read_text())
        else:
            import yaml

            data = yaml.safe_load(f.read_text())
    except Exception as e:
        raise LabError(f"{f}: cannot be read as {'JSON' if f.suffix == '.json' else 'YAML'} ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LabError(f"{f}: expected a mapping (performance:, quality:, memory:), got {type(data).__name__}")
    unknown = set(data) - set(DEFAULTS)
    if unknown:
        raise LabError(f"{f}: unknown section(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    return data


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


# ---- matching ------------------------------------------------------------------------------------
def _unpack(side: Any) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    if isinstance(side, pd.DataFrame):
        return side, pd.DataFrame(columns=["metric", "sample", "value"]), []
    side = tuple(side)
    results = side[0]
    samples = side[1] if len(side) > 1 and side[1] is not None else pd.DataFrame(columns=["metric", "sample", "value"])
    provs = list(side[2]) if len(side) > 2 and side[2] is not None else []
    return results, samples, provs


def _key_columns(*frames: pd.DataFrame) -> list[str]:
    cols: dict[str, None] = {}
    for f in frames:
        for c in f.columns:
            if c not in NOT_DIMS and c not in ("run_id", "point") and f[c].notna().any():
                cols[c] = None
    return ["scenario"] + [c for c in cols if c != "scenario"]


def _keyed(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One string per row naming its point and metric; NA and absent columns alike are ''."""
    parts = [df[c].map(lambda v: "" if _na(v) else fmt_value(v)) if c in df else pd.Series("", index=df.index) for c in keys]
    joined = parts[0].astype(str)
    for p in parts[1:]:
        joined = joined + "\x1f" + p.astype(str)
    return joined + "\x1f" + df["metric"].astype(str)


def _na(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _device(provs: list[dict]) -> tuple[str | None, str | None]:
    for p in provs:
        d = p.get("device") or {}
        if d.get("name"):
            return str(d["name"]), str(d.get("type") or "")
    return None, None


# ---- compare --------------------------------------------------------------------------------------
def compare(baseline: Any, candidate: Any, tolerances: dict[str, Any] | None = None) -> pd.DataFrame:
    """Compare two runs. Each side is `(results, samples)` or `(results, samples, provenance)` as
    `lab.store.load_results` returns (a bare results DataFrame also works, without latency tests).
    Returns one row per compared point and metric with columns TABLE_COLUMNS; `verdict` is one of
    pass, regression, improvement, failed, missing, new, skipped, info."""
    tol = copy.deepcopy(DEFAULTS)
    _merge(tol, tolerances or {})
    br, bs, bp = _unpack(baseline)
    cr, cs, cp = _unpack(candidate)
    keys = _key_columns(br, cr)
    # Point labels name only the columns that tell points apart (device=cpu on every row is noise).
    both = pd.concat([br, cr], ignore_index=True, sort=False)
    label_keys = [keys[0]] + [c for c in keys[1:] if both[c].map(lambda v: "" if _na(v) else fmt_value(v)).nunique() > 1]
    bdev, btype = _device(bp)
    cdev, _ = _device(cp)
    perf = dict(tol["performance"])
    if perf.get("max_slowdown") is None:
        perf["max_slowdown"] = perf["max_slowdown_cuda"] if btype == "cuda" else perf["max_slowdown_cpu"]
    # normalize by the machine factor: across devices, and on a CPU (a shared host's load)
    other = bdev is not None and cdev is not None and bdev != cdev
    normalize = other or (bdev is not None and btype == "cpu" and perf["normalize_same_cpu"])
    why = "different device" if other else "same CPU model: the host's load"

    b = br.assign(_k=_keyed(br, keys)).drop_duplicates("_k").set_index("_k")
    c = cr.assign(_k=_keyed(cr, keys)).drop_duplicates("_k").set_index("_k")
    bsamp = _samples_by_key(bs, keys)
    csamp = _samples_by_key(cs, keys)
    rows: list[dict[str, Any]] = []
    perf_keys: list[str] = []

    for k in list(dict.fromkeys(list(b.index) + list(c.index))):
        rb, rc = (b.loc[k] if k in b.index else None), (c.loc[k] if k in c.index else None)
        ref = rb if rb is not None else rc
        metric = str(ref["metric"])
        out = {"scenario": ref.get("scenario"), "point": _point_label(ref, label_keys), "metric": metric,
               "baseline": _val(rb), "candidate": _val(rc), "check": _check_kind(metric, btype, tol), "_k": k}
        sb, sc = _status(rb), _status(rc)
        if rb is None:
            out.update(verdict="failed" if sc == "failed" else "new", note=_err(rc))
        elif rc is None:
            out.update(verdict="missing" if sb == "ok" else "info", note="not in the candidate")
        elif sb != "ok":
            out.update(verdict="failed" if sc == "failed" and sb == "skipped" else ("skipped" if sb == sc == "skipped" else "info"),
                       note=f"baseline {sb}: {_err(rb)}"[:160])
        elif sc == "failed":
            out.update(verdict="failed", note=_err(rc))
        elif sc == "skipped":
            out.update(verdict="missing", note=_err(rc))
        elif out["check"] == "latency" and k in bsamp and k in csamp:
            perf_keys.append(k)
        elif out["check"] in ("quality", "memory"):
            out.update(_tolerance_verdict(metric, out["baseline"], out["candidate"], out["check"], tol))
        elif out["check"] == "latency":
            out.update(verdict="info", note="no raw samples on both sides: not tested", ratio=_ratio(out))
        else:
            out.update(verdict="info", ratio=_ratio(out))
        if out["check"] == "derived":
            continue  # tflops, GB/s, tok/s, roofline fraction: the latency test already covers them
        rows.append(out)

    # Latency: per-point ratios, normalized by the machine factor.
    raw = {k: float(np.median(csamp[k]) / np.median(bsamp[k])) for k in perf_keys}
    factor, limit, note = 1.0, perf["max_slowdown"], ""
    machine_row = None
    if normalize and perf["cross_device"] == "normalize" and raw:
        if len(raw) >= perf["min_points_to_normalize"]:
            factor = float(np.median(list(raw.values())))
            note = f"normalized by the machine factor {factor:.3g} ({cdev} vs {bdev})"
            verdict = "regression" if factor > perf["max_machine_slowdown"] else "pass"
            machine_row = {"verdict": verdict, "check": "machine", "scenario": "", "point": f"{cdev} vs {bdev}",
                           "metric": "median latency ratio over all points", "baseline": 1.0, "candidate": factor,
                           "ratio": factor, "note": f"{why}; limit {perf['max_machine_slowdown']}x"}
        elif other:  # on the same CPU, too few points keep the usual limit
            limit = perf["max_machine_slowdown"]
            note = f"{why} ({cdev} vs {bdev}) and too few points to normalize: held to {limit}x"
    by_key = {r["_k"]: r for r in rows}
    for k in perf_keys:
        cand = np.asarray(csamp[k]) / factor
        base = np.asarray(bsamp[k])
        r, lo, hi = ratio_of_medians_ci(cand, base, bootstrap=int(perf["bootstrap"]))
        p_slow, p_fast = mann_whitney_greater(cand, base), mann_whitney_greater(base, cand)
        if r > limit and p_slow < perf["alpha"]:
            verdict, p = "regression", p_slow
        elif r < 1 / limit and p_fast < perf["alpha"]:
            verdict, p = "improvement", p_fast
        else:
            verdict, p = "pass", min(p_slow, p_fast)
        by_key[k].update(verdict=verdict, ratio=r, ci_lo=lo, ci_hi=hi, p_value=p,
                         note=(f"limit {limit:g}x, alpha {perf['alpha']:g}, n={len(base)}/{len(cand)}" + (f"; {note}" if note else "")))
    if machine_row:
        rows.insert(0, machine_row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS + ["_k"]).drop(columns=["_k"])
    order = {"regression": 0, "failed": 1, "missing": 2, "improvement": 3, "new": 4, "pass": 5, "skipped": 6, "info": 7}
    return table.iloc[np.argsort(table.verdict.map(order).fillna(9).to_numpy(), kind="stable")].reset_index(drop=True)


def _samples_by_key(samples: pd.DataFrame, keys: list[str]) -> dict[str, np.ndarray]:
    if samples is None or not len(samples):
        return {}
    k = _keyed(samples, keys)
    return {key: g.to_numpy(dtype=float) for key, g in pd.to_numeric(samples["value"], errors="coerce").groupby(k)}


def _check_kind(metric: str, base_device_type: str | None, tol: dict) -> str:
    if metric in tol["quality"] and metric != "default":
        return "quality"
    k = kind(metric)
    if k == "latency":
        return "latency"
    if k == "throughput" or metric.endswith("_roofline_frac"):
        return "derived"
    if k in ("quality", "cost"):
        return "quality"
    if k == "memory":
        # activations = measured peak - weights - KV: on a CPU that peak is the process RSS, as noisy
        # as the peaks themselves
        measured = metric in MEM_TOTALS or metric == "mem_activations_bytes"
        if measured and base_device_type != "cuda" and not tol["memory"].get("peaks_on_cpu"):
            return "info"
        return "memory"
    return "info"


def _tolerance_verdict(metric: str, base: float, cand: float, check: str, tol: dict) -> dict[str, Any]:
    if check == "memory":
        t = tol["memory"]
    else:
        t = {**tol["quality"]["default"], **tol["quality"].get(metric, {})}
    allowed = max(float(t.get("abs", 0.0)), float(t.get("rel", 0.0)) * abs(base))
    hib = bool(higher_is_better(metric))
    worse = (base - cand) if hib else (cand - base)
    if not (math.isfinite(base) and math.isfinite(cand)):
        verdict = "regression" if math.isfinite(base) else "info"
    elif worse > allowed:
        verdict = "regression"
    elif -worse > allowed:
        verdict = "improvement"
    else:
        verdict = "pass"
    return {"verdict": verdict, "ratio": _ratio({"baseline": base, "candidate": cand}),
            "note": f"allowed ±{allowed:.3g} ({'higher' if hib else 'lower'} is better)"}


def _status(r: Any) -> str | None:
    if r is None:
        return None
    s = r.get("status")
    return "ok" if _na(s) else str(s)


def _err(r: Any) -> str:
    if r is None:
        return ""
    e = r.get("error")
    return "" if _na(e) else str(e)


def _val(r: Any) -> float:
    if r is None:
        return math.nan
    try:
        return float(r["value"])
    except (TypeError, ValueError):
        return math.nan


def _ratio(out: dict) -> float:
    b, c = out["baseline"], out["candidate"]
    return c / b if b and math.isfinite(b) and math.isfinite(c) else math.nan


def _point_label(r: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{c}={fmt_value(r[c])}" for c in keys[1:] if c in r and not _na(r[c]))


# ---- CLI ------------------------------------------------------------------------------------------
def format_table(table: pd.DataFrame, show_pass: bool = True, limit: int = 300) -> str:
    """A plain-text table, failures first; info rows only counted."""
    shown = table[table.verdict != "info"]
    if not show_pass:
        shown = shown[shown.verdict != "pass"]

    def num(v: Any, spec: str = ".4g") -> str:
        return "" if v is None or _na(v) else format(float(v), spec)

    lines = []
    head = ["verdict", "check", "scenario", "point", "metric", "baseline", "candidate", "ratio [95% CI]", "p", "note"]
    # A point missing from the candidate would list every metric it had: fold them into one line.
    missing = shown[shown.verdict == "missing"]
    if len(missing):
        folded = missing.groupby(["scenario", "point"], sort=False, dropna=False).agg(
            metric=("metric", lambda m: f"{len(m)} metrics: " + ", ".join(list(m)[:3]) + (" …" if len(m) > 3 else "")),
            note=("note", "first")).reset_index()
        folded = folded.assign(verdict="missing", check="point", baseline=math.nan, candidate=math.nan, ratio=math.nan,
                               ci_lo=math.nan, ci_hi=math.nan, p_value=math.nan)
        worst = shown.verdict.isin(["regression", "failed"])  # compare() sorted these before "missing"
        shown = pd.concat([shown[worst], folded[shown.columns], shown[~worst & (shown.verdict != "missing")]], ignore_index=True)
    body = []
    for _, r in shown.head(limit).iterrows():
        ratio = num(r.ratio, ".3f")
        if ratio and not _na(r.ci_lo):
            ratio += f" [{num(r.ci_lo, '.2f')}, {num(r.ci_hi, '.2f')}]"
        body.append([str(r.verdict).upper() if r.verdict in FAILING else str(r.verdict), str(r.check), str(r.scenario or ""),
                     str(r.point)[:60], str(r.metric), num(r.baseline), num(r.candidate), ratio, num(r.p_value, ".2g"), str(r.note or "")[:90]])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    lines.append(fmt_row(head))
    lines.append(fmt_row(["-" * w for w in widths]))
    lines.extend(fmt_row(b) for b in body)
    if len(shown) > limit:
        lines.append(f"... {len(shown) - limit} more rows")
    counts = table.verdict.value_counts()
    lines.append("")
    lines.append("summary: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)


def save_baseline(run_dir: str | Path, baseline_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Make a finished run the baseline: copy its combined results.parquet, samples.parquet and
    provenance.json into baseline_dir (results/baselines/<device>/<experiment>), small enough to
    commit. A tolerances.yaml already there is kept; an existing baseline is replaced only with
    overwrite=True."""
    import shutil

    from lab.store import RunStore

    run_dir, baseline_dir = Path(run_dir), Path(baseline_dir)
    store = RunStore(run_dir)
    if store.points():
        store.combine()
    if not (run_dir / "results.parquet").is_file():
        raise LabError(f"{run_dir}: not a finished run (no results.parquet, no points/)")
    if (baseline_dir / "results.parquet").exists() and not overwrite:
        raise LabError(f"{baseline_dir} already holds a baseline; pass overwrite=True to replace it")
    baseline_dir.mkdir(parents=True, exist_ok=True)
    for name in ("results.parquet", "samples.parquet", "provenance.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, baseline_dir / name)
    return baseline_dir


def confirm(first: pd.DataFrame, again: pd.DataFrame) -> pd.DataFrame:
    """`first` with each latency (or machine) regression kept only where `again`, the table of an
    independent re-measurement against the same baseline, flags the same point and metric too;
    the others become passes whose note gives both ratios."""
    key = lambda t: t.scenario.astype(str) + "\x1f" + t.point.astype(str) + "\x1f" + t.metric.astype(str)
    ratio_again = dict(zip(key(again), again.ratio))
    flagged_again = set(key(again)[again.verdict == "regression"])
    out = first.copy()
    for i in out.index[out.verdict.eq("regression") & out.check.isin(["latency", "machine"])]:
        k = key(out.loc[[i]]).iloc[0]
        both = f"{out.at[i, 'ratio']:.3g}x, then {ratio_again.get(k, math.nan):.3g}x when measured again"
        if k in flagged_again:
            out.at[i, "note"] = f"confirmed: {both}"
        else:
            out.at[i, "verdict"] = "pass"
            out.at[i, "note"] = f"not confirmed: {both}"
    return out


def _failures(table: pd.DataFrame, tol: dict) -> pd.Series:
    return table.verdict.isin(["regression", "failed"] + (["missing"] if tol.get("fail_on_missing", True) else []))


def check_main(baseline_dir: str | Path, candidate_dir: str | Path | None, measure_again: Callable[[], Path] | None = None) -> int:
    """`python -m lab check`: compare a finished run with the baseline; print the table; return 1
    when anything regressed, failed or went missing, else 0. With `measure_again` (a function that
    runs the experiment once more and returns its run directory), latency regressions must be
    confirmed by `performance.confirm_runs` further runs."""
    from lab.store import load_results

    baseline_dir = Path(baseline_dir)
    if candidate_dir is None:
        raise LabError("check needs a candidate run directory (python -m lab check --baseline DIR --run RUN_DIR)")
    tol = load_tolerances(baseline_dir)
    base = load_results(baseline_dir)
    table = compare(base, load_results(candidate_dir), tol)
    print(f"baseline:  {baseline_dir}")
    print(f"candidate: {candidate_dir}")
    for n in range(int(tol["performance"].get("confirm_runs", 0)) if measure_again else 0):
        fails = table[_failures(table, tol)]
        timing = fails.check.isin(["latency", "machine"])
        if not len(fails) or not timing.all():  # nothing to confirm, or a failure no rerun can clear
            break
        flagged = "; ".join(f"{r.scenario} {r.point} {r.metric} {r.ratio:.3g}x" for r in fails.itertuples())
        print(f"[lab] slower than the limit: {flagged}. Measuring again ({n + 1}/{tol['performance']['confirm_runs']}) "
              "to tell a real slowdown from the machine's jitter", file=sys.stderr, flush=True)
        again = measure_again()
        print(f"confirmation run: {again}")
        table = confirm(table, compare(base, load_results(again), tol))
    print(format_table(table))
    fails = _failures(table, tol)
    if fails.any():
        print(f"\nFAIL: {int(fails.sum())} regression(s) against {baseline_dir}")
        return 1
    print(f"\nOK: no regression against {baseline_dir}")
    return 0
