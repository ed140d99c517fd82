"""One self-contained HTML report: plotly.js inlined once, every chart's data inline, no network.

Sections appear only when the table holds something for them: summary tables, latency,
throughput, roofline, memory, quality, quality against cost, other metrics, failed and skipped
points, provenance, and every row. Every string from the table or the configs is HTML-escaped.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.records import ROW_COLUMNS
from lab.report import analysis as A
from lab.report import charts as C

KIND_ORDER = ["latency", "throughput", "roofline", "memory", "quality", "cost", "energy", "other"]
MAX_TABLE_ROWS = 3000


def e(s: Any) -> str:
    return html.escape("" if s is None else str(s), quote=True)


def fmt_num(v: Any, unit: str = "") -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return e(v)
    if not math.isfinite(v):
        return "–"
    if unit == "B":
        div, u = C.byte_scale(abs(v))
        return f"{v / div:.3g} {u}" if div > 1 else f"{v:.0f} B"
    a = abs(v)
    if a >= 1e5:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a == 0:
        return "0"
    return f"{v:.4g}"


class Page:
    def __init__(self, title: str):
        self.title = title
        self.sections: list[tuple[str, str, str]] = []  # (anchor, heading, html)
        self.figs: list[tuple[str, str]] = []  # (div id, figure json)
        self.colors = C.Colors()

    def fig(self, fig, how: str) -> str:
        fid = f"fig{len(self.figs)}"
        # plotly's JSON already writes '<' as \u003c; make sure, so no string can close the script.
        self.figs.append((fid, fig.to_json().replace("<", "\\u003c")))
        return f'<figure class="card"><div id="{fid}" class="plot"></div><figcaption>{e(how)}</figcaption></figure>'

    def add(self, heading: str, body: str, intro: str = "") -> None:
        if not body:
            return
        anchor = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
        self.sections.append((anchor, heading, (f'<p class="intro">{intro}</p>' if intro else "") + body))


# ---- how measured ---------------------------------------------------------------------------------
def how_measured(rows: pd.DataFrame, extra: str = "") -> str:
    """One line from the rows' `method` column: distinct methods with rep counts folded."""
    methods = [str(m) for m in rows.get("method", pd.Series(dtype=object)).dropna().tolist() if str(m)]
    reps = sorted({int(x) for m in methods for x in re.findall(r"(\d+) reps", m)})
    folded = list(dict.fromkeys(re.sub(r"\d+ reps", "N reps", m) for m in methods))
    text = "; ".join(folded[:3]) + (f"; +{len(folded) - 3} more" if len(folded) > 3 else "")
    if reps:
        text = text.replace("N reps", f"{reps[0]}–{reps[-1]} reps" if len(reps) > 1 else f"{reps[0]} reps")
    text = f"How measured: {text}" if text else "How measured: not recorded"
    return text + (f". {extra}" if extra else "")


# ---- sections ---------------------------------------------------------------------------------------
def _scenarios(df: pd.DataFrame) -> list[Any]:
    return list(dict.fromkeys(df["scenario"].tolist())) if "scenario" in df else [None]


def _of(df: pd.DataFrame, scenario: Any) -> pd.DataFrame:
    if scenario is None or "scenario" not in df:
        return df
    return df[df.scenario.isna()] if A._isna(scenario) else df[df.scenario == scenario]


def _title(scenario: Any, metric: str, many: bool) -> str:
    return f"{scenario} · {metric}" if many and scenario is not None and not A._isna(scenario) else metric


def summary_tables(page: Page, ok: pd.DataFrame) -> str:
    """Per scenario, one table per set of dimensions: metrics recorded per seq_len share a table,
    metrics recorded once per variant (memory, quality) get their own, so no table is mostly
    empty cells."""
    out = []
    scen = _scenarios(ok)
    for s in scen:
        sub = _of(ok, s)
        sub = sub[sub.metric.map(A.kind) != "analytic"]
        if not len(sub):
            continue
        metrics = sorted(dict.fromkeys(sub.metric), key=lambda m: (KIND_ORDER.index(A.kind(m)) if A.kind(m) in KIND_ORDER else 99))
        var = A.varying(sub)
        groups: OrderedDict[tuple, list[str]] = OrderedDict()
        for m in metrics:
            rows_m = sub[sub.metric == m]
            groups.setdefault(tuple(c for c in var if rows_m[c].notna().any()), []).append(m)
        h = f"<h3>{e(s)}</h3>" if len(scen) > 1 or (s is not None and not A._isna(s)) else ""
        out.append(h + "".join(_summary_table(sub[sub.metric.isin(ms)], ms) for ms in groups.values()))
    if out:
        out.append('<p class="note">Median of the raw samples, with its bootstrap 95% CI in brackets, where the metric was timed. '
                   "Highlighted: the best value of a column among rows with the same swept parameters, where the metric has a "
                   "direction. Hover a cell for how it was measured.</p>")
    return "".join(out)


