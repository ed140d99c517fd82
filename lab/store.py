"""Run storage: one directory per run, one sub-directory per finished point, never overwritten.

    results/<experiment>/<run-id>/
        points/<hash>/rows.parquet        the point's tidy rows (Recorder.rows)
        points/<hash>/samples.parquet     its raw latency samples (Recorder.samples)
        points/<hash>/config.yaml         its resolved config
        points/<hash>/provenance.json     lab.measure.provenance.collect/finish
        results.parquet                   every point's rows, one tidy table (combine())
        samples.parquet                   every point's samples
        provenance.json                   every point's provenance, a list

A point is written into a temporary directory and renamed into place, so a crash leaves either a
whole point or none, and `is_done` can trust the directory's existence. A run directory that holds
only the three combined files (a committed baseline, say) loads the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from lab.errors import LabError
from lab.records import ROW_COLUMNS

SAMPLE_COLUMNS = ("metric", "sample", "value")


def point_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a point's resolved config: how a resumed run knows a finished point."""
    if type(config).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(config, resolve=True)
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


class RunStore:
    """The directory of one run. `write_point` once per point; `combine` at the end (or any time)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.points_dir = self.run_dir / "points"

    def is_done(self, h: str) -> bool:
        return (self.points_dir / h).is_dir()

    def points(self) -> list[str]:
        """Hashes of the finished points, in the order they were finished."""
        if not self.points_dir.is_dir():
            return []
        done = [p for p in self.points_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return [p.name for p in sorted(done, key=lambda p: (p.stat().st_mtime_ns, p.name))]

    def write_point(
        self,
        h: str,
        rows: list[dict[str, Any]],
        samples: list[dict[str, Any]],
        config_yaml: str,
        provenance: dict[str, Any],
    ) -> Path:
        """Write one finished point atomically. Raises LabError if the point already exists: a
        finished point is evidence and is never overwritten."""
        final = self.points_dir / h
        if final.exists():
            raise LabError(f"point {h} of {self.run_dir} is already finished; a finished point is never overwritten "
                           f"(use a new run_id, or delete {final} by hand)")
        self.points_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.points_dir / f".tmp-{h}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            tidy_frame(rows).to_parquet(tmp / "rows.parquet", index=False)
            tidy_frame(samples, SAMPLE_COLUMNS).to_parquet(tmp / "samples.parquet", index=False)
            (tmp / "config.yaml").write_text(config_yaml)
            (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1, default=str))
            try:
                os.rename(tmp, final)  # atomic; fails if another writer finished the point first
            except OSError as e:
                raise LabError(f"point {h} of {self.run_dir} was finished meanwhile by another writer; not overwritten") from e
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def read_point(self, h: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        d = self.points_dir / h
        prov = json.loads((d / "provenance.json").read_text())
        prov.setdefault("point", h)
        return pd.read_parquet(d / "rows.parquet"), pd.read_parquet(d / "samples.parquet"), prov

    def combine(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Concatenate every finished point into results.parquet and samples.parquet (and
        provenance.json, a list) at the run directory; returns (results, samples)."""
        results, samples, provs = self._gather()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name, df in (("results.parquet", results), ("samples.parquet", samples)):
            tmp = self.run_dir / f".{name}.{os.getpid()}.tmp"
            df.to_parquet(tmp, index=False)
            os.replace(tmp, self.run_dir / name)
        tmp = self.run_dir / f".provenance.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(provs, indent=1, default=str))
        os.replace(tmp, self.run_dir / "provenance.json")
        return results, samples

    def _gather(self) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
        rows, samples, provs = [], [], []
        for h in self.points():
            r, s, p = self.read_point(h)
            rows.append(r)
            samples.append(s)
            provs.append(p)
        return _concat(rows, ROW_COLUMNS), _concat(samples, SAMPLE_COLUMNS), provs


