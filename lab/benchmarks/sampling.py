"""Benchmark suite: sampling a token per row from logits [B, V] with temperature, top-k, top-p.

Implementations, on the same float32 logits:
  impl=triton       kernels.sampling.sample: thresholds by multi-pivot bisection, no sort, no
                    host sync (seed passed in). Small B: each row split over C programs
                    (SPLIT_TABLE; ROUNDS + 2 launches, inverse-CDF draw); else one program per
                    row (Gumbel-max draw). top_k a small Python int keeps one program per row.
  impl=torch-sort   kernels.sampling.sample_sorted: topk + sort + softmax + cumsum + scatter +
                    multinomial, as Hugging Face's logits warpers do it (the usual eager path)
Two logit shapes, because the sort-free search costs what the kept set's shape makes it cost:
  dist=peaked  N(0, 2²) plus 32 tokens a row raised by U(10, 16): most of the mass on a few
               tokens, as a trained LM's next-token distribution; T = 0.8, top_k = 50, top_p = 0.9
  dist=flat    N(0, 2²) only, T = 1, top_p = 0.9, no top-k: the kept set holds tens of thousands
               of tokens (the worst case for the search: every pass touches most of the row)
Bytes: one read of the logits (kernels.sampling.bytes_moved, n_passes=1): GB/s is an effective
rate; the kernels make ~3-8 passes (L2-resident at small B). Latency: `latency_*` eager calls
(device time with every launch queued; the host's enqueue time beside it, `latency_host_enqueue_us`:
an eager loop runs at the slower of the two); on CUDA also `latency_graph_*`,
replays of a CUDA graph of the call (the kernels alone, as a graph-captured decode step runs
them). torch-sort's graph uses its generator when that can be captured, else the default CUDA
generator (the method says so), else a skipped row with the reason. Speedup: median latency of
torch-sort / triton, eager (`speedup_vs_torch_sort`) and graph (`speedup_vs_torch_sort_graph`).
Quality (no max_rel_err for a sampler): on row 0, 2000 draws from each implementation against
kernels.sampling.reference_probs by a chi-square test: `stat_pvalue`, and `stat_pass` = 1 when
p > 1e-3 and no draw falls outside the reference support.
Full (GPU): V = 32000, 49152, 128256, 151936 (Llama-2, SmolLM2, Llama-3, Qwen2) × B = 1, 32, 256.
Small (CPU, interpreter): V = 300 × B = 2.

`tune()` times candidate split settings per (V, B, dist) with CUDA-graph replays and prints the
best beside torch-sort: how kernels.sampling.SPLIT_TABLE is set. `compare()` prints eager and
graph latency against torch-sort at B = 1, 8, 32 with the host time of a call, and times
variants of the table's settings; `kernel_times()` and `compiled_kernels()` say where the GPU
time goes (per kernel) and what limits occupancy (registers, spills).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import replace

import numpy as np
import torch
import triton

import kernels.sampling as kernels_sampling
from kernels.sampling import (
    SPLIT_MODES,
    SPLIT_TABLE,
    bytes_moved,
    chi_square_pvalue,
    flops,
    reference_probs,
    sample,
    sample_many,
    sample_sorted,
    split_modes,
)
from lab.benchmarks._common import bench_measure
from lab.measure.timing import MeasureConfig, time_fn
from lab.records import Recorder

SETTINGS = {  # dist -> (temperature, top_k, top_p, min_p)
    "peaked": (0.8, 50, 0.9, 0.0),
    "flat": (1.0, 0, 0.9, 0.0),
}
N_CHECK = 2000
ALPHA = 1e-3


def shapes(size: str) -> list[tuple[int, int]]:
    """(B, V)."""
    if size == "small":
        return [(2, 300)]
    return [(B, V) for V in (32000, 49152, 128256, 151936) for B in (1, 32, 256)]


def make_logits(B: int, V: int, dist: str, device, gen) -> torch.Tensor:
    logits = torch.randn(B, V, device=device, generator=gen) * 2.0
    if dist == "peaked":
        idx = torch.randint(0, V, (B, 32), device=device, generator=gen)
        boost = torch.rand(B, 32, device=device, generator=gen) * 6.0 + 10.0
        logits.scatter_add_(1, idx, boost)
    return logits


def _check(tokens: torch.Tensor, probs: torch.Tensor, rec: Recorder, method: str) -> None:
    inside = bool((probs[tokens] > 0).all())
    pval = chi_square_pvalue(torch.bincount(tokens.cpu(), minlength=probs.numel()), probs)
    rec.metric("stat_pvalue", pval, "", method=method)
    rec.metric("stat_pass", float(inside and pval > ALPHA), "bool", method=method + f"; pass = p > {ALPHA} and no draw outside the support")


def graph_error(fn) -> str | None:
    """Why fn cannot be captured in a CUDA graph (None: it can). Warms up on a side stream first,
    as torch's docs ask."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        torch.cuda.synchronize()
        return None
    except Exception as e:  # capture errors come as RuntimeError or from torch's checks
        torch.cuda.synchronize()
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def _time_graph(rec: Recorder, fn, measure, cost: dict, alt=None, alt_note: str = "") -> float | None:
    """`latency_graph_ms` from replays of fn captured in a CUDA graph, or of `alt` when only it
    can be captured (the method says why); None, with a skipped row saying why, when neither."""
    err = graph_error(fn)
    note = ""
    if err is not None and alt is not None and graph_error(alt) is None:
        fn, note = alt, f"; {alt_note} (as called: {err})"
    elif err is not None:
        rec.skipped(f"cannot be captured in a CUDA graph: {err}", metric="latency_graph_ms")
        return None
    t = time_fn(fn, rec.device, replace(measure, cuda_graph=True))
    if not t.graph:
        rec.skipped(f"cannot be captured in a CUDA graph: {t.extra.get('graph_error', '?')}", metric="latency_graph_ms")
        return None
    t.method += note
    rec.add_timing(t, metric="latency_graph", bootstrap=measure.bootstrap, **cost)
    return t.median_ms