def _summary_table(t: pd.DataFrame, metrics: list[str]) -> str:
    units = {m: str(t[t.metric == m].unit.dropna().iloc[0]) if t[t.metric == m].unit.notna().any() else "" for m in metrics}
    keys = A.varying(t)
    sweep = [c for c in keys if A.is_numeric(t[c]) and t[c].notna().all()]
    t = A.sort_rows(t, [c for c in keys if c not in sweep] + sweep)
    rows: OrderedDict[tuple, dict[str, pd.Series]] = OrderedDict()
    for _, r in t.iterrows():
        rows.setdefault(tuple(A.fmt_value(r[c]) for c in keys), {}).setdefault(r.metric, r)
    # best per column among rows that share the swept values (comparing seq_len=16 with 4096 means nothing)
    best: dict[tuple, float] = {}
    for m in metrics:
        d = A.higher_is_better(m)
        if d is None:
            continue
        by: dict[tuple, list[float]] = {}
        for k, cells in rows.items():
            if m in cells:
                by.setdefault(tuple(v for c, v in zip(keys, k) if c in sweep), []).append(float(cells[m].value))
        for g, vals in by.items():
            if len(vals) > 1 and len(set(vals)) > 1:
                best[(m, g)] = max(vals) if d else min(vals)
    head = "".join(f"<th>{e(c)}</th>" for c in keys) or "<th></th>"
    # <wbr> after underscores lets long metric names wrap instead of widening the table
    head += "".join(f'<th class="num">{e(m).replace("_", "_<wbr>")}<br><span class="unit">{e(units[m])}</span></th>' for m in metrics)
    body = []
    for k, cells in rows.items():
        tds = "".join(f"<td>{e(v)}</td>" for v in k) or "<td>all</td>"
        g = tuple(v for c, v in zip(keys, k) if c in sweep)
        for m in metrics:
            r = cells.get(m)
            if r is None:
                tds += '<td class="num na">–</td>'
                continue
            ci = ""
            if "ci_lo" in r and A.finite_pair(r.get("ci_lo"), r.get("ci_hi")):
                ci = f'<span class="ci">[{fmt_num(r.ci_lo, units[m])}, {fmt_num(r.ci_hi, units[m])}]</span>'
            cls = "num best" if best.get((m, g)) == float(r.value) else "num"
            tds += f'<td class="{cls}" title="{e(r.get("method", ""))}">{fmt_num(r.value, units[m])}{ci}</td>'
        body.append(f"<tr>{tds}</tr>")
    return f'<div class="tablewrap"><table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def metric_charts(page: Page, ok: pd.DataFrame, kinds: tuple[str, ...], note: str = "") -> str:
    cards = []
    scen = _scenarios(ok)
    for s in scen:
        sub = _of(ok, s)
        for m in dict.fromkeys(sub.metric):
            if A.kind(m) not in kinds:
                continue
            rows = sub[sub.metric == m]
            unit = str(rows.unit.dropna().iloc[0]) if rows.unit.notna().any() else ""
            fig = C.metric_chart(rows, m, unit, page.colors, _title(s, m, len(scen) > 1))
            extra = note if "ci_lo" in rows and rows.ci_lo.notna().any() else ""
            cards.append(page.fig(fig, how_measured(rows, extra)))
    return f'<div class="grid">{"".join(cards)}</div>' if cards else ""


def memory_charts(page: Page, ok: pd.DataFrame) -> str:
    cards = []
    scen = _scenarios(ok)
    for s in scen:
        sub = _of(ok, s)
        mem = sub[sub.metric.map(A.kind) == "memory"]
        if not len(mem):
            continue
        fig, left_out = C.memory_chart(mem, page.colors, _title(s, "memory by component", len(scen) > 1))
        note = "Bars: components the scenario holds, stacked; markers: measured totals"
        if left_out:
            note += f" ({', '.join(left_out)} not drawn: many times the components, see the summary table)"
        cards.append(page.fig(fig, how_measured(mem, note)))
    return f'<div class="grid">{"".join(cards)}</div>' if cards else ""