# ---- tidy tables -----------------------------------------------------------------------------
def tidy_frame(rows: list[dict[str, Any]] | pd.DataFrame, first: Iterable[str] = ROW_COLUMNS) -> pd.DataFrame:
    """Rows as a DataFrame that parquet can store: the `first` columns in front (created, NA,
    when missing), `value` as float, a column holding mixed types (an int in one point, a string
    in another) as strings, lists/dicts as JSON strings. Missing cells stay NA."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    first = list(first)
    for c in first:
        if c not in df.columns:
            df[c] = pd.Series([pd.NA] * len(df), dtype=object)
    df = df[first + [c for c in df.columns if c not in first]]
    for c in df.columns:
        if c == "value":
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        elif df[c].dtype == object:
            df[c] = _uniform(df[c])
    return df.reset_index(drop=True)


def _uniform(col: pd.Series) -> pd.Series:
    kind = pd.api.types.infer_dtype(col, skipna=True)
    if kind in ("integer", "floating", "mixed-integer-float", "decimal"):
        return pd.to_numeric(col, errors="coerce")
    if kind == "boolean":
        return col.astype("boolean")
    if kind in ("string", "empty"):
        return col.astype(object) if kind == "empty" else col
    # mixed: one representation for all, so parquet can store it and comparisons are stable
    def one(v: Any) -> Any:
        if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
            return pd.NA
        if isinstance(v, (list, tuple, dict)):
            return json.dumps(v, sort_keys=True, default=str)
        return str(v)

    return col.map(one).astype(object)


def _concat(frames: list[pd.DataFrame], first: Iterable[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return tidy_frame([], first)
    # astype(object) first: concatenating int64 with a string column must not guess a type.
    df = pd.concat([f.astype(object) for f in frames], ignore_index=True, sort=False)
    return tidy_frame(df, first)


# ---- loading -------------------------------------------------------------------------------------
def load_results(paths: str | Path | Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """(results, samples, provenance list) of run directories, results.parquet files or experiment
    directories (every run below). Raises LabError when a path holds no run."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows, samples, provs = [], [], []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise LabError(f"{p}: no such run directory or results file")
        sources = [(p.parent, p)] if p.is_file() else [(d, None) for d in _run_dirs(p)]
        if not sources:
            raise LabError(f"{p}: holds no run (no results.parquet and no points/ below it)")
        for run_dir, results_file in sources:
            r, s, pv = _load_run(run_dir, results_file)
            rows.append(r)
            samples.append(s)
            provs.extend(pv)
    return _concat(rows, ROW_COLUMNS), _concat(samples, SAMPLE_COLUMNS), provs


def _is_run(d: Path) -> bool:
    return (d / "results.parquet").is_file() or (d / "points").is_dir()


def _run_dirs(d: Path, depth: int = 3) -> list[Path]:
    if _is_run(d):
        return [d]
    if depth == 0:
        return []
    out: list[Path] = []
    for sub in sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith(".")):
        out.extend(_run_dirs(sub, depth - 1))
    return out


def _load_run(run_dir: Path, results_file: Path | None) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    store = RunStore(run_dir)
    if results_file is None and store.points():
        # The points are the truth; results.parquet may predate the last point.
        results, samples, provs = store._gather()
    else:
        results_file = results_file or run_dir / "results.parquet"
        results = pd.read_parquet(results_file)
        sfile = results_file.with_name(results_file.name.replace("results", "samples"))
        samples = pd.read_parquet(sfile) if sfile.is_file() and sfile != results_file else pd.DataFrame(columns=list(SAMPLE_COLUMNS))
        pfile = run_dir / "provenance.json"
        provs = json.loads(pfile.read_text()) if pfile.is_file() else []
        provs = provs if isinstance(provs, list) else [provs]
    # A table copied out of its run may lack the ids the directory names still carry.
    for df in (results, samples):
        if len(df):
            if "run_id" not in df.columns or df["run_id"].isna().all():
                df["run_id"] = run_dir.name
            if "experiment" not in df.columns or df["experiment"].isna().all():
                df["experiment"] = run_dir.parent.name
    for pv in provs:
        pv.setdefault("run_id", run_dir.name)
        pv.setdefault("run_dir", str(run_dir))
    return tidy_frame(results), tidy_frame(samples, SAMPLE_COLUMNS), provs