def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    measure = bench_measure(rec, device)
    graphs = device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    torch_gen = torch.Generator(device=device).manual_seed(1)
    for dist, (T, k, p, mp) in SETTINGS.items():
        for B, V in shapes(size):
            cols = dict(kernel="sampling", B=B, V=V, dist=dist, temperature=T, top_k=k, top_p=p, min_p=mp, dtype="float32")
            with rec.point(**cols):
                logits = make_logits(B, V, dist, device, gen)
                probs = reference_probs(logits[:1], T, k, p, mp)[0]
                rec.metric("kept_tokens_row0", float((probs > 0).sum()), "tokens", method="support of reference_probs, row 0")
                cost = dict(flops=flops(B, V), bytes_moved=bytes_moved(B, V, logits.element_size(), n_passes=1))
                method = f"chi-square of {N_CHECK} draws from row 0 vs reference_probs (sort-based, float64)"
                torch_ms = {}  # "" eager, "_graph" CUDA-graph replay
                with rec.point(impl="torch-sort"):
                    fn = lambda: sample_sorted(logits, T, k, p, mp, generator=torch_gen)
                    _check(sample_sorted(logits[:1].expand(N_CHECK, V).contiguous(), T, k, p, mp, generator=torch_gen), probs, rec, method)
                    torch_ms[""] = rec.time(fn, measure=measure, **cost).median_ms
                    if graphs:
                        torch_ms["_graph"] = _time_graph(rec, fn, measure, cost, alt=lambda: sample_sorted(logits, T, k, p, mp),
                                                         alt_note="default CUDA generator: a custom one is not capturable here")
                with rec.point(impl="triton"):
                    fn = lambda: sample(logits, T, k, p, mp, seed=1234)
                    _check(sample_many(logits[:1], N_CHECK, T, k, p, mp, seed=99)[0], probs, rec, method)
                    ours = {"": rec.time(fn, measure=measure, **cost).median_ms}
                    if graphs:
                        ours["_graph"] = _time_graph(rec, fn, measure, cost)
                    for suffix, ms in ours.items():
                        if ms and torch_ms.get(suffix):
                            how = "CUDA-graph replays" if suffix else "eager calls"
                            rec.metric(f"speedup_vs_torch_sort{suffix}", torch_ms[suffix] / ms, "x", method=f"median latency ({how}), torch-sort / triton")
                del logits, probs