def roofline_section(page: Page, ok: pd.DataFrame, provenance: list[dict]) -> str:
    pts = []
    for s in _scenarios(ok):
        sub = _of(ok, s)
        for m in dict.fromkeys(sub.metric):
            if not m.endswith("_intensity"):
                continue
            prefix = m[: -len("_intensity")]
            pr, _ = A.pair(sub, f"{prefix}_intensity", f"{prefix}_tflops")
            if not len(pr):
                continue
            pr = pr.rename(columns={"x": "intensity", "y": "tflops"})
            pr["prefix"] = prefix
            pr["scenario_"] = s
            pts.append(pr)
    if not pts:
        return ""
    p = pd.concat(pts, ignore_index=True)
    p = p[(p.intensity > 0) & (p.tflops > 0)]
    if not len(p):
        return ""
    cat = [c for c in A.varying(p.drop(columns=["intensity", "tflops"])) if c not in ("prefix", "scenario_") and not (A.is_numeric(p[c]) and p[c].notna().all())]
    num = [c for c in A.varying(p.drop(columns=["intensity", "tflops"])) if c not in cat and c not in ("prefix", "scenario_")]
    multi = p.prefix.nunique() > 1 or p.scenario_.nunique() > 1
    # Colour by what is compared (variant/impl); with nothing categorical varying, by the timed call.
    p["series"] = [A.label_of(r, cat) if not cat else (f"{r.prefix}: " if multi else "") + A.label_of(r, cat) for _, r in p.iterrows()]
    if not cat:
        p["series"] = list(p.prefix) if not multi else [f"{r.scenario_} · {r.prefix}" for _, r in p.iterrows()]
    p["label"] = [A.label_of(r, cat + num) if len(p) <= 10 else A.label_of(r, cat) for _, r in p.iterrows()]
    p["hover"] = [
        "<br>".join([C.esc(f"{r.prefix}: {A.label_of(r, cat + num)}"), f"{r.intensity:.3g} FLOP/B", f"{r.tflops:.3g} TFLOP/s"]) for _, r in p.iterrows()
    ]
    ceil = list({c["device"]: c for c in (pv.get("ceilings") for pv in provenance) if isinstance(c, dict) and c.get("peak_gbps")}.values())
    fig = C.roofline_chart(p, ceil, page.colors)
    how = ("Ceilings measured on the machine: " + "; ".join(f"{c['device']}: {c.get('method', '')}" for c in ceil)) if ceil else \
        "No measured ceilings in the provenance; points only"
    how += ". Points: analytic FLOPs and bytes of each timed call over its median time."
    rows = ok[ok.metric.str.endswith("_roofline_frac")]
    table = ""
    if len(rows):
        table = metric_charts(page, rows, ("roofline",))
    return f'<div class="grid wide">{page.fig(fig, how)}</div>' + table


def pareto_section(page: Page, ok: pd.DataFrame) -> str:
    metrics = list(dict.fromkeys(ok.metric))
    qualities = [m for m in metrics if A.kind(m) == "quality"]
    lat = [m for m in metrics if A.kind(m) == "latency"]
    costs = lat[:1] + [m for m in metrics if A.kind(m) == "cost"] + [m for m in metrics if m.endswith("_j_per_token")][:1]
    cards = []
    for q in qualities:
        for c in costs:
            m, note = A.pair(ok, c, q)
            if len(m) < 2:
                continue
            units = {x: (str(ok[ok.metric == x].unit.dropna().iloc[0]) if ok[ok.metric == x].unit.notna().any() else "") for x in (c, q)}
            fig = C.pareto_chart(m, c, q, bool(A.higher_is_better(c)), bool(A.higher_is_better(q)), page.colors,
                                 f"{q} against {c}", units[c], units[q])
            better = ("higher" if A.higher_is_better(q) else "lower")
            how = f"Stars: the Pareto front (no other point is better on both axes; {better} {q} is better, lower {c} is better)"
            if note:
                how += f"; {c} taken at {note}"
            cards.append(page.fig(fig, how_measured(ok[ok.metric.isin([q, c])], how)))
    return f'<div class="grid">{"".join(cards)}</div>' if cards else ""


