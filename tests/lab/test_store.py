"""lab.store: atomic never-overwritten points, tidy combined tables, loading runs in any form."""
from __future__ import annotations

import json
import shutil
import types

import pandas as pd
import pytest

from lab.errors import LabError
from lab.records import ROW_COLUMNS, Recorder
from lab.store import RunStore, load_results, point_hash


def recorded(run_id="r1", experiment="exp", **cols):
    """Rows and samples from a real Recorder, timing a real (tiny) function."""
    from lab.measure.timing import MeasureConfig

    rec = Recorder({"run_id": run_id, "experiment": experiment, "scenario": "decode", **cols},
                   measure=MeasureConfig(reps=7, warmup_ms=0, bootstrap=100))
    with rec.point(seq_len=16):
        rec.time(lambda: sum(range(200)), metric="decode", flops=1e6, bytes_moved=1e5, tokens=4)
        rec.metric("perplexity", 12.5, "", method="test")
    rec.skipped("no CUDA", impl="flash")
    return rec.rows, rec.samples


def write(store, cfg, **cols):
    rows, samples = recorded(**cols)
    h = point_hash(cfg)
    store.write_point(h, rows, samples, "a: 1\n", {"seed": 0, "device": {"name": "cpu"}})
    return h


def test_point_hash_is_stable_and_order_free():
    a = point_hash({"x": 1, "y": {"b": [1, 2], "a": "s"}})
    assert a == point_hash({"y": {"a": "s", "b": [1, 2]}, "x": 1})
    assert a != point_hash({"x": 2, "y": {"b": [1, 2], "a": "s"}}) and len(a) == 12


def test_write_point_combine_and_never_overwrite(tmp_path):
    store = RunStore(tmp_path / "exp" / "r1")
    h = write(store, {"kv": "int8"}, kv="int8")
    assert store.is_done(h) and not store.is_done("nope") and store.points() == [h]
    before = (store.points_dir / h / "rows.parquet").read_bytes()
    with pytest.raises(LabError, match="never overwritten"):
        store.write_point(h, [], [], "", {})
    assert (store.points_dir / h / "rows.parquet").read_bytes() == before
    h2 = write(store, {"kv": "fp16"}, kv="fp16")
    results, samples = store.combine()
    assert (store.run_dir / "results.parquet").is_file() and (store.run_dir / "samples.parquet").is_file()
    assert list(results.columns[: len(ROW_COLUMNS)]) == list(ROW_COLUMNS)
    assert set(results.kv) == {"int8", "fp16"}
    ms = results[results.metric == "decode_ms"]
    assert len(ms) == 2 and (ms.value > 0).all() and (ms.n == 7).all()
    assert len(samples) == 14 and set(samples.kv) == {"int8", "fp16"}
    skipped = results[results.status == "skipped"]
    assert len(skipped) == 2 and skipped.error.str.contains("no CUDA").all()
    assert pd.read_parquet(store.run_dir / "results.parquet").shape == results.shape
    provs = json.loads((store.run_dir / "provenance.json").read_text())
    assert [p["point"] for p in provs] == [h, h2]


def test_a_failed_write_leaves_no_point(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "run")
    rows, samples = recorded()

    def boom(*a, **k):
        raise OSError("disk full")

    # the last file of the point fails to be written
    monkeypatch.setattr("lab.store.json", types.SimpleNamespace(dumps=boom, loads=json.loads))
    with pytest.raises(OSError, match="disk full"):
        store.write_point("abc", rows, samples, "", {})
    monkeypatch.undo()
    assert not store.is_done("abc") and list(store.points_dir.iterdir()) == []
    store.write_point("abc", rows, samples, "", {})  # and the point can then be written
    assert store.is_done("abc")


def test_columns_of_mixed_types_and_missing_columns(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_point("a", [{"metric": "m", "value": 1, "window": 128, "only_a": "x"}], [], "", {})
    store.write_point("b", [{"metric": "m", "value": 2, "window": "none", "status": "ok"}], [], "", {})
    results, samples = store.combine()  # parquet must accept an int and a string in one column
    back = pd.read_parquet(store.run_dir / "results.parquet")
    assert sorted(back.window.astype(str)) == ["128", "none"]
    assert back.only_a.isna().sum() == 1 and back.value.tolist() == [1.0, 2.0]
    assert back.run_id.isna().all() and len(samples) == 0


def test_load_results_from_run_dir_file_and_experiment_dir(tmp_path):
    exp = tmp_path / "results" / "exp"
    for run in ("r1", "r2"):
        store = RunStore(exp / run)
        write(store, {"kv": "int8"}, run_id=run, kv="int8")
        store.combine()
    r1, s1, p1 = load_results(exp / "r1")
    assert set(r1.run_id) == {"r1"} and len(p1) == 1 and p1[0]["run_id"] == "r1"
    rf, sf, pf = load_results(str(exp / "r2" / "results.parquet"))
    assert set(rf.run_id) == {"r2"} and len(sf) == len(s1) > 0 and len(pf) == 1
    ra, sa, pa = load_results([exp])
    assert set(ra.run_id) == {"r1", "r2"} and len(ra) == 2 * len(r1) and len(pa) == 2
    # A committed baseline: only the combined files, ids recovered from the directory names.
    base = tmp_path / "baselines" / "cpu" / "exp"
    base.mkdir(parents=True)
    for f in ("results.parquet", "samples.parquet", "provenance.json"):
        shutil.copy(exp / "r1" / f, base / f)
    rb, sb, pb = load_results(base)
    assert len(rb) == len(r1) and len(sb) == len(s1) and pb[0]["seed"] == 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabError, match="holds no run"):
        load_results(tmp_path / "empty")
    with pytest.raises(LabError, match="no such"):
        load_results(tmp_path / "missing")