# ---- tuning -----------------------------------------------------------------------------------
TUNE_CHUNKS = {1: (1024, 2048, 4096), 8: (1024, 2048, 4096, 8192), 32: (2048, 4096, 8192, 16384)}
TUNE_VARIANTS = (  # over the table's row for B, at its chunk; each new NP/BLOCK/warps costs ~5 s of compiles
    dict(ROUNDS=3),
    dict(NP=16),
    dict(NP=16, ROUNDS=3),
    dict(NP=64, ROUNDS=1, BLOCK=512),  # one launch less; [BLOCK/4, 64] accumulators
    dict(BLOCK=512, num_warps=4),
    dict(BLOCK=1024, num_warps=8),
    dict(maxnreg=128),  # the gather's register cap
)


def tune_configs(B: int, V: int) -> list[dict]:
    """Split settings to try at (B, V): the table's row for B at the TUNE_CHUNKS lengths, then
    TUNE_VARIANTS at its own chunk; B beyond TUNE_CHUNKS: a 2-way split only."""
    base = dict(next((r for r in SPLIT_TABLE if B <= r["max_b"] and V <= r.get("max_v", V)), SPLIT_TABLE[-1]))
    base.pop("max_b")
    base.pop("max_v", None)
    if B not in TUNE_CHUNKS:
        return [dict(base, chunk=triton.cdiv(V, 2))]
    out = [dict(base, chunk=c) for c in TUNE_CHUNKS[B]] + [dict(base, **v) for v in TUNE_VARIANTS]
    return [dict(t) for t in dict.fromkeys(tuple(sorted(c.items())) for c in out)]


def _label(cfg: dict) -> str:
    regs = f" regs<={cfg['maxnreg']}" if cfg.get("maxnreg") else ""
    return f"chunk={cfg['chunk']} NP={cfg['NP']} R={cfg['ROUNDS']} CAP={cfg['CAP']} BLOCK={cfg['BLOCK']} w{cfg['num_warps']}{regs}"


def _sweep_points(Vs, Bs, dists, dev, gen):
    """(V, B, dist, (T, k, p, mp), logits, support of rows 0-1 [2, V]) at every swept shape."""
    for V, B, dist in itertools.product(Vs, Bs, dists):
        T, k, p, mp = SETTINGS[dist]
        logits = make_logits(B, V, dist, dev, gen)
        yield V, B, dist, (T, k, p, mp), logits, reference_probs(logits[:2], T, k, p, mp) > 0
        del logits  # before the next shape's are made: one set alive at a time


def _time_us(fn, reps: int) -> tuple[float | None, float]:
    """(median µs of CUDA-graph replays of fn, or None when it cannot be captured; median µs of
    eager calls, the GPU kept busy while they are enqueued): lab.measure's time_fn
    with L2 left warm, as a ranking."""
    cfg = MeasureConfig(reps=reps, min_reps=reps, warmup_ms=0.0, l2_flush=False, bootstrap=0)
    eager = time_fn(fn, "cuda", cfg).median_ms * 1e3
    if graph_error(fn) is not None:
        return None, eager
    graph = time_fn(fn, "cuda", replace(cfg, cuda_graph=True))
    return (graph.median_ms * 1e3 if graph.graph else None), eager