def problems_table(df: pd.DataFrame) -> str:
    bad = df[df.status.astype(str) != "ok"]
    if not len(bad):
        return '<p class="ok">Every point ran.</p>'
    where_cols = [c for c in A.dims(bad) if c not in ("run_id",)]
    bad = bad.iloc[np.argsort(bad.status.map({"failed": 0, "skipped": 1}).fillna(2).to_numpy(), kind="stable")]
    body = []
    for _, r in bad.iterrows():
        where = ", ".join(f"{c}={A.fmt_value(r[c])}" for c in where_cols if not A._isna(r[c]))
        body.append(f'<tr class="{e(r.status)}"><td><span class="badge {e(r.status)}">{e(r.status)}</span></td>'
                    f"<td>{e(r.get('scenario'))}</td><td>{e(where)}</td><td>{e(r.metric)}</td><td class=\"reason\">{e(r.error)}</td></tr>")
    counts = bad.status.value_counts()
    head = ", ".join(f"{n} {e(s)}" for s, n in counts.items())
    return (f"<p>{head}.</p><div class=\"tablewrap\"><table><thead><tr><th>status</th><th>scenario</th><th>point</th><th>metric</th>"
            f"<th>reason</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def provenance_section(provenance: list[dict]) -> str:
    if not provenance:
        return '<p class="note">No provenance recorded.</p>'
    by_run: OrderedDict[str, list[dict]] = OrderedDict()
    for p in provenance:
        by_run.setdefault(str(p.get("run_id", "")), []).append(p)
    out = []
    for run, ps in by_run.items():
        first = ps[0]
        dev = first.get("device") or {}
        pk = first.get("packages") or {}
        git = first.get("git") or {}
        times = sorted(str(p.get("time_utc", "")) for p in ps if p.get("time_utc"))
        clocks = [(p.get("clocks_start") or {}, p.get("clocks_end") or {}) for p in ps]
        sm = [c.get("sm_mhz") for pair in clocks for c in pair if c.get("sm_mhz") is not None]
        mem = [c.get("mem_mhz") for pair in clocks for c in pair if c.get("mem_mhz") is not None]
        ceil = first.get("ceilings") or {}
        devs = sorted({str((p.get("device") or {}).get("name", "")) for p in ps})
        facts = [
            ("device", ", ".join(devs)),
            ("compute capability / SMs", f"{dev.get('capability', '')} / {dev.get('sm_count', '')}" if dev.get("capability") else None),
            ("driver / CUDA runtime", f"{dev.get('driver')} / {dev.get('cuda_runtime')}" if dev.get("type") == "cuda" else None),
            ("SM clock (MHz, start–end of points)", f"{min(sm)}–{max(sm)}" if sm else None),
            ("memory clock (MHz)", f"{min(mem)}–{max(mem)}" if mem else None),
            ("power limit (W)", dev.get("power_limit_w")),
            ("roofline ceilings", f"{ceil.get('peak_gbps', 0):.0f} GB/s, {ceil.get('peak_tflops', 0):.3g} TFLOP/s ({ceil.get('method', '')})" if ceil else None),
            ("git", f"{(git.get('sha') or '?')[:12]}{' (dirty)' if git.get('dirty') else ''} {git.get('branch') or ''}".strip()),
            ("torch / triton", f"{pk.get('torch')} / {pk.get('triton')}"),
            ("python", first.get("python")),
            ("host / CPU", f"{first.get('hostname')} / {first.get('cpu')} ({first.get('cpu_count')} cores, torch threads {first.get('torch_threads')})"),
            ("points / seeds", f"{len(ps)} / {', '.join(sorted({str(p.get('seed')) for p in ps}))}"),
            ("time (UTC)", f"{times[0]} – {times[-1]}" if times else None),
            ("wall time of points", f"{sum(float(p.get('wall_s') or 0) for p in ps):.1f} s" if any(p.get("wall_s") for p in ps) else None),
        ]
        rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts if v not in (None, "", "None / None"))
        pkgs = ", ".join(f"{e(k)} {e(v)}" for k, v in pk.items() if v)
        cfgs = "".join(
            f"<details><summary>point {e(p.get('point', i))}</summary><pre>{e(json.dumps(p.get('config'), indent=1, default=str))}</pre></details>"
            for i, p in enumerate(ps[:200])
        )
        out.append(f'<h3>run {e(run)}</h3><div class="tablewrap"><table class="facts">{rows}</table></div>'
                   f'<p class="note">packages: {pkgs}</p><details><summary>Resolved configs ({len(ps)} points)</summary>{cfgs}</details>')
    return "".join(out)


