"""lab.measure: timing, statistics, memory peaks, energy, roofline ceilings, provenance (CPU; the
CUDA paths run where a GPU is visible)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from lab.measure import stats, timing
from lab.measure.energy import measure_energy
from lab.measure.memory import measure_peak
from lab.measure.provenance import collect, finish
from lab.measure.roofline import cached_ceilings, ceilings
from lab.measure.timing import MeasureConfig, time_fn
from lab.records import Recorder

CUDA = torch.cuda.is_available()


# ---- timing ------------------------------------------------------------------------------------
def test_time_fn_cpu_measures_a_known_duration():
    cfg = MeasureConfig(reps=12, warmup_ms=5, max_time_s=5)
    t = time_fn(lambda: time.sleep(0.004), "cpu", cfg)
    assert len(t.samples_ms) == 12
    assert 3.9 <= t.median_ms < 30  # sleep never returns early; a loaded machine may be slow
    assert "cpu perf_counter" in t.method and "12 reps" in t.method
    assert not t.l2_flush and not t.graph


def test_time_fn_warms_up_by_time_and_respects_the_budget():
    calls = []
    cfg = MeasureConfig(reps=1000, min_reps=3, warmup_ms=30, max_time_s=0.05)
    t = time_fn(lambda: (calls.append(1), time.sleep(0.002)), "cpu", cfg)
    # one untimed call, then at least ~30 ms of warm-up calls of 2 ms each
    assert t.extra["warmup_calls"] >= 5 and t.extra["warmup_ms"] >= 30
    assert 3 <= len(t.samples_ms) < 100  # cut by max_time_s long before 1000 reps
    assert len(calls) == 1 + t.extra["warmup_calls"] + len(t.samples_ms)


def test_sample_fed_grows_the_preroll_until_the_gpu_no_longer_waits_on_the_host():
    """A starved sample (the GPU passed its start event before the call was enqueued) is taken
    again behind a pre-roll twice as long, until it is fed; one still starved at the longest
    pre-roll is kept and flagged (the call waits on the host itself)."""
    host_us = 700.0  # the host needs this long to enqueue; a pre-roll of c cycles lasts c / 2000 µs at 2 GHz
    seen = []

    def sample(cycles):
        seen.append(cycles)
        starved = cycles / 2000 < host_us
        return timing.Sample(0.5 + (host_us if starved else 0) / 1e3, host_us / 1e3 + len(seen), starved)

    fed = timing.sample_fed(sample, timing.PREROLL_MIN_CYCLES)
    assert not fed.waited and fed.ms == 0.5 and fed.host_ms == pytest.approx(0.7 + 1)  # the first try's host time
    assert seen == [timing.PREROLL_MIN_CYCLES * 2**k for k in range(fed.retakes + 1)] and fed.cycles == seen[-1]
    assert seen[-2] / 2000 < host_us <= fed.cycles / 2000  # stopped at the first pre-roll long enough
    seen.clear()  # the next sample of the same timing starts where the last one ended: fed at once
    assert timing.sample_fed(sample, fed.cycles).retakes == 0 and seen == [fed.cycles]
    # a call that syncs with the host is starved behind any pre-roll: kept, flagged, bounded
    always = lambda c: (seen.append(c), timing.Sample(1.0, 2.0, True))[1]
    seen.clear()
    fed = timing.sample_fed(always, timing.PREROLL_MIN_CYCLES)
    assert fed.waited and fed.cycles == seen[-1] == timing.PREROLL_MAX_CYCLES and fed.retakes == len(seen) - 1 == timing.MAX_RETAKES
    seen.clear()
    assert timing.sample_fed(always, timing.PREROLL_MIN_CYCLES, retake=False).waited and seen == [timing.PREROLL_MIN_CYCLES]


@pytest.mark.parametrize("syncs", [False, True], ids=["slow-enqueue", "syncs"])
def test_time_cuda_carries_the_preroll_and_bounds_the_extra_calls(monkeypatch, syncs):
    """_time_cuda's loop (the GPU's sample replaced by a model of one, so it runs on the CPU): the
    pre-roll grows once and carries over to the next samples; fn runs at most MAX_RETAKES times
    more than the samples it yields; host time is recorded unless fn waits on the host."""
    calls = []

    def fake_sample(run, cycles, before=None):
        run()
        return timing.Sample(0.5, 0.3, syncs or cycles < 400_000)  # fed from 400K cycles unless it syncs

    monkeypatch.setattr(timing, "_event_sample", fake_sample)
    cfg = MeasureConfig(reps=10, min_reps=10, l2_flush=False, cuda_graph=False)
    t = timing._time_cuda(lambda: calls.append(1), torch.device("cpu"), cfg, {})
    assert len(t.samples_ms) == 10 and len(calls) == 10 + t.extra["samples_retaken"]
    if syncs:
        assert t.extra["samples_retaken"] == timing.MAX_RETAKES and t.extra["preroll_cycles"] == timing.PREROLL_MAX_CYCLES
        assert t.extra["samples_host_waited"] == 10 and "host_enqueue_ms" not in t.extra and "host waits" in t.method
    else:
        assert t.extra["samples_retaken"] == 3 and t.extra["preroll_cycles"] == 400_000  # 50K -> 100K -> 200K -> 400K, once
        assert t.extra["host_enqueue_ms"] == 0.3 and "samples_host_waited" not in t.extra and "host-bound" not in t.method


def test_time_cuda_end_to_end_takes_each_call_from_idle(monkeypatch):
    """end_to_end: one idle-GPU sample per call (no pre-roll, no retakes), no separate host row
    (the host's time is inside the samples), and the method says so."""
    calls = []
    monkeypatch.setattr(timing, "_event_sample", lambda *a, **k: pytest.fail("end_to_end must not pre-roll"))
    monkeypatch.setattr(timing, "_idle_sample", lambda run, device, before=None: (run(), timing.Sample(2.0, 1.5, True))[1])
    cfg = MeasureConfig(reps=7, min_reps=7, l2_flush=False, end_to_end=True)
    t = timing._time_cuda(lambda: calls.append(1), torch.device("cpu"), cfg, {})
    assert len(calls) == 7 and list(t.samples_ms) == [2.0] * 7
    assert t.extra["end_to_end"] and t.extra["host_ms"] == 1.5
    assert "host_enqueue_ms" not in t.extra and "samples_retaken" not in t.extra
    assert "idle GPU" in t.method and "host-bound" not in t.method


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_end_to_end_holds_the_hosts_time_and_the_default_does_not_cuda():
    """A call that spends 3 ms on the host before its one launch: end to end, every sample holds
    those 3 ms; by default (device time, the call queued) none does."""
    x = torch.zeros(1 << 20, device="cuda")
    fn = lambda: (time.sleep(0.003), x.mul_(1))
    cfg = MeasureConfig(reps=8, min_reps=8, warmup_ms=0.0, l2_flush=False)
    e2e = time_fn(fn, "cuda", replace(cfg, end_to_end=True))
    queued = time_fn(fn, "cuda", cfg)
    assert e2e.samples_ms.min() >= 2.9 and queued.median_ms < 1.0, (e2e.samples_ms, queued.samples_ms)
    assert queued.extra.get("host_enqueue_ms", 0.0) >= 2.9, queued.extra  # absent: a sample starved at the longest pre-roll


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_event_sample_flags_the_gpu_waiting_on_the_host_cuda():
    """Starved exactly when the GPU can reach the start event before the call is enqueued: a
    plain launch behind a long pre-roll is fed; a call that sleeps on the host before launching,
    or syncs, is starved behind a short one."""
    x = torch.zeros(1 << 20, device="cuda")
    x.mul_(1)
    torch.cuda.synchronize()
    assert not timing._event_sample(lambda: x.mul_(1), timing.PREROLL_MAX_CYCLES).starved
    assert timing._event_sample(lambda: (time.sleep(0.005), x.mul_(1)), timing.PREROLL_MIN_CYCLES).starved
    assert timing._event_sample(lambda: (x.mul_(1), torch.cuda.synchronize()), timing.PREROLL_MIN_CYCLES).starved


# ---- statistics ------------------------------------------------------------------------------
def test_summarize_median_iqr_and_ci():
    rng = np.random.default_rng(1)
    x = rng.lognormal(mean=0.0, sigma=0.3, size=401)
    s = stats.summarize(x, bootstrap=1000)
    assert s["median"] == pytest.approx(np.median(x))
    assert s["q1"] < s["median"] < s["q3"]
    assert s["ci_lo"] < s["median"] < s["ci_hi"]
    assert s["ci_lo"] < 1.0 < s["ci_hi"]  # the true median of lognormal(0, .3) is 1
    assert s["n"] == 401
    one = stats.summarize([3.0])
    assert one["ci_lo"] == one["ci_hi"] == one["median"] == 3.0


def test_mann_whitney_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    for shift in (0.0, 0.1, 0.5):
        x = np.round(rng.normal(1 + shift, 0.3, 37), 2)  # rounded: ties exercise the correction
        y = np.round(rng.normal(1, 0.3, 29), 2)
        ref = scipy_stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic").pvalue
        assert stats.mann_whitney_greater(x, y) == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_mann_whitney_separates_shift_from_noise():
    rng = np.random.default_rng(3)
    base = rng.lognormal(0, 0.2, 40)
    assert stats.mann_whitney_greater(2 * rng.lognormal(0, 0.2, 40), base) < 1e-6
    assert stats.mann_whitney_greater(rng.lognormal(0, 0.2, 40), base) > 0.01
    assert stats.mann_whitney_greater([], base) == 1.0
    assert stats.mann_whitney_greater([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_ratio_of_medians_ci_covers_the_true_ratio():
    rng = np.random.default_rng(4)
    a, b = 2 * rng.lognormal(0, 0.1, 60), rng.lognormal(0, 0.1, 60)
    r, lo, hi = stats.ratio_of_medians_ci(a, b)
    assert lo < 2.0 < hi and lo > 1.5 and r == pytest.approx(np.median(a) / np.median(b))


# ---- memory ------------------------------------------------------------------------------------
def test_measure_peak_cpu_sees_a_large_temporary():
    nbytes = 96 * 2**20

    def work():
        x = torch.ones(nbytes // 4)  # touched pages: they count in RSS
        return float(x[::4096].sum())

    p = measure_peak(work, "cpu")
    assert nbytes * 0.9 <= p["peak_allocated_bytes"] <= nbytes * 4
    assert p["peak_reserved_bytes"] >= p["baseline_bytes"] + p["peak_allocated_bytes"] * 0.99
    assert p["device_used_bytes"] is None and "RSS" in p["method"]


def test_measure_peak_cpu_counts_memory_reused_from_the_heap():
    """Freed heap memory stays resident; a call that reuses it must still be seen (malloc_trim
    before the call). Without the trim this measures ~1 MiB of the 20 MiB."""
    chunk, n = 128 * 1024 // 4, 160  # 128 KiB tensors, below the 256 KiB mmap threshold: from the heap
    from lab.measure.memory import cpu_allocator_setup

    cpu_allocator_setup()
    old = [torch.ones(chunk) for _ in range(n)]
    pin = torch.ones(chunk)  # allocated after them: the freed 20 MiB is not the heap's top, not trimmed by free()
    del old

    def work():
        new = [torch.rand(chunk) for _ in range(n)]
        return len(new)

    p = measure_peak(work, "cpu")
    assert p["peak_allocated_bytes"] >= 0.8 * n * chunk * 4, p
    assert "malloc_trim" in p["method"] and pin.numel() == chunk


def test_recorder_memory_rows():
    rec = Recorder({"run_id": "r", "experiment": "e", "scenario": "s"})
    with rec.point(kv="int8"):
        rec.memory({"weights": 1000, "kv_cache": 250}, {"peak_allocated_bytes": 2000, "peak_reserved_bytes": 4096,
                                                        "device_used_bytes": None, "method": "m"}, seq_len=7)
    got = {r["metric"]: (r["value"], r["method"], r["kv"], r["seq_len"]) for r in rec.rows}
    assert got == {
        "mem_weights_bytes": (1000.0, "sizes of the tensors held", "int8", 7),
        "mem_kv_cache_bytes": (250.0, "sizes of the tensors held", "int8", 7),
        "mem_peak_allocated_bytes": (2000.0, "m", "int8", 7),
        "mem_peak_reserved_bytes": (4096.0, "m", "int8", 7),
    }


def test_recorder_host_enqueue_row_beside_an_eager_timing_not_a_stream():
    """A CUDA timing's host enqueue time becomes `<metric>_host_enqueue_us` beside its device time; a
    stream's (n calls in one graph replay) does not, and CPU timings have none."""
    rec = Recorder({"run_id": "r", "experiment": "e", "scenario": "s"})
    samples = np.array([0.4, 0.5, 0.6])
    rec.add_timing(timing.Timing(samples, "cuda-events", extra={"host_enqueue_ms": 0.21}), metric="latency", bootstrap=50, impl="a")
    rec.add_timing(timing.Timing(samples, "graph", extra={"host_enqueue_ms": 0.01, "calls_per_sample": 8}), metric="latency_stream", bootstrap=50, impl="a")
    rec.add_timing(timing.Timing(samples, "cpu perf_counter"), metric="latency_cpu", bootstrap=50, impl="a")
    got = {r["metric"]: r["value"] for r in rec.rows}
    assert got["latency_host_enqueue_us"] == pytest.approx(210) and got["latency_ms"] == 0.5
    assert "latency_stream_host_enqueue_us" not in got and "latency_cpu_host_enqueue_us" not in got


# ---- energy ------------------------------------------------------------------------------------
def test_energy_not_available_on_cpu_is_a_skipped_row():
    e = measure_energy(lambda: None, "cpu")
    assert e["available"] is False and "cpu" in e["reason"]
    rec = Recorder({"run_id": "r", "experiment": "e", "scenario": "s"})
    rec.energy(lambda: None, tokens=4, impl="x")
    (row,) = rec.rows
    assert row["status"] == "skipped" and row["metric"] == "energy_j" and row["impl"] == "x"
    assert row["error"].startswith("not run:") and math.isnan(row["value"])


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_energy_cuda():
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    e = measure_energy(lambda: a @ a, "cuda", tokens=10, min_time_s=0.5)
    if not e["available"]:
        pytest.skip(e["reason"])
    assert e["energy_j"] > 0 and 10 < e["power_w"] < 2000
    assert e["energy_j_per_token"] == pytest.approx(e["energy_j"] / 10)


# ---- roofline ----------------------------------------------------------------------------------
def test_ceilings_measured_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    assert cached_ceilings("cpu") is None
    t0 = time.perf_counter()
    c = ceilings("cpu")
    assert time.perf_counter() - t0 < 8  # ~1 s by design (max_time_s 0.6 per measurement); slack for a loaded CI
    assert 1e-4 < c.peak_tflops < 100 and 0.1 < c.peak_gbps < 10_000
    assert "measured" in c.method and "threads" in c.device
    (path,) = (tmp_path / "ceilings").glob("*.json")
    # A second call reads the file, not the machine: doctor the file and see the doctored value.
    d = json.loads(path.read_text())
    d["peak_gbps"] = 12345.0
    path.write_text(json.dumps(d))
    assert ceilings("cpu").peak_gbps == 12345.0
    assert ceilings("cpu", refresh=True).peak_gbps != 12345.0
    assert c.attainable_tflops(1e-6) == pytest.approx(1e-6 * c.peak_gbps / 1e3)
    assert c.attainable_tflops(1e9) == c.peak_tflops


# ---- provenance ----------------------------------------------------------------------------------
def test_provenance_collect_and_finish():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"attention": {"name": "gqa", "groups": [1, 2]}, "seed": 5})
    p = finish(collect(cfg, seed=5))
    json.dumps(p)  # plain data only
    assert p["config"] == {"attention": {"name": "gqa", "groups": [1, 2]}, "seed": 5}
    assert p["seed"] == 5 and p["python"].count(".") == 2
    assert p["packages"]["torch"] == torch.__version__.split("+")[0] or p["packages"]["torch"] == torch.__version__
    assert p["git"]["sha"] is None or len(p["git"]["sha"]) == 40
    assert p["device"]["type"] in ("cpu", "cuda") and p["hostname"] and p["cpu"]
    assert "clocks_start" in p and "clocks_end" in p and p["time_end_utc"] >= p["time_utc"]


# ---- CUDA timing ---------------------------------------------------------------------------------
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_time_fn_cuda_l2_flush_is_verified_and_graphs_replay():
    x = torch.randn(4096, 4096, device="cuda")
    t = time_fn(lambda: x.mul_(1.0), "cuda", MeasureConfig(reps=20, warmup_ms=20))
    chk = t.extra["l2_check"]
    assert t.l2_flush and chk["cold"], chk
    assert "cuda-events" in t.method and "verified cold" in t.method
    g = time_fn(lambda: x.mul_(1.0), "cuda", MeasureConfig(reps=20, warmup_ms=20, cuda_graph=True, l2_flush=False))
    assert g.graph and "cuda-graph replay" in g.method and "L2 warm" in g.method
    assert np.all(g.samples_ms > 0)
    peak = measure_peak(lambda: torch.empty(64 * 2**20, device="cuda").fill_(1), "cuda")
    assert peak["peak_allocated_bytes"] - peak["baseline_bytes"] >= 256 * 2**20