def tune(Vs=(32000, 49152, 128256, 151936), Bs=(1, 8, 32, 256), dists=("flat", "peaked"),
         reps: int = 20, top: int = 3, budget_s: float = 85.0, device: str = "cuda") -> list[dict]:
    """Time torch-sort, the current routing (`auto`), one program per row (`one-program`) and
    tune_configs' split settings at every (V, B, dist) on the current GPU; each sampler's tokens
    for rows 0-1 must lie in reference_probs' support. Prints one line per shape: torch-sort, auto
    and one-program as graph/eager µs, the `top` fastest split settings by graph time (eager
    beside), and how the best one's rows settled (split_modes). A setting that fails prints
    "skip" and the sweep goes on; past budget_s the rest is skipped. Returns one row per timing."""
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    deadline = time.perf_counter() + budget_s
    rows = []
    for V, B, dist, (T, k, p, mp), logits, support in _sweep_points(Vs, Bs, dists, dev, gen):
        shape = dict(V=V, B=B, dist=dist)
        cands = {"torch-sort": (lambda: sample_sorted(logits, T, k, p, mp), None),
                 "auto": (lambda: sample(logits, T, k, p, mp, seed=1234), None),
                 "one-program": (lambda: sample(logits, T, k, p, mp, seed=1234, config={"split": False}), None)}
        for cfg in tune_configs(B, V):
            cands[_label(cfg)] = ((lambda c=cfg: sample(logits, T, k, p, mp, seed=1234, config={"split": c})), cfg)
        got = {}
        for name, (fn, cfg) in cands.items():
            if time.perf_counter() > deadline:
                print(f"  skip {name} at V={V} B={B} {dist}: past the {budget_s:.0f} s budget", flush=True)
                continue
            try:
                tokens = fn()
                ok = bool(support.gather(1, tokens[:2, None].to(torch.int64)).all())
                g_us, e_us = _time_us(fn, reps)
            except Exception as e:  # a setting that does not compile or fit: skip it
                print(f"  skip {name} at V={V} B={B} {dist}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            if not ok:
                print(f"  WRONG {name} at V={V} B={B} {dist}: a token outside the kept set", flush=True)
            got[name] = (g_us, e_us, ok, cfg)
            rows.append(dict(shape, impl=name, config=cfg, graph_us=g_us, eager_us=e_us, ok=ok))
        print(_tune_line(shape, got, top, lambda c: split_modes(logits, T, k, p, mp, config={"split": c}, with_mask=False)[0]), flush=True)
        del logits, support, cands
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    print(suggest_table(rows), flush=True)
    return rows


def suggest_table(rows: list[dict], dist: str = "flat") -> str:
    """SPLIT_TABLE rows from tune()'s: per B, the split setting timed at every V whose times are
    closest to each V's fastest (geometric mean of time / fastest; graph µs, else eager)."""
    us = lambda r: r["graph_us"] if r["graph_us"] is not None else r["eager_us"]
    lines = ["SPLIT_TABLE suggestion (paste into kernels/sampling.py; max_b: widen to cover the Bs between):"]
    for B in sorted({r["B"] for r in rows}):
        mine = [r for r in rows if r["B"] == B and r["dist"] == dist and r["config"] is not None and r["ok"]]
        Vs = sorted({r["V"] for r in mine})
        if not Vs:
            continue
        fastest = {V: min(us(r) for r in mine if r["V"] == V) for V in Vs}
        score = {}
        for r in mine:
            score.setdefault(r["impl"], []).append(us(r) / fastest[r["V"]])
        full = {name: float(np.exp(np.mean(np.log(v)))) for name, v in score.items() if len(v) == len(Vs)}
        if not full:
            continue
        name = min(full, key=full.get)
        cfg = next(r["config"] for r in mine if r["impl"] == name)
        torch_us = {r["V"]: us(r) for r in rows if r["B"] == B and r["dist"] == dist and r["impl"] == "torch-sort"}
        mine_us = {r["V"]: us(r) for r in mine if r["impl"] == name}
        vs = ", ".join(f"V={V}: x{torch_us[V] / mine_us[V]:.1f}" for V in Vs if V in torch_us)
        fields = ", ".join(f"{key}={cfg[key]}" for key in ("chunk", "NP", "ROUNDS", "CAP", "BLOCK", "num_warps", "maxnreg") if cfg.get(key) is not None)
        lines.append(f"    dict(max_b={B}, {fields}),  # {full[name]:.2f}x the fastest per V; vs torch-sort {vs}")
    return "\n".join(lines)


def compare(Vs=(32000, 49152, 128256, 151936), Bs=(1, 8, 32), dists=("flat", "peaked"), reps: int = 30,
            variants: dict | None = None, device: str = "cuda") -> list[dict]:
    """Eager and CUDA-graph latency of sample() against torch-sort at every (V, B, dist), on the
    suite's harness (time_fn: L2 flushed before every eager call, the GPU kept busy while the
    call is enqueued, as `latency_ms`), and the host time of one eager call (`host_us`:
    perf_counter around it while the GPU sleeps, i.e. what the launches cost the CPU; at B = 1
    flat also with every launch through Triton's JIT path (kernels.sampling.DIRECT_LAUNCH off),
    and with no launch at all: the launcher's own Python and allocations).
    Rows 0-1 of our tokens must lie in reference_probs' support. `variants` (label -> split
    settings over the table's row, or a function (B, V, row) giving them, None to skip) adds
    their eager/graph µs on flat rows. One line per shape."""
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    eager = MeasureConfig(reps=reps, warmup_ms=20.0, max_time_s=2.0, bootstrap=0)
    graph = replace(eager, cuda_graph=True)
    us = lambda fn, cfg: time_fn(fn, dev, cfg).median_ms * 1e3
    rows = []
    for V, B, dist, (T, k, p, mp), logits, support in _sweep_points(Vs, Bs, dists, dev, gen):
        ours = lambda cfg=None: sample(logits, T, k, p, mp, seed=1234, config=cfg)
        ok = bool(support.gather(1, ours()[:2, None]).all())
        row = dict(V=V, B=B, dist=dist, ok=ok,
                   torch_eager_us=us(lambda: sample_sorted(logits, T, k, p, mp), eager),
                   torch_graph_us=us(lambda: sample_sorted(logits, T, k, p, mp), graph),
                   eager_us=us(ours, eager), graph_us=us(ours, graph), host_us=_host_us(ours))
        if B == 1 and dist == "flat":  # host time with every launch through Triton's JIT; with none
            run_launches = kernels_sampling._run_launches
            try:
                kernels_sampling.DIRECT_LAUNCH = False
                row["host_jit_us"] = _host_us(ours)
                kernels_sampling.DIRECT_LAUNCH = True
                kernels_sampling._run_launches = lambda *a: None
                row["host_no_launch_us"] = _host_us(ours)
            finally:  # a failure here must not leave sample() without launches
                kernels_sampling.DIRECT_LAUNCH, kernels_sampling._run_launches = True, run_launches
        line = (f"V={V} B={B} {dist}: torch {row['torch_eager_us']:.1f}e/{row['torch_graph_us']:.1f}g"
                f" | ours {row['eager_us']:.1f}e/{row['graph_us']:.1f}g"
                f" | x{row['torch_eager_us'] / row['eager_us']:.2f}e x{row['torch_graph_us'] / row['graph_us']:.2f}g"
                f" | host {row['host_us']:.1f} us" + (f" (JIT path {row['host_jit_us']:.1f}, no launch {row['host_no_launch_us']:.1f})"
                                                      if "host_jit_us" in row else "")
                + ("" if ok else " | WRONG: a token outside the kept set"))
        for label, v in (variants or {}).items() if dist == "flat" else ():
            row_cfg = _table_row(B, V)
            change = v(B, V, row_cfg) if callable(v) else v
            if change is None:  # not tried at this shape
                continue
            cfg = {"split": {**row_cfg, **change}}
            try:
                v_ok = bool(support.gather(1, ours(cfg)[:2, None]).all())
                g, e = us(lambda: ours(cfg), graph), us(lambda: ours(cfg), eager)
            except Exception as ex:  # a setting that does not compile or fit
                line += f"\n    {label}: skip ({type(ex).__name__}: {str(ex)[:80]})"
                continue
            row[label] = (g, e, v_ok)
            line += f"\n    {label}: {e:.1f}e/{g:.1f}g" + ("" if v_ok else " WRONG")
        print(line, flush=True)
        rows.append(row)
        del logits, support
    return rows


def _table_row(B: int, V: int) -> dict:
    """The SPLIT_TABLE settings sample() takes at (B, V), without the bucket bounds."""
    row = kernels_sampling._split_row(B, V) or kernels_sampling.SPLIT_TABLE[-1]
    return {key: v for key, v in row.items() if key in kernels_sampling.SPLIT_KEYS}


def _host_us(fn, reps: int = 20) -> float:
    """Median µs the host takes to enqueue one fn(), the GPU kept busy meanwhile (time_fn's
    host_enqueue_ms); NaN where fn syncs with the host."""
    t = time_fn(fn, "cuda", MeasureConfig(reps=reps, min_reps=reps, warmup_ms=0.0, l2_flush=False, bootstrap=0))
    return t.extra.get("host_enqueue_ms", float("nan")) * 1e3


def kernel_times(V: int, B: int, dist: str = "flat", calls: int = 20, device: str = "cuda") -> str:
    """Per-kernel GPU µs of sample() at (V, B, dist) from torch.profiler (CUPTI), one line."""
    from torch.profiler import ProfilerActivity, profile

    T, k, p, mp = SETTINGS[dist]
    logits = make_logits(B, V, dist, torch.device(device), torch.Generator(device=device).manual_seed(0))
    sample(logits, T, k, p, mp, seed=1)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            sample(logits, T, k, p, mp, seed=i)
        torch.cuda.synchronize()
    got = [(e.key, e.count, e.device_time_total / e.count) for e in prof.key_averages() if e.count and e.device_time_total > 0]
    return f"V={V} B={B} {dist}: " + ", ".join(f"{name.replace('_split_', '')} {t:.1f}us" + (f" x{n // calls}" if n != calls else "")
                                             for name, n, t in got)


def compiled_kernels() -> str:
    """Registers, spills and warps of every kernel the direct-launch plans hold (occupancy)."""
    seen = {}
    for plan in kernels_sampling._PLANS.values():
        for ck in plan:
            key = (ck.name, ck.n_regs, ck.n_spills, ck.metadata.num_warps)
            seen[key] = seen.get(key, 0) + 1
    return "\n".join(f"  {n}: {r} regs, {s} spills, {w} warps" for (n, r, s, w) in sorted(seen))


def _tune_line(shape: dict, got: dict, top: int, modes_of) -> str:
    fmt = lambda r: "-" if r is None else f"{r[0]:.1f}g/{r[1]:.1f}e" if r[0] is not None else f"{r[1]:.1f}e"
    head = f"V={shape['V']} B={shape['B']} {shape['dist']}: torch {fmt(got.get('torch-sort'))} | auto {fmt(got.get('auto'))} | one-program {fmt(got.get('one-program'))}"
    split = sorted(((r[0] if r[0] is not None else r[1], name, r) for name, r in got.items() if r[3] is not None and r[2]),
                   key=lambda x: x[0])
    if not split:
        return head + " | no split setting timed"
    torch_g = (got.get("torch-sort") or (None,))[0]
    best = " ; ".join(f"{fmt(r)} {name}" + (f" (x{torch_g / us:.1f})" if torch_g else "") for us, name, r in split[:top])
    try:
        modes = modes_of(split[0][2][3]).tolist()
        settled = ", ".join(f"{SPLIT_MODES[m]}: {modes.count(m)}" for m in sorted(set(modes)) if m >= 0)
    except Exception as e:
        settled = f"? ({type(e).__name__})"
    return f"{head} | best {best} | rows settled {settled}"


if __name__ == "__main__":
    tune()
