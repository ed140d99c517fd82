"""The runner end to end on the tiny random model: records, report, failures, resume."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from lab import registry
from lab.cli import main
from lab.registry import VariantConfig

REQUIRED = ["run_id", "experiment", "scenario", "metric", "value", "unit", "method", "status", "error"]


@dataclass(frozen=True)
class ExplodeConfig(VariantConfig):
    boom: bool = True


@registry.register("scenario", "test_explode", config=ExplodeConfig)
def explode(ctx, cfg: ExplodeConfig) -> None:
    """Test-only scenario: records one metric, then fails when asked to."""
    ctx.rec.metric("answer", 42.0, "", method="constant")
    if cfg.boom:
        raise RuntimeError("planted failure")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def only_run(tmp_path, experiment="adhoc"):
    runs = list((tmp_path / "results" / experiment).iterdir())
    assert len(runs) == 1
    return runs[0]


def test_run_writes_tidy_records_and_report(tmp_path, capsys):
    assert main(["run", "model=tiny", "scenario=prefill", "measure=quick"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = tmp_path / out[-1] if not out[-1].startswith("/") else out[-1]
    assert str(report).endswith(".html") and pd.io.common.file_exists(report)
    run = only_run(tmp_path)
    df = pd.read_parquet(run / "results.parquet")
    assert set(REQUIRED) <= set(df.columns)
    assert {"attention", "model", "device"} <= set(df.columns)
    assert (df.status == "ok").any() and df.metric.str.endswith("_ms").any()
    samples = pd.read_parquet(run / "samples.parquet")
    assert len(samples) > 0


def test_failed_point_is_recorded_and_sweep_goes_on(tmp_path, capsys):
    assert main(["run", "-m", "model=tiny", "scenario=test_explode", "scenario.boom=true,false", "measure=quick"]) == 0
    df = pd.read_parquet(only_run(tmp_path) / "results.parquet")
    failed = df[df.status == "failed"]
    assert len(failed) == 1 and "planted failure" in failed.error.iloc[0]
    assert (df[df.metric == "answer"].value == 42).sum() == 2  # both points measured


def test_resume_skips_finished_points_and_never_overwrites(tmp_path, capsys):
    args = ["run", "-m", "model=tiny", "scenario=test_explode", "scenario.boom=false", "measure=quick", "run_id=fixed"]
    assert main(args) == 0
    run = only_run(tmp_path)
    points = sorted(p for p in (run / "points").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in points}
    assert main(args[:4] + ["scenario.boom=false,true"] + args[5:]) == 0
    err = capsys.readouterr().err
    assert "finished before, skipped" in err
    for p, t in stamps.items():
        assert p.stat().st_mtime_ns == t
    assert len(list((run / "points").iterdir())) == 2


def test_baseline_then_check_passes_against_itself_and_fails_on_a_planted_slowdown(tmp_path, capsys, monkeypatch):
    """`lab baseline` + `lab check --run`: the same run passes; one point made 3x slower fails."""
    import numpy as np

    assert main(["run", "model=tiny", "scenario=prefill", "measure=quick", "run_id=base"]) == 0
    run = tmp_path / "results" / "adhoc" / "base"
    assert main(["baseline", str(run), "--to", str(tmp_path / "bl" / "cpu" / "adhoc")]) == 0
    assert (tmp_path / "bl" / "cpu" / "adhoc" / "report.html").is_file()
    assert main(["check", "--baseline", str(tmp_path / "bl" / "cpu" / "adhoc"), "--run", str(run)]) == 0
    # plant a slowdown on one point. Its samples are made tight on both sides (real timings on a
    # loaded CPU are heavy-tailed; the gate's statistics are tested on controlled data elsewhere).
    bl = tmp_path / "bl" / "cpu" / "adhoc"
    slow = tmp_path / "slow"
    slow.mkdir()
    res, smp = pd.read_parquet(run / "results.parquet"), pd.read_parquet(bl / "samples.parquet")
    target = smp[smp.metric.str.endswith("_ms")].iloc[0]
    same = (smp.metric == target.metric).to_numpy().copy()
    for col in ("seq_len", "batch"):
        if col in smp:
            same &= (smp[col] == target[col]).to_numpy()
    rng = np.random.default_rng(0)
    smp.loc[same, "value"] = 1.0 + 0.05 * rng.random(same.sum())
    smp.to_parquet(bl / "samples.parquet")
    smp.loc[same, "value"] *= 3
    res.to_parquet(slow / "results.parquet")
    smp.to_parquet(slow / "samples.parquet")
    assert main(["check", "--baseline", str(tmp_path / "bl" / "cpu" / "adhoc"), "--run", str(slow)]) == 1
    assert "regression" in capsys.readouterr().out
    # Without --run, check runs the experiment itself, and a latency regression has it run once
    # more in a fresh run directory: here the second run matches the baseline, so the gate passes.
    from lab import runner

    calm = tmp_path / "calm"
    calm.mkdir()
    res.to_parquet(calm / "results.parquet")
    pd.read_parquet(bl / "samples.parquet").to_parquet(calm / "samples.parquet")
    runs = []
    monkeypatch.setattr(runner, "run", lambda overrides, **kw: runs.append(overrides) or (slow if len(runs) == 1 else calm))
    (bl / "overrides.txt").write_text("model=tiny\nscenario=prefill\nrun_id=base\n")
    assert main(["check", "--baseline", str(bl), "measure=quick"]) == 0
    assert runs == [["model=tiny", "scenario=prefill", "run_id=base", "measure=quick"],
                    ["model=tiny", "scenario=prefill", "measure=quick", "run_id=slow-again"]]
    assert "not confirmed" in capsys.readouterr().out
