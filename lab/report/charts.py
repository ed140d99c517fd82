"""Plotly figures of the report. Every string that came from a config is passed through `esc`:
plotly renders a few HTML-like tags in labels, so a variant named `<b>x</b>` would otherwise
change the page; escaped, it reads literally (plotly decodes &lt; back for display)."""
from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lab.report.analysis import MEM_TOTALS, Layout, fmt_value, label_of, layout, pareto_mask, sort_rows, varying

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD",
           "#1f3b73", "#a33b20", "#2d6a4f", "#7b2cbf", "#b08968"]
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def esc(s: Any) -> str:
    return html.escape(str(s), quote=False)


def short(labels: list[str], n: int = 32) -> list[str]:
    """Labels cut to n characters (the full text stays in hover and legend); two different labels
    that cut to the same text get a suffix, so bar categories stay distinct."""
    out, owner = [], {}
    for lab in labels:
        t = lab if len(lab) <= n else lab[: n - 1] + "…"
        if owner.setdefault(t, lab) != lab:
            t = f"{t} #{len(out)}"
        out.append(t)
    return out


def num_text(v: float) -> str:
    """Bar-top numbers: 3633 rather than 3.63e+03, 0.0123 rather than 1.23e-02."""
    a = abs(v)
    if 1000 <= a < 1e6:
        return f"{v:,.0f}"
    return f"{v:.3g}"


class Colors:
    """One color per series label across the whole report, so 'mla' is the same blue everywhere."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}

    def __call__(self, label: str) -> str:
        if label not in self._map:
            self._map[label] = PALETTE[len(self._map) % len(PALETTE)]
        return self._map[label]


def base_layout(fig: go.Figure, *, title: str, x_title: str, y_title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title={"text": esc(title), "font": {"size": 15}, "x": 0.01, "xanchor": "left"},
        font={"family": FONT, "size": 12, "color": "#222"},
        height=height,
        margin={"l": 70, "r": 20, "t": 48, "b": 60},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0, "font": {"size": 11}},
        hoverlabel={"font": {"family": FONT}},
    )
    fig.update_xaxes(title_text=esc(x_title), automargin=True, showline=True, linecolor="#bbb", zeroline=False)
    fig.update_yaxes(title_text=esc(y_title), automargin=True, showline=True, linecolor="#bbb", zeroline=False)
    return fig


def byte_scale(max_value: float) -> tuple[float, str]:
    for div, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if max_value >= div:
            return float(div), unit
    return 1.0, "B"


def _scale(df: pd.DataFrame, unit: str) -> tuple[float, str]:
    if unit == "B" and len(df):
        return byte_scale(float(np.nanmax(np.abs(df.value.to_numpy(dtype=float)))))
    return 1.0, unit


def _err(df: pd.DataFrame, div: float) -> dict | None:
    if "ci_lo" not in df or df.ci_lo.isna().all():
        return None
    v = df.value.to_numpy(dtype=float)
    hi = (pd.to_numeric(df.ci_hi, errors="coerce").to_numpy(dtype=float) - v) / div
    lo = (v - pd.to_numeric(df.ci_lo, errors="coerce").to_numpy(dtype=float)) / div
    return {"type": "data", "symmetric": False, "array": np.nan_to_num(hi).clip(0), "arrayminus": np.nan_to_num(lo).clip(0),
            "thickness": 1.2, "width": 4}


def _hover(df: pd.DataFrame, lay: Layout) -> list[str]:
    out = []
    for _, r in df.iterrows():
        parts = [f"{esc(c)}={esc(fmt_value(r[c]))}" for c in ([lay.x] if lay.x else []) + lay.series]
        if "ci_lo" in r and not pd.isna(r.get("ci_lo")):
            parts.append(f"95% CI {r['ci_lo']:.4g} – {r['ci_hi']:.4g}")
        if "n" in r and not pd.isna(r.get("n")):
            parts.append(f"n={int(r['n'])}")
        out.append("<br>".join(parts))
    return out


def _log_axis(values: pd.Series) -> bool:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(v) > 2 and (v > 0).all() and v.max() / v.min() >= 8)


def metric_chart(df: pd.DataFrame, metric: str, unit: str, colors: Colors, title: str) -> go.Figure:
    """One metric of one scenario: lines over a swept numeric dimension, else bars; error bars
    from the row's bootstrap CI where it has one."""
    lay = layout(df)
    div, unit = _scale(df, unit)
    fig = go.Figure()
    y_title = f"{metric} ({unit})" if unit else metric
    if lay.x:
        df = sort_rows(df, lay.series + [lay.x])
        for lab, g in df.groupby(df.apply(lambda r: label_of(r, lay.series), axis=1), sort=False):
            g = sort_rows(g, [lay.x])
            fig.add_trace(go.Scatter(
                x=pd.to_numeric(g[lay.x]), y=g.value / div, name=esc(lab), mode="lines+markers",
                line={"color": colors(lab), "width": 2}, marker={"size": 7}, error_y=_err(g, div),
                hovertext=_hover(g, lay), hoverinfo="text+y",
            ))
        base_layout(fig, title=title, x_title=lay.x, y_title=y_title)
        xv = sorted(set(pd.to_numeric(df[lay.x]).tolist()))
        if _log_axis(df[lay.x]):
            fig.update_xaxes(type="log")
        if len(xv) <= 12:  # tick exactly the swept values (16, 64, 256 …), not plotly's 2-5-10 grid
            fig.update_xaxes(tickvals=xv, ticktext=[fmt_value(v) for v in xv])
        named = any("=" in str(t.name) for t in fig.data)  # 'batch=1' names itself; 'mla' needs 'attention'
        fig.update_layout(showlegend=bool(lay.series), legend_title_text="" if named else esc(", ".join(lay.series)))
    else:
        df = sort_rows(df, lay.series)
        labels = [label_of(r, lay.series) for _, r in df.iterrows()]
        fig.add_trace(go.Bar(
            x=[esc(x) for x in short(labels)], y=df.value / div, marker={"color": [colors(x) for x in labels]},
            error_y=_err(df, div), hovertext=_hover(df, lay), hoverinfo="text+y", showlegend=False,
            text=[num_text(v) for v in df.value / div], textposition="outside", cliponaxis=False,
        ))
        base_layout(fig, title=title, x_title=", ".join(lay.series) or "", y_title=y_title)
        fig.update_xaxes(type="category")
    return fig


