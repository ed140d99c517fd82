"""HTML reports: `render(results_df, samples_df, provenance, out_path, title) -> Path` writes one
self-contained page (plotly.js inlined) whose charts are chosen from metric names and from which
columns vary. analysis.py decides what to show, charts.py draws it, page.py lays the page out."""
from lab.report.page import render

__all__ = ["render"]
