"""lab.report: one self-contained HTML page whose charts follow from metric names and varying
columns; escaping of config strings; tiny and empty tables; and (marked `browser`) that the page
really renders in headless Chromium without console errors."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest

from lab.report import render
from lab.report import analysis as A
from lab.store import load_results

from report_data import EVIL, make_run  # tests/lab is on sys.path (rootdir-relative imports)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep") / "results" / "demo" / "r1"
    make_run(d).combine()
    return load_results(d)


def figures(html: str) -> list[dict]:
    body = html.split("const FIGS = [", 1)[1].split("];\nconst CONFIG", 1)[0]
    return json.loads("[" + body + "]")


def title(f: dict) -> str:
    return f["fig"]["layout"]["title"]["text"]


def test_full_report(run, tmp_path):
    from plotly.offline import get_plotlyjs

    results, samples, provs = run
    out = render(results, samples, provs, tmp_path / "sub" / "report.html", title="demo <r1>")
    full = out.read_text()
    # self-contained: plotly.js inlined exactly once, nothing fetched
    bundle = get_plotlyjs()
    assert full.count(bundle[:500]) == 1 and bundle in full
    html = full.replace(bundle, "")  # the page without the library (whose text mentions a CDN)
    assert not re.search(r"<script[^>]+src=", html) and "cdn.plot.ly" not in html and "<link" not in html
    # every string from configs escaped, in tables and in the chart data
    assert EVIL not in html and "<img" not in html.replace("&lt;img", "")
    assert html.count("&lt;img src=x onerror=") >= 3 and "demo &lt;r1&gt;" in html
    for h in ("Summary", "Latency", "Throughput", "Roofline", "Memory", "Quality", "Quality against cost",
              "Failed and skipped points", "Provenance", "All rows"):
        assert f">{h}</h2>" in html, h
    figs = figures(html)
    by_title = {title(f): f for f in figs}
    # seq_len is swept: latency is a line chart over it, one line per attention variant
    lat = by_title["decode_ms"]["fig"]
    assert lat["layout"]["xaxis"]["title"]["text"] == "seq_len" and len(lat["data"]) == 4
    assert all(t["type"] == "scatter" and t["error_y"]["array"] for t in lat["data"])
    # roofline: log-log, the measured ceiling line, then every point with intensity and TFLOP/s
    roof = by_title["Roofline"]["fig"]
    assert roof["layout"]["xaxis"]["type"] == roof["layout"]["yaxis"]["type"] == "log"
    assert "30 GB/s" in roof["data"][0]["name"]
    n_points = sum(len(t["x"]) if isinstance(t["x"], list) else 3 for t in roof["data"][1:])
    assert n_points == 12  # 4 variants x 3 seq_lens
    # memory: stacked components
    mem = by_title["memory by component"]["fig"]
    assert mem["layout"]["barmode"] == "stack" and {t["name"] for t in mem["data"] if t["type"] == "bar"} == {"weights", "kv_cache", "activations"}
    # quality against cost, with the Pareto front; perplexity taken at the longest seq_len
    par = by_title["perplexity against decode_ms"]["fig"]
    assert par["data"][0]["name"] == "Pareto front"
    assert "seq_len=256" in html
    # failed and skipped points with their reasons
    assert "out of memory (planted)" in html and "not run: needs a CUDA GPU" in html
    # provenance and how-measured captions
    assert "test ceilings" in html and "How measured: cpu perf_counter" in html


def test_tiny_and_empty_tables_render(tmp_path):
    one = pd.DataFrame([{"run_id": "r", "experiment": "e", "scenario": "s", "metric": "answer", "value": 42.0,
                         "unit": "", "method": "constant", "status": "ok", "error": ""}])
    html = render(one, None, [], tmp_path / "one.html", title="one").read_text()
    assert len(figures(html)) == 1 and "42" in html and "No provenance recorded" in html
    empty = pd.DataFrame(columns=["run_id", "metric", "value"])
    html = render(empty, pd.DataFrame(), [], tmp_path / "empty.html").read_text()
    assert figures(html) == [] and "The table is empty" in html
    failed = one.assign(status="failed", value=np.nan, error="boom <x>")
    html = render(failed, None, [], tmp_path / "failed.html").read_text()
    assert "boom &lt;x&gt;" in html and figures(html) == []


def test_metric_kinds_and_directions():
    assert A.kind("decode_ms") == "latency" and A.kind("prefill_tokens_per_s") == "throughput"
    assert A.kind("mem_kv_cache_bytes") == "memory" and A.kind("kv_bytes_per_token") == "cost"
    assert A.kind("perplexity") == A.kind("kl_vs_reference") == A.kind("max_rel_err") == A.kind("sqnr_db") == "quality"
    assert A.kind("decode_flops") == "analytic" and A.kind("energy_j_per_token") == "energy"
    assert A.higher_is_better("sqnr_db") and not A.higher_is_better("perplexity") and A.higher_is_better("x_tflops")


def test_pareto_mask():
    x = [1, 2, 3, 2.5, 4]
    y = [5, 3, 1, 4, 0.5]
    assert A.pareto_mask(x, y).tolist() == [True, True, True, False, True]
    # higher-is-better y flips which points dominate
    assert A.pareto_mask([1, 2], [1, 2], higher_y=True).tolist() == [True, True]
    assert A.pareto_mask([1, 2], [1, 2]).tolist() == [True, False]


def test_layout_and_pairing():
    df = pd.DataFrame({"metric": "m", "value": [1.0, 2, 3, 4], "attention": ["a", "a", "b", "b"], "seq_len": [16, 64, 16, 64],
                       "device": "cpu"})
    lay = A.layout(df)
    assert lay.x == "seq_len" and lay.series == ["attention"]
    q = pd.DataFrame({"metric": "perplexity", "value": [9.0, 7.0], "attention": ["a", "b"], "device": "cpu"})
    m, note = A.pair(pd.concat([df, q]), "m", "perplexity")
    assert note == "seq_len=64" and sorted(zip(m.attention, m.x, m.y)) == [("a", 2.0, 9.0), ("b", 4.0, 7.0)]


BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]


@pytest.mark.browser
def test_report_renders_in_chromium(run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)")
    results, samples, provs = run
    out = render(results, samples, provs, tmp_path / "report.html", title="browser check")
    n_figs = len(figures(out.read_text()))
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (errors.append(f"script ran: {d.message}"), d.dismiss()))  # EVIL's onerror=alert
        page.on("request", lambda r: errors.append(f"network request: {r.url}") if not r.url.startswith(("file:", "data:", "blob:")) else None)
        page.goto(out.as_uri())
        page.wait_for_function(f"document.querySelectorAll('.plot .main-svg').length >= {n_figs}", timeout=30_000)
        per_plot = page.eval_on_selector_all(".plot", "els => els.map(e => e.querySelectorAll('.main-svg').length)")
        drawn = page.eval_on_selector_all(".plot", "els => els.map(e => e.querySelectorAll('.trace, .bars path, .points path').length)")
        if os.environ.get("LAB_REPORT_SCREENSHOT"):
            page.screenshot(path=os.environ["LAB_REPORT_SCREENSHOT"], full_page=True)
        browser.close()
    assert len(per_plot) == n_figs >= 10 and all(n >= 1 for n in per_plot), per_plot
    assert all(n >= 1 for n in drawn), drawn  # every chart drew at least one trace
    assert errors == []