def memory_chart(df: pd.DataFrame, colors: Colors, title: str) -> tuple[go.Figure, list[str]]:
    """Memory by component, stacked per compared point; measured totals (peaks, NVML) as markers.
    Returns the figure and the totals left out because they dwarf the components."""
    comps = [m for m in dict.fromkeys(df.metric) if m not in MEM_TOTALS]
    totals = [m for m in MEM_TOTALS if m in set(df.metric)]
    keys = [c for c in varying(df.drop(columns=["metric"]).assign(metric="")) if c != "metric"]
    df = sort_rows(df, keys)
    df = df.assign(_label=[label_of(r, keys) for _, r in df.iterrows()])
    order = list(dict.fromkeys(df._label))
    ticks = [esc(x) for x in short(order)]
    stacked = df[df.metric.isin(comps)].groupby("_label").value.sum()
    top = float(stacked.max()) if len(stacked) else 0.0
    # A total far above the stacked components (a CPU process's whole RSS) would squash the bars
    # to nothing; such totals stay in the summary table.
    left_out = [m for m in totals if top > 0 and df[df.metric == m].value.max() > 4 * top]
    totals = [m for m in totals if m not in left_out]
    div, unit = byte_scale(max(top, float(df[df.metric.isin(totals)].value.max()) if totals else 0.0))
    fig = go.Figure()
    for i, m in enumerate(comps):
        g = df[df.metric == m].drop_duplicates("_label").set_index("_label").reindex(order)
        name = m.removeprefix("mem_").removesuffix("_bytes")
        fig.add_trace(go.Bar(x=ticks, y=g.value / div, name=esc(name),
                             marker={"color": PALETTE[i % len(PALETTE)]}, hovertemplate="%{y:.4g} " + unit))
    symbols = {"mem_peak_allocated_bytes": "diamond", "mem_peak_reserved_bytes": "triangle-up", "mem_device_used_bytes": "x"}
    for m in totals:
        g = df[df.metric == m].drop_duplicates("_label").set_index("_label").reindex(order)
        fig.add_trace(go.Scatter(x=ticks, y=g.value / div, mode="markers",
                                 name=esc(m.removeprefix("mem_").removesuffix("_bytes").replace("_", " ")),
                                 marker={"symbol": symbols[m], "size": 11, "color": "#222", "line": {"width": 1, "color": "#fff"}},
                                 hovertemplate="%{y:.4g} " + unit))
    base_layout(fig, title=title, x_title=", ".join(keys), y_title=f"memory ({unit})")
    fig.update_layout(barmode="stack", legend={"traceorder": "reversed"})
    fig.update_xaxes(type="category")
    return fig, left_out


