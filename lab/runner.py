"""Runs an experiment: every point composed and validated first, then measured one after another.

    results/<experiment>/<run_id>/points/<hash>/   one finished point (config, provenance, rows, samples)
    results/<experiment>/<run_id>/results.parquet  all points, tidy
    reports/<experiment>-<run_id>.html             the report, re-rendered after every point

A point that fails is recorded as failed with its reason and the sweep goes on. Re-running with the
same `run_id` skips finished points (matched by the hash of their resolved config) and never
overwrites them.
"""
from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lab import config as labcfg
from lab import registry
from lab.context import RunContext
from lab.errors import LabError
from lab.records import Recorder

# Keys that do not change what a point measures, so they stay out of its hash.
_NOT_HASHED = ("run_id", "progress", "report", "sweep", "results_dir", "reports_dir")


def point_config(point: labcfg.Point) -> dict:
    cfg = OmegaConf.to_container(point.cfg, resolve=True)
    return {k: v for k, v in cfg.items() if k not in _NOT_HASHED}


def plan(overrides: list[str], multirun: bool) -> list[labcfg.Point]:
    """Compose, resolve and validate every point: all bad input surfaces here, before any work."""
    if not multirun and len(labcfg.expand(overrides)) > 1:
        raise LabError("the overrides hold a sweep (a,b or range(...)); add -m to run every point: python -m lab run -m ...")
    pts = [labcfg.resolve(ov, cfg) for ov, cfg in labcfg.points(overrides)]
    for p in pts:
        labcfg.validate(p)
    experiments = {p.cfg.experiment for p in pts}
    if len(experiments) > 1:
        raise LabError(f"one run holds one experiment; the points name {sorted(experiments)}")
    return pts


def run(overrides: list[str], multirun: bool = False, quiet: bool = False) -> Path:
    """Run all points; return the run directory. Prints the report's path when done."""
    from lab.measure import provenance, roofline
    from lab.store import RunStore, point_hash

    pts = plan(overrides, multirun)
    first = pts[0]
    run_id = first.cfg.run_id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(first.cfg.results_dir) / first.cfg.experiment / run_id
    store = RunStore(run_dir)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"[lab] {first.cfg.experiment}: {len(pts)} point(s) -> {run_dir}")
    ceilings = {}
    for i, p in enumerate(pts, 1):
        cfg = point_config(p)
        h = point_hash(cfg)
        label = " ".join(p.overrides) or "(defaults)"
        if store.is_done(h):
            say(f"[lab] point {i}/{len(pts)} {label}: finished before, skipped")
            continue
        say(f"[lab] point {i}/{len(pts)} {label} on {p.device} ({p.size})")
        if p.device.type not in ceilings:
            ceilings[p.device.type] = roofline.ceilings(p.device)
        scenario = p.choices["scenario"]
        base = {"run_id": run_id, "experiment": p.cfg.experiment, "scenario": scenario.name, "point": h, **p.columns}
        rec = Recorder(base, p.device, p.measure, ceilings[p.device.type])
        ctx = RunContext(
            choices=p.choices, device=p.device, dtype=p.dtype, rec=rec, seed=p.cfg.seed,
            corpus_path=p.cfg.corpus.path, corpus_max_tokens=p.cfg.corpus.max_tokens,
            run_dir=run_dir, size=p.size, show_progress=p.cfg.progress and not quiet,
        )
        prov = provenance.collect(cfg, p.cfg.seed)
        t0 = time.perf_counter()
        torch.manual_seed(p.cfg.seed)
        try:
            registry.get("scenario", scenario.name).fn(ctx, scenario)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # recorded, and the sweep goes on
            rec.failed(e)
            say(f"[lab]   failed: {rec.rows[-1]['error']}")
        prov = provenance.finish(prov)
        prov["wall_s"] = time.perf_counter() - t0
        store.write_point(h, rec.rows, rec.samples, OmegaConf.to_yaml(p.cfg), prov)
        n_failed = sum(r["status"] == "failed" for r in rec.rows)
        say(f"[lab]   {len(rec.rows)} rows, {n_failed} failed, {prov['wall_s']:.1f} s")
        del ctx, rec
        gc.collect()
        if p.device.type == "cuda":
            torch.cuda.empty_cache()
        if first.cfg.report:
            report_path(run_dir, first, store)
    store.combine()  # results.parquet and samples.parquet of the whole run, with or without a report
    path = report_path(run_dir, first, store) if first.cfg.report else None
    if path and not quiet:
        print(path)
    return run_dir


def report_path(run_dir: Path, first: labcfg.Point, store) -> Path:
    from lab.report import render
    from lab.store import load_results

    store.combine()
    results, samples, provs = load_results([run_dir])
    out = Path(first.cfg.reports_dir) / f"{first.cfg.experiment}-{run_dir.name}.html"
    return render(results, samples, provs, out, title=f"{first.cfg.experiment} · {run_dir.name}")