def all_rows(df: pd.DataFrame) -> str:
    cols = [c for c in ROW_COLUMNS if c in df] + [c for c in A.dims(df) if c not in ROW_COLUMNS] + [c for c in A.STATS if c in df]
    shown = df.head(MAX_TABLE_ROWS)
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{e(A.fmt_value(r[c]) if c != 'value' else fmt_num(r[c]))}</td>" for c in cols) + "</tr>"
                   for _, r in shown.iterrows())
    more = f"<p class=\"note\">First {MAX_TABLE_ROWS} of {len(df)} rows; results.parquet holds all.</p>" if len(df) > MAX_TABLE_ROWS else ""
    return (f"<details><summary>All {len(df)} rows</summary>{more}<div class=\"tablewrap\"><table class=\"rows\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div></details>")


# ---- render ----------------------------------------------------------------------------------------
def render(results_df: pd.DataFrame, samples_df: pd.DataFrame | None, provenance: list[dict], out_path: str | Path,
           title: str = "inference-lab report") -> Path:
    """Write one self-contained HTML report (plotly.js inlined, no network needed) of a tidy results
    table (lab.store.load_results) and return its path. Works for any experiment: what is charted
    follows from metric names and from which columns vary; a tiny or empty table still renders."""
    from lab.store import tidy_frame

    df = tidy_frame(results_df) if not all(c in results_df for c in ROW_COLUMNS) else results_df.copy()
    df["status"] = df.status.fillna("ok").astype(str)
    df["metric"] = df.metric.astype(str)
    df["value"] = pd.to_numeric(df.value, errors="coerce")
    if "suite" in df and "scenario" in df:
        # a scenario made of suites (the kernel benchmark): each suite is a section of its own, so
        # its tables and charts hold only its own columns
        has = df.suite.notna()
        df.loc[has, "scenario"] = df.loc[has, "scenario"].astype(str) + " · " + df.loc[has, "suite"].astype(str)
        df = df.drop(columns="suite")
    ok = df[(df.status == "ok") & np.isfinite(df.value.to_numpy(dtype=float))]
    provenance = list(provenance or [])
    page = Page(title)

    ci_note = "Error bars: bootstrap 95% CI of the median"
    page.add("Summary", summary_tables(page, ok))
    page.add("Latency", metric_charts(page, ok, ("latency",), ci_note),
             "Median time of one call; lines where a numeric parameter was swept.")
    page.add("Throughput", metric_charts(page, ok, ("throughput",), ci_note + " (propagated from the latency CI)"),
             "Tokens/s, achieved TFLOP/s and GB/s from the analytic FLOPs and bytes of each call over its median time.")
    page.add("Roofline", roofline_section(page, ok, provenance),
             "Where each kernel sits against the machine's measured limits: left of the ridge a kernel can at best be bandwidth-bound, right of it compute-bound.")
    page.add("Memory", memory_charts(page, ok))
    page.add("Quality", metric_charts(page, ok, ("quality", "cost")))
    page.add("Quality against cost", pareto_section(page, ok),
             "Each point a variant; the dashed line joins the points no other beats on both quality and cost.")
    page.add("Energy and other metrics", metric_charts(page, ok, ("energy", "other")))
    page.add("Failed and skipped points", problems_table(df))
    page.add("Provenance", provenance_section(provenance))
    page.add("All rows", all_rows(df) if len(df) else '<p class="note">The table is empty.</p>')

    html_text = _page_html(page, df, provenance)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(html_text, encoding="utf-8")
    os.replace(tmp, out)  # a browser refreshing during a run never sees half a page
    return out


