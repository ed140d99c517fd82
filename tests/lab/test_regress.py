"""lab.regress: a real slowdown is flagged, noise is not; quality tolerances; missing and failed
points; a baseline from another machine; the CLI entry point end to end on stored runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lab.measure.timing import Timing
from lab.records import Recorder
from lab.regress import DEFAULTS, check_main, compare, confirm, load_tolerances, save_baseline
from lab.store import RunStore, load_results

VARIANTS = ("mha", "gqa", "mla", "sliding", "sinks", "alibi")


def fabricate(seed: int, slow: dict[str, float] | None = None, machine: float = 1.0, quality: dict[str, float] | None = None,
              drop: tuple[str, ...] = (), fail: tuple[str, ...] = (), n: int = 30, device: str = "cpu-A",
              context_timed: float = 132.0, device_type: str = "cpu"):
    """(results, samples, provenance) as load_results returns them. Latency samples are lognormal
    around a per-variant median with 15% spread (a noisy CPU), times `machine` and `slow[v]`."""
    rng = np.random.default_rng(seed)
    slow, quality = slow or {}, quality or {}
    rec = Recorder({"run_id": f"run{seed}", "experiment": "demo", "scenario": "decode", "device": "cpu"})
    for i, v in enumerate(VARIANTS):
        if v in drop:
            continue
        with rec.point(attention=v, seq_len=128):
            if v in fail:
                raise RuntimeError("planted failure")
            med = 1.0 + 0.5 * i
            samples = med * machine * slow.get(v, 1.0) * rng.lognormal(0.0, 0.15, n)
            rec.add_timing(Timing(samples, f"cpu perf_counter, {n} reps"), metric="decode", flops=1e9, bytes_moved=1e8, tokens=128, bootstrap=200,
                           context_timed=context_timed)
            rec.metric("perplexity", 10.0 + i + quality.get(v, 0.0), "", method="test")
            rec.metric("sqnr_db", 40.0 - i, "dB", method="test")
            rec.memory({"weights": 1 << 20, "kv_cache": (1 << 16) * (i + 1)})
    from lab.store import SAMPLE_COLUMNS, tidy_frame

    prov = [{"device": {"name": device, "type": device_type}, "run_id": f"run{seed}"}]
    return tidy_frame(rec.rows), tidy_frame(rec.samples, SAMPLE_COLUMNS), prov


def verdicts(table: pd.DataFrame, check: str = "latency") -> dict[str, str]:
    t = table[table.check == check]
    return {p.split("attention=")[1].split(",")[0]: v for p, v in zip(t.point, t.verdict)}


def test_a_2x_slowdown_is_flagged_and_noise_is_not():
    base = fabricate(0)
    table = compare(base, fabricate(1, slow={"gqa": 2.0}))
    v = verdicts(table)
    assert v["gqa"] == "regression"
    assert all(x == "pass" for k, x in v.items() if k != "gqa"), v
    row = table[(table.check == "latency") & table.point.str.contains("gqa")].iloc[0]
    assert 1.6 < row.ratio < 2.5 and row.ci_lo > 1.3 and row.p_value < 1e-6
    # noise alone, over many independent reruns: never a regression nor an improvement
    for seed in range(2, 22):
        v = verdicts(compare(base, fabricate(seed)))
        assert set(v.values()) == {"pass"}, (seed, v)


def test_a_small_true_slowdown_under_the_threshold_passes_and_a_speedup_is_reported():
    base = fabricate(0)
    v = verdicts(compare(base, fabricate(1, slow={"mla": 1.2, "mha": 0.4})))
    assert v["mla"] == "pass" and v["mha"] == "improvement"
    v = verdicts(compare(base, fabricate(1, slow={"mla": 1.2}), {"performance": {"max_slowdown": 1.1}}))
    assert v["mla"] == "regression"


def test_quality_tolerances_and_direction():
    base = fabricate(0)
    t = compare(base, fabricate(1, quality={"mha": 0.5, "gqa": 0.05}))  # +5% and +0.5% perplexity
    q = {(p.split("attention=")[1].split(",")[0], m): v for p, m, v in zip(t.point, t.metric, t.verdict) if m == "perplexity"}
    assert q[("mha", "perplexity")] == "regression" and q[("gqa", "perplexity")] == "pass"
    t = compare(base, fabricate(1, quality={"mha": 0.5}), {"quality": {"perplexity": {"rel": 0.1}}})
    assert set(t[t.metric == "perplexity"].verdict) == {"pass"}
    # sqnr: higher is better, so a drop regresses and a rise improves
    cand = fabricate(1)
    r = cand[0].copy()
    r.loc[(r.metric == "sqnr_db") & (r.attention == "mla"), "value"] -= 5
    r.loc[(r.metric == "sqnr_db") & (r.attention == "mha"), "value"] += 5
    t = compare(base, (r, cand[1], cand[2]))
    s = {p.split("attention=")[1].split(",")[0]: v for p, m, v in zip(t.point, t.metric, t.verdict) if m == "sqnr_db"}
    assert s["mla"] == "regression" and s["mha"] == "improvement" and s["gqa"] == "pass"


def test_missing_and_failed_points_fail_the_gate():
    base = fabricate(0)
    t = compare(base, fabricate(1, drop=("alibi",), fail=("sinks",)))
    assert {"missing", "failed"} <= set(t.verdict)
    assert (t[t.verdict == "failed"].note.str.contains("planted failure")).any()
    assert t[t.verdict == "missing"].point.str.contains("alibi|sinks").all()
    t = compare(base, fabricate(1, slow={"extra": 1.0}))
    assert set(t.verdict) <= {"pass", "info"}


def test_a_point_matches_however_far_its_timed_loop_got():
    # a slower machine takes fewer timed decode steps, so its mean context differs: still the same point
    t = compare(fabricate(0, context_timed=137.0), fabricate(1, context_timed=135.0))
    assert not {"missing", "new"} & set(t.verdict)
    assert set(verdicts(t).values()) == {"pass"}


def test_another_machine_is_normalized_but_a_relative_slowdown_still_shows():
    base = fabricate(0)
    # CI's CPU is 1.8x slower overall, and gqa got 2x slower on top of that
    t = compare(base, fabricate(1, machine=1.8, slow={"gqa": 2.0}, device="cpu-B"))
    v = verdicts(t)
    assert v["gqa"] == "regression" and sum(x == "regression" for x in v.values()) == 1, v
    machine = t[t.check == "machine"].iloc[0]
    assert machine.verdict == "pass" and 1.5 < machine.candidate < 2.2
    # uniformly 1.8x slower: a different machine, not a regression
    assert set(verdicts(compare(base, fabricate(2, machine=1.8, device="cpu-B"))).values()) == {"pass"}
    # uniformly 5x slower is beyond what another machine explains
    t = compare(base, fabricate(3, machine=5.0, device="cpu-B"))
    assert t[t.check == "machine"].verdict.iloc[0] == "regression"
    # the same CPU model uniformly 1.8x slower is its host's load, not the code...
    t = compare(base, fabricate(4, machine=1.8))
    assert set(verdicts(t).values()) == {"pass"} and "load" in t[t.check == "machine"].note.iloc[0]
    assert set(verdicts(compare(base, fabricate(4, machine=1.8, slow={"gqa": 2.0}))).values()) == {"pass", "regression"}
    # ... unless told otherwise; and the same GPU model uniformly 1.8x slower regresses everywhere
    assert set(verdicts(compare(base, fabricate(4, machine=1.8), {"performance": {"normalize_same_cpu": False}})).values()) == {"regression"}
    gpu = fabricate(0, device="H200", device_type="cuda")
    t = compare(gpu, fabricate(4, machine=1.8, device="H200", device_type="cuda"))
    assert set(verdicts(t).values()) == {"regression"} and "machine" not in set(t.check)


def _store(run_dir, data):
    results, samples, prov = data
    store = RunStore(run_dir)
    store.write_point("p0", results.to_dict("records"), samples.to_dict("records"), "x: 1\n", prov[0])
    store.combine()
    return run_dir


def test_check_main_end_to_end(tmp_path, capsys):
    base = _store(tmp_path / "baselines" / "cpu" / "demo", fabricate(0))
    good = _store(tmp_path / "results" / "demo" / "good", fabricate(1))
    bad = _store(tmp_path / "results" / "demo" / "bad", fabricate(2, slow={"sliding": 2.0}))
    assert check_main(base, good) == 0
    out = capsys.readouterr().out
    assert "OK: no regression" in out and "decode_ms" in out
    assert check_main(base, bad) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "attention=sliding" in out and "FAIL" in out
    # a tolerances file beside the baseline loosens the gate
    (base / "tolerances.yaml").write_text("performance:\n  max_slowdown: 3.0\n")
    assert load_tolerances(base)["performance"]["max_slowdown"] == 3.0
    assert load_tolerances(base)["quality"] == DEFAULTS["quality"]
    assert check_main(base, bad) == 0
    (base / "tolerances.yaml").write_text("speed: 1\n")
    from lab.errors import LabError

    with pytest.raises(LabError, match="unknown section"):
        check_main(base, bad)
    results, samples, provs = load_results(base)
    assert len(samples) == len(VARIANTS) * 30 and provs[0]["device"]["name"] == "cpu-A"


def test_a_latency_regression_must_show_again_when_measured_again(tmp_path, capsys):
    base = _store(tmp_path / "baselines" / "cpu" / "demo", fabricate(0))
    jitter = _store(tmp_path / "results" / "demo" / "jitter", fabricate(1, slow={"mla": 2.5}))
    quiet = _store(tmp_path / "results" / "demo" / "quiet", fabricate(2))
    slow = _store(tmp_path / "results" / "demo" / "slow", fabricate(3, slow={"mla": 2.5}))
    calls = []

    def again(run):
        return lambda: calls.append(run) or run

    # one run's jitter, not seen again: passes, and the note gives both ratios
    assert check_main(base, jitter, again(quiet)) == 0
    out = capsys.readouterr().out
    assert calls == [quiet] and "OK: no regression" in out and "not confirmed: 2." in out
    # a slowdown seen twice stays a regression
    assert check_main(base, jitter, again(slow)) == 1
    assert "confirmed: 2." in capsys.readouterr().out and calls[-1] == slow
    # confirm_runs: 0 turns the second run off; a quality or missing failure is never re-measured
    (base / "tolerances.yaml").write_text("performance:\n  confirm_runs: 0\n")
    assert check_main(base, jitter, again(quiet)) == 1 and len(calls) == 2
    (base / "tolerances.yaml").unlink()
    broken = _store(tmp_path / "results" / "demo" / "broken", fabricate(4, slow={"mla": 2.5}, drop=("alibi",)))
    assert check_main(base, broken, again(quiet)) == 1 and len(calls) == 2
    capsys.readouterr()
    # confirm() itself: only latency regressions are open to it
    first, second = compare(fabricate(0), fabricate(1, slow={"mla": 2.5}, quality={"mha": 0.5})), compare(fabricate(0), fabricate(2))
    merged = confirm(first, second)
    assert (merged[merged.check == "latency"].verdict == "pass").all()
    assert merged[(merged.metric == "perplexity") & merged.point.str.contains("mha")].verdict.iloc[0] == "regression"


def test_save_baseline_copies_the_combined_run(tmp_path):
    from lab.errors import LabError

    run = _store(tmp_path / "results" / "demo" / "r1", fabricate(0))
    base = save_baseline(run, tmp_path / "baselines" / "cpu" / "demo")
    assert sorted(p.name for p in base.iterdir()) == ["provenance.json", "results.parquet", "samples.parquet"]
    with pytest.raises(LabError, match="already holds"):
        save_baseline(run, base)
    assert check_main(base, run) == 0
