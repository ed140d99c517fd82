"""Every shipped experiment: its points compose and validate as shipped, and it runs end to end
on the tiny random model at CI size with no failed point and a rendered report."""
from __future__ import annotations

import pandas as pd
import pytest

from lab import runner
from lab.cli import main
from lab.config import experiment_names

EXPERIMENTS = experiment_names()


def test_experiments_exist():
    assert {"quickstart", "kernels", "decode", "perplexity", "attention_kv_tradeoff", "attention_scaling"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_plans_as_shipped(name):
    points = runner.plan([f"+experiment={name}"], multirun=True)
    assert points and all(p.cfg.experiment == name for p in points)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_runs_on_tiny_model(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # variants and suites on Triton run interpreted
    assert main(["run", "-m", f"+experiment={name}", "model=tiny", "size=small", "measure=quick", "progress=false"]) == 0
    report = capsys.readouterr().out.strip().splitlines()[-1]
    assert report.endswith(".html") and (tmp_path / report).is_file()
    (run,) = (tmp_path / "results" / name).iterdir()
    df = pd.read_parquet(run / "results.parquet")
    failed = df[df.status == "failed"]
    assert failed.empty, failed[["scenario", "metric", "error"]].to_string()
    assert (df.status == "ok").sum() > 0