def _page_html(page: Page, df: pd.DataFrame, provenance: list[dict]) -> str:
    from plotly.offline import get_plotlyjs

    runs = sorted({str(x) for x in df.get("run_id", pd.Series(dtype=object)).dropna()})
    exps = sorted({str(x) for x in df.get("experiment", pd.Series(dtype=object)).dropna()})
    devs = sorted({str((p.get("device") or {}).get("name")) for p in provenance if (p.get("device") or {}).get("name")})
    counts = df.status.value_counts().to_dict() if len(df) else {}
    chips = "".join(f'<span class="chip">{e(k)}: {e(", ".join(v))}</span>' for k, v in (("experiment", exps), ("run", runs), ("device", devs)) if v)
    chips += "".join(f'<span class="chip {e(s)}">{n} {e(s)}</span>' for s, n in counts.items())
    nav = "".join(f'<a href="#{a}">{e(h)}</a>' for a, h, _ in page.sections)
    body = "".join(f'<section id="{a}"><h2>{e(h)}</h2>{b}</section>' for a, h, b in page.sections)
    figs = ",\n".join(f'{{"id": "{fid}", "fig": {js}}}' for fid, js in page.figs)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(page.title)}</title>
<style>{CSS}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<header><h1>{e(page.title)}</h1><div class="chips">{chips}</div><p class="gen">generated {now} by inference-lab</p>
<nav>{nav}</nav></header>
<main>{body}</main>
<script>
const FIGS = [
{figs}
];
const CONFIG = {{displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]}};
for (const f of FIGS) {{ Plotly.newPlot(f.id, f.fig.data, f.fig.layout, CONFIG); }}
</script>
</body></html>
"""


CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f6f7f9; --card:#fff; --accent:#3b5bdb; --good:#e6f4ea; --bad:#fdecea; --warn:#fff4e5; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
header { background:#fff; border-bottom:1px solid var(--line); padding:20px 32px 10px; position:sticky; top:0; z-index:10; }
h1 { margin:0 0 8px; font-size:22px; font-weight:650; }
h2 { font-size:18px; margin:0 0 12px; padding-bottom:6px; border-bottom:2px solid var(--line); }
h3 { font-size:15px; margin:18px 0 8px; color:#344054; }
.chips { display:flex; flex-wrap:wrap; gap:6px; }
.chip { background:#eef2ff; color:#283593; border-radius:12px; padding:2px 10px; font-size:12px; }
.chip.failed { background:var(--bad); color:#b42318; } .chip.skipped { background:var(--warn); color:#b54708; } .chip.ok { background:var(--good); color:#067647; }
.gen { color:var(--muted); font-size:12px; margin:6px 0 4px; }
nav { display:flex; flex-wrap:wrap; gap:14px; font-size:13px; padding-top:4px; }
nav a { color:var(--accent); text-decoration:none; } nav a:hover { text-decoration:underline; }
main { max-width:1400px; margin:0 auto; padding:8px 32px 48px; }
section { margin:28px 0; scroll-margin-top:130px; }
.intro { color:#475467; margin:-4px 0 12px; }
.grid { display:grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap:16px; }
.grid.wide { grid-template-columns: 1fr; margin-bottom:16px; }
figure.card { margin:0; background:var(--card); border:1px solid var(--line); border-radius:8px; padding:8px 10px 10px; box-shadow:0 1px 2px rgba(16,24,40,.04); min-width:0; }
.plot { width:100%; min-height:380px; }
figcaption { color:var(--muted); font-size:12px; padding:4px 6px 0; }
.tablewrap { overflow-x:auto; background:#fff; border:1px solid var(--line); border-radius:8px; margin-bottom:8px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
thead th { background:#f9fafb; font-weight:600; position:sticky; top:0; }
td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
th.num { text-align:right; min-width:90px; }
td.best { background:var(--good); font-weight:600; }
td.na { color:#aaa; }
.unit { color:var(--muted); font-weight:400; font-size:11px; }
.ci { display:block; color:var(--muted); font-size:11px; font-weight:400; }
table.facts th { width:260px; background:#f9fafb; font-weight:500; }
table.rows td { white-space:nowrap; font-size:12px; }
td.reason { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:12px; white-space:pre-wrap; }
.badge { border-radius:10px; padding:1px 8px; font-size:12px; }
.badge.failed { background:var(--bad); color:#b42318; } .badge.skipped { background:var(--warn); color:#b54708; }
.note { color:var(--muted); font-size:12px; }
.ok { color:#067647; }
details { margin:6px 0; } summary { cursor:pointer; color:var(--accent); }
pre { background:#fff; border:1px solid var(--line); border-radius:6px; padding:8px; overflow:auto; max-height:360px; font-size:12px; }
"""