def roofline_chart(points: pd.DataFrame, ceilings: list[dict], colors: Colors) -> go.Figure:
    """Log-log roofline: measured bandwidth slope and compute ceiling of each device, and every
    point with an arithmetic intensity and an achieved TFLOP/s. `points` has columns intensity,
    tflops, label, series (the colour key) and hover."""
    fig = go.Figure()
    xs = points.intensity.to_numpy(dtype=float) if len(points) else np.array([1.0])
    lo, hi = max(min(xs.min() / 4, 0.1), 1e-3), max(xs.max() * 4, 10.0)
    for c in ceilings:
        ridge = c["peak_tflops"] * 1e3 / c["peak_gbps"]  # FLOP/B where the two ceilings meet
        hi = max(hi, ridge * 4)
    for i, c in enumerate(ceilings):
        ridge = c["peak_tflops"] * 1e3 / c["peak_gbps"]
        x = np.array([lo, ridge, hi])
        y = np.minimum(c["peak_tflops"], x * c["peak_gbps"] / 1e3)
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines", line={"color": "#555", "width": 2, "dash": ["solid", "dash", "dot"][i % 3]},
            name=esc(f"{c['device']}: {c['peak_gbps']:.0f} GB/s, {c['peak_tflops']:.3g} TFLOP/s"),
            hovertemplate="attainable %{y:.3g} TFLOP/s at %{x:.3g} FLOP/B<extra></extra>",
        ))
    for series, g in points.groupby("series", sort=False):
        # Few points: each labelled. Many: one label per series, at its highest intensity, since
        # labels on every point of a sweep pile up (hover still names each).
        last = g.intensity.to_numpy().argmax()
        text = [esc(t) if len(points) <= 10 or i == last else "" for i, t in enumerate(short(list(g.label), 28))]
        fig.add_trace(go.Scatter(
            x=g.intensity, y=g.tflops, mode="markers+text", name=esc(series), text=text,
            textposition="top center", cliponaxis=False, textfont={"size": 10}, marker={"size": 10, "color": colors(series), "line": {"width": 1, "color": "#fff"}},
            hovertext=list(g.hover), hoverinfo="text",
        ))
    base_layout(fig, title="Roofline", x_title="arithmetic intensity (FLOP/byte)", y_title="achieved TFLOP/s", height=480)
    fig.update_xaxes(type="log", dtick=1, exponentformat="power")
    fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    return fig


def pareto_chart(m: pd.DataFrame, mx: str, my: str, hx: bool, hy: bool, colors: Colors, title: str, x_unit: str = "", y_unit: str = "") -> go.Figure:
    """Quality (y) against cost (x), one marker per compared point, the Pareto front joined."""
    keys = [c for c in varying(m.drop(columns=["x", "y"])) if c not in ("x", "y")]
    m = sort_rows(m, keys)
    labels = [label_of(r, keys) for _, r in m.iterrows()]
    front = pareto_mask(m.x, m.y, hx, hy)
    fig = go.Figure()
    if front.sum() >= 1:
        f = m[front].sort_values("x")
        fig.add_trace(go.Scatter(x=f.x, y=f.y, mode="lines", name="Pareto front", line={"color": "#999", "dash": "dash", "width": 1.5},
                                 hoverinfo="skip", line_shape="hv" if len(f) > 1 else "linear"))
    fig.add_trace(go.Scatter(
        x=m.x, y=m.y, mode="markers+text", text=[esc(x) for x in short(labels, 24)], textposition="top center", textfont={"size": 10},
        cliponaxis=False,
        marker={"size": [14 if f else 9 for f in front], "color": [colors(x) for x in labels],
                "symbol": ["star" if f else "circle" for f in front], "line": {"width": 1, "color": "#fff"}},
        hovertext=[f"{esc(lab)}<br>{esc(mx)}={x:.4g}<br>{esc(my)}={y:.4g}{'<br>on the Pareto front' if f else ''}"
                   for lab, x, y, f in zip(labels, m.x, m.y, front)],
        hoverinfo="text", showlegend=False,
    ))
    base_layout(fig, title=title, x_title=f"{mx} ({x_unit})" if x_unit else mx, y_title=f"{my} ({y_unit})" if y_unit else my)
    for axis, col in (("x", m.x), ("y", m.y)):
        v = col.to_numpy(dtype=float)
        if len(v) > 2 and (v > 0).all() and v.max() / v.min() >= 30:
            fig.update_layout({f"{axis}axis": {"type": "log", "dtick": 1}})
    return fig


def finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
