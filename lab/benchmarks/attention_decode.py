"""Benchmark suite: decode attention (one query per sequence), ours over a paged and over a
contiguous cache, beside torch SDPA's FLASH and cuDNN backends on the same KV held contiguously.

Full (GPU): KV length 1K…128K × batch 1…64 (combinations whose bf16 KV exceeds 8 GB are left
out), heads 32/8 (D = 128, Llama-3-8B-like) and 9/3 (D = 64, SmolLM2). Rows:
  impl=triton  kv=paged     bf16, blocks of P = 16 in shuffled physical order (a real allocator)
  impl=triton  kv=contiguous bf16, the [B, H_kv, S, D] cache as it is (block_table=None: sequence b is block b)
  impl=triton  kv=contiguous fp8 e4m3 (per-head scales) and int8 (per-token scales)
  impl=sdpa-flash / sdpa-cudnn  kv=contiguous bf16
  impl=copy-same-bytes  kv=contiguous: a plain copy of the bf16 rows' bytes (_common.copy_same_bytes),
      timed first and the same way, with the same bytes: the floor at this size. The copy bandwidth
      at 4 GB is not reachable by a kernel moving tens of MB (H200: a read-only kernel over 33.6 MB
      takes 9.8-10.0 µs, 3.35-3.44 TB/s, t ≈ 2.8 µs + bytes / 4.65 TB/s, so 3.63 TB/s at B = 1, 8K
      is out of reach of any kernel; a torch copy of the same bytes 10.1 µs). The triton bf16 and
      sdpa-cudnn rows record `frac_of_copy_same_bytes_stream` = copy / their `latency_stream` median.
Bytes = K and V read + q read + o written (kernels.attention_decode.bytes_moved): achieved GB/s
against the measured copy bandwidth is the figure of merit. `paged_vs_contiguous` records the
latency ratio of our kernel on the two layouts (lone CUDA-graph replays). On CUDA the bf16 rows are
timed three ways (lab.benchmarks._common.time_ways): eager launches (`latency_*`), one call per graph
replay (`latency_graph_*`), and back to back in one graph over KV copies larger than L2
(`latency_stream_*`: the goal's GB/s, without the graph's launch latency in every call). Errors: vs a float64 reference for sequence 0
(quantized rows: on the dequantized values, and separately vs the unquantized cache).
Small (CPU, interpreter): one tiny float32 shape.

`tune()` (GPU, one shot, < 2 minutes on an H200): for each shape of TUNE_SHAPES and both
contiguous-equivalent walks (HND blocks of 16 in order, and the one-block view), times split
counts, fused vs two-kernel merge and tile configs with CUDA-graph replays over KV copies that
together exceed the L2, beside SDPA cuDNN/flash; prints one line per shape and walk and a summary
from which kernels.attention_decode's POLICY, TILE_BYTES and STAGES are set.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import kernels.attention_decode as ad
from kernels.attention_decode import (
    DecodeConfig,
    KVLayout,
    bytes_moved,
    decode_reference,
    flops,
    paged_decode_attention,
    paged_from_contiguous,
    quantize_kv,
)
from lab.benchmarks._common import WAYS, bench_dtype, bench_measure, copy_same_bytes, input_copies, rel_err, stream_us, time_ways
from lab.records import Recorder

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    HAS_SDPA_KERNEL = True
except ImportError:
    HAS_SDPA_KERNEL = False

KV_CAP_BYTES = 8e9
PAGE = 16
QUANT = {"fp8": (torch.float8_e4m3fn, "head"), "int8": (torch.int8, "token")}


def shapes(size: str) -> list[tuple[int, int, int, int, int]]:
    """(B, H, H_kv, L, D)."""
    if size == "small":
        return [(2, 4, 2, 40, 32)]
    out = []
    for H, H_kv, D in ((32, 8, 128), (9, 3, 64)):
        for L in (1024, 8192, 32768, 131072):
            for B in (1, 16, 64):
                if 2 * B * L * H_kv * D * 2 <= KV_CAP_BYTES:
                    out.append((B, H, H_kv, L, D))
    return out


def _time(rec: Recorder, fns: list, measure, cost: dict, floor: dict | None = None) -> dict[str, float]:
    """fns[i] makes the same call on KV copy i: timed as eager launches, as a lone CUDA-graph replay and
    back to back in one graph (_common.time_ways: `latency[_graph|_stream]_*`, the stream rows
    are the goal's GB/s). Returns time_ways' medians. `floor`: copy-same-bytes' medians at this
    point, from which `frac_of_copy_same_bytes_stream` is recorded."""
    ways = time_ways(rec, fns, measure, cost)
    if floor and "_stream" in floor and "_stream" in ways:
        rec.metric("frac_of_copy_same_bytes_stream", floor["_stream"] / ways["_stream"], "",
                   method=f"copy-same-bytes / this, median latency ({WAYS['_stream']}): the fraction of the bandwidth "
                          "a plain copy of the same bytes reaches at this size")
    return ways


def _lone(ways: dict[str, float]) -> float:
    """The lone CUDA-graph replay's median on CUDA (what paged_vs_contiguous compares), the eager one on the CPU."""
    return ways.get("_graph", ways[""])


def _kv_copies(k: torch.Tensor, v: torch.Tensor, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return input_copies(lambda i: (k, v) if i == 0 else (k.clone(), v.clone()), 2 * k.numel() * k.element_size(), device)


def _rel_err(o: torch.Tensor, ref: torch.Tensor) -> float:
    return rel_err(o[:1], ref)  # the reference covers sequence 0


def run(rec: Recorder, device: torch.device, size: str) -> None:
    device = torch.device(device)
    dtype = bench_dtype(device)
    measure = bench_measure(rec, device)
    gen = torch.Generator(device=device).manual_seed(0)
    for B, H, H_kv, L, D in shapes(size):
        cols = dict(kernel="attention_decode", B=B, H=H, H_kv=H_kv, L=L, D=D, dtype=str(dtype).removeprefix("torch."))
        with rec.point(**cols):
            q = torch.randn(B, H, D, device=device, dtype=dtype, generator=gen)
            k = torch.randn(B, H_kv, L, D, device=device, dtype=dtype, generator=gen)
            v = torch.randn(B, H_kv, L, D, device=device, dtype=dtype, generator=gen)
            lens = torch.full((B,), L, dtype=torch.int32, device=device)
            contiguous = paged_from_contiguous(k, v, lens)  # zero-copy: one block of P = L per sequence, no block table
            ref = decode_reference(q[:1], k[:1], v[:1], None, lens[:1])  # [1, H, D] float64
            method = "max|out-ref|/max|ref| vs float64 reference on the benchmark inputs (sequence 0)"
            cost = lambda kv_bytes, scale_bytes=0: dict(
                flops=flops(H, D, B * L),
                bytes_moved=bytes_moved(B, H, H_kv, D, B * L, kv_bytes, q.element_size(), scale_bytes))
            out = torch.empty_like(q)
            latency = {}
            floor = {}  # copy-same-bytes' medians: timed first

            with rec.point(impl="copy-same-bytes", kv="contiguous", page_size=L, kv_dtype=cols["dtype"]):
                nbytes = cost(k.element_size())["bytes_moved"]
                floor.update(_time(rec, copy_same_bytes(nbytes, device), measure, dict(bytes_moved=nbytes)))

            with rec.point(impl="triton", kv="paged", page_size=PAGE, kv_dtype=cols["dtype"]):
                pages = [paged_from_contiguous(kc, vc, lens, block_size=PAGE, shuffle=True, generator=torch.Generator().manual_seed(B * L))
                         for kc, vc in _kv_copies(k, v, device)]
                fns = [lambda p=p: paged_decode_attention(q, **p.kwargs(), out=out) for p in pages]
                rec.metric("max_rel_err", _rel_err(fns[0](), ref), "", method=method)
                latency["paged"] = _lone(_time(rec, fns, measure, cost(k.element_size()), floor))
                del pages, fns

            with rec.point(impl="triton", kv="contiguous", page_size=L, kv_dtype=cols["dtype"]):
                views = [contiguous] + [paged_from_contiguous(kc, vc, lens) for kc, vc in _kv_copies(k, v, device)[1:]]
                fns = [lambda c=c: paged_decode_attention(q, **c.kwargs(), out=out) for c in views]
                rec.metric("max_rel_err", _rel_err(fns[0](), ref), "", method=method)
                latency["contiguous"] = _lone(_time(rec, fns, measure, cost(k.element_size()), floor))
                del views, fns
                rec.metric("paged_vs_contiguous", latency["paged"] / latency["contiguous"], "x",
                           method=f"median latency (CUDA-graph replay on GPU), paged P={PAGE} shuffled / contiguous view, same kernel")

            for name, (qdtype, per) in QUANT.items():
                with rec.point(impl="triton", kv="contiguous", page_size=L, kv_dtype=name, scale=f"per {per}"):
                    kq, ks = quantize_kv(k, qdtype, per, KVLayout.HND)  # [B, H_kv, L, D] is HND with P = L
                    vq, vs = quantize_kv(v, qdtype, per, KVLayout.HND)
                    fn = lambda: paged_decode_attention(q, kq, vq, None, lens, k_scale=ks, v_scale=vs, out=out)
                    o = fn()
                    sl = (lambda s: s[:1]) if per == "token" else (lambda s: s)
                    ref_q = decode_reference(q[:1], kq[:1], vq[:1], None, lens[:1], k_scale=sl(ks), v_scale=sl(vs))
                    rec.metric("max_rel_err", _rel_err(o, ref_q), "", method=method + ", dequantized values")
                    rec.metric("max_rel_err_vs_unquantized_kv", _rel_err(o, ref), "", method=method + ", vs the unquantized cache")
                    _time(rec, [fn], measure, cost(kq.element_size(), 4 if per == "token" else 0))
                    del kq, vq, ks, vs, fn

            for name, attr in (("sdpa-flash", "FLASH_ATTENTION"), ("sdpa-cudnn", "CUDNN_ATTENTION")):
                with rec.point(impl=name, kv="contiguous", page_size=L, kv_dtype=cols["dtype"]):
                    if device.type != "cuda" or not HAS_SDPA_KERNEL or not hasattr(SDPBackend, attr):
                        rec.skipped(f"{name} needs CUDA and torch.nn.attention.SDPBackend.{attr}")
                        continue
                    q4 = q[:, :, None]  # [B, H, 1, D]
                    fns = [lambda kc=kc, vc=vc: F.scaled_dot_product_attention(q4, kc, vc, enable_gqa=H != H_kv) for kc, vc in _kv_copies(k, v, device)]
                    with sdpa_kernel(getattr(SDPBackend, attr)):
                        try:
                            o = fns[0]()
                        except RuntimeError as e:
                            rec.skipped(f"{name} cannot run B={B} H={H}/{H_kv} L={L} D={D}: {str(e).splitlines()[0][:200]}")
                            continue
                        rec.metric("max_rel_err", _rel_err(o[:, :, 0], ref), "", method=method)
                        _time(rec, fns, measure, cost(k.element_size()), floor if name == "sdpa-cudnn" else None)
                    del fns
            del q, k, v, contiguous
            if device.type == "cuda":
                torch.cuda.empty_cache()


# ---- tuning (GPU, one shot) -------------------------------------------------------------------
TUNE_SHAPES = [(H, H_kv, D, B, L) for H, H_kv, D in ((32, 8, 128), (9, 3, 64)) for B in (1, 4, 16) for L in (8192, 32768, 131072)]
TUNE_WALKS = ("paged", "contiguous")  # HND blocks of 16 in physical order; the one-block view
TUNE_CONFIGS = [DecodeConfig(n, w, s) for n, w, s in
                ((32, 4, 5), (64, 4, 2), (64, 4, 3), (64, 4, 5), (128, 4, 2), (128, 4, 3), (128, 4, 5), (128, 8, 5))]
TUNE_PROGRAMS_PER_SM = (1, 2, 3, 4, 6, 8)  # split counts tried: ceil(k·SMs / (B·H_kv)), splits >= 32 tokens
COPY_BW = 4.27e12  # bytes/s, the H200's measured copy bandwidth: the "% of copy" column
SMEM_BYTES = 227 * 1024  # per SM (H100/H200): configs needing more are not tried
OLD_CONFIG = {"contiguous": DecodeConfig(64, 4, 3), "paged": DecodeConfig(64, 4, 5)}  # session 4's defaults: these tiles,


def _old_splits(B: int, H_kv: int, L: int, sms: int) -> int:
    """... ceil(2·SMs / (B·H_kv)) splits (a third program on some SMs) and the two-kernel merge."""
    return max(1, min(math.ceil(2 * sms / (B * H_kv)), math.ceil(L / 256), 512))


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


@dataclass
class _TuneShape:
    """One shape's inputs, shared by its walks: KV copies (contiguous [B, H_kv, L, D]) whose
    total exceeds twice the L2, q, and the float64 reference for sequence 0."""

    H: int
    H_kv: int
    D: int
    B: int
    L: int
    dtype: torch.dtype
    device: torch.device
    l2: int
    gen: torch.Generator

    def __post_init__(self):
        B, H, H_kv, L, D = self.B, self.H, self.H_kv, self.L, self.D
        kv_bytes = 2 * B * H_kv * L * D * self.dtype.itemsize
        n = int(min(64, max(2, math.ceil(2 * self.l2 / kv_bytes) + 1)))  # (n - 1) other copies >= 2·L2 between reuses
        r = lambda *shape: torch.randn(*shape, device=self.device, dtype=self.dtype, generator=self.gen)
        self.kv = [(r(B, H_kv, L, D), r(B, H_kv, L, D)) for _ in range(n)]
        self.q = r(B, H, D)
        self.lens = torch.full((B,), L, dtype=torch.int32, device=self.device)
        table = torch.zeros(1, 1, dtype=torch.int32, device=self.device)
        k0, v0 = self.kv[0]
        self.ref = decode_reference(self.q[:1], k0[:1], v0[:1], table, self.lens[:1])  # [1, H, D] float64
        self.nbytes = bytes_moved(B, H, H_kv, D, B * L, self.dtype.itemsize, self.dtype.itemsize)

    def label(self) -> str:
        return f"H={self.H}/{self.H_kv} D={self.D} B={self.B:<2} L={self.L:<6}"

    def gbps(self, us: float) -> float:
        return self.nbytes / us / 1e3


def tune(shapes_=None, walks=TUNE_WALKS, configs=None, budget_s: float = 110.0, copy_bw: float = COPY_BW,
         device="cuda", dtype=torch.bfloat16) -> list[dict]:
    """Sweep split counts, fused vs two-kernel merge and tile configs on this GPU (bf16, every
    candidate checked against decode_reference on sequence 0: rel err < 2e-2) and print, per shape
    and walk, the best candidate, the two-kernel merge at the best split count and config, the
    current defaults (POLICY + default_config), session 4's defaults ("old") and
    SDPA cuDNN/flash on the contiguous copies. Search per shape and walk: split counts at the
    default config; configs at the two best split counts; split counts again at the best config;
    the two-kernel merge. Past `budget_s` seconds only split counts are swept. Ends with a summary
    (winning programs per SM, fused vs two-kernel, winning configs). Returns one row per timed
    candidate; a candidate, walk or shape that fails prints "skip" and the sweep goes on.
    device="cpu", dtype=torch.float32 under TRITON_INTERPRET=1: a smoke run of the logic (tiny shapes)."""
    dev = torch.device(device)
    t0 = time.perf_counter()
    cuda = dev.type == "cuda"
    sms = torch.cuda.get_device_properties(dev).multi_processor_count if cuda else 4  # the interpreter's stand-in
    l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 60 * 2**20) if cuda else 2**20
    name = torch.cuda.get_device_name(dev) if cuda else "cpu (interpreter: times mean nothing)"
    gen = torch.Generator(device=dev).manual_seed(0)
    rows, best = [], []
    print(f"tune: {name}, {sms} SMs, L2 {l2 / 2**20:.0f} MB; GB/s and % of {copy_bw / 1e12:.2f} TB/s copy bandwidth, "
          f"per call, from CUDA-graph replays over KV copies > 2·L2; {ad.POLICY}", flush=True)
    for H, H_kv, D, B, L in shapes_ or TUNE_SHAPES:
        try:
            shape = _TuneShape(H, H_kv, D, B, L, dtype, dev, l2, gen)
            sdpa = _tune_sdpa(shape)
        except Exception as e:  # out of memory, say: the next shape still runs
            print(f"H={H}/{H_kv} D={D} B={B} L={L}: skip ({_why(e)})", flush=True)
            continue
        for walk in walks:
            try:
                r = _tune_walk(shape, walk, configs or TUNE_CONFIGS, sms, copy_bw, budget_s - (time.perf_counter() - t0), rows)
            except Exception as e:
                print(f"{shape.label()} {walk}: skip ({_why(e)})", flush=True)
                continue
            if r is not None:
                best.append(r)
                print(r.pop("line") + f" | {sdpa}", flush=True)
        del shape
        if cuda:
            torch.cuda.empty_cache()
    _tune_summary(best, time.perf_counter() - t0)
    return rows


def _tune_walk(shape: _TuneShape, walk: str, configs, sms: int, copy_bw: float, budget_left_s: float, rows: list) -> dict | None:
    """The sweep at one shape and walk; appends every timed candidate to rows and returns the best
    one with the printed line (None if nothing ran)."""
    B, H_kv, D, L, q = shape.B, shape.H_kv, shape.D, shape.L, shape.q
    if walk == "paged":
        caches = [paged_from_contiguous(k, v, shape.lens, block_size=PAGE) for k, v in shape.kv]  # blocks in order
    else:
        caches = [paged_from_contiguous(k, v, shape.lens) for k, v in shape.kv]  # one block per sequence
    out = torch.empty_like(q)
    cols = dict(H=shape.H, H_kv=H_kv, D=D, B=B, L=L, walk=walk)
    timed = {}  # (splits, fused, config) -> µs, or None when it failed

    def cand(splits: int, fused: bool, cfg: DecodeConfig) -> float | None:
        fused = fused or splits == 1  # one split: no merge at all, one kernel either way
        key = (splits, fused, cfg)
        if key in timed:
            return timed[key]
        timed[key] = None
        what = f"s={splits} {'fused' if fused else 'two-kernel'} {cfg}"
        if cfg.shared_bytes(D, shape.dtype.itemsize, walk == "paged") + 8192 > SMEM_BYTES:
            return None  # more shared memory than an SM has: cannot launch
        try:
            fn = lambda c: paged_decode_attention(q, **c.kwargs(), out=out, num_splits=splits, fused_merge=fused, config=cfg)
            err = _rel_err(fn(caches[0]), shape.ref)
            if not err < 2e-2:
                print(f"  WRONG {what}: rel err {err:.3g}", flush=True)
                return None
            us = stream_us([lambda c=c: fn(c) for c in caches])
        except Exception as e:  # a config that does not compile or launch here
            print(f"  skip {what}: {_why(e)}", flush=True)
            return None
        timed[key] = us
        rows.append(dict(cols, splits=splits, fused=fused, config=str(cfg), us=us, GBps=shape.gbps(us),
                         pct_copy=100 * shape.nbytes / (us * 1e-6) / copy_bw, rel_err=err, programs_per_sm=B * H_kv * splits / sms))
        return us

    def fastest(pred=lambda s, f, c: True):
        ran = [(us, s, f, c) for (s, f, c), us in timed.items() if us is not None and pred(s, f, c)]
        return min(ran, key=lambda r: r[0]) if ran else None

    # what the launcher takes by default (read at call time, like the launcher, so a patched knob is what runs)
    policy_s, cfg0 = ad.decode_plan(B, H_kv, L, D, shape.dtype.itemsize, shape.device, paged=walk == "paged", block_size=PAGE)
    splits = sorted({max(1, min(math.ceil(k * sms / (B * H_kv)), L // 32)) for k in TUNE_PROGRAMS_PER_SM} | {policy_s})
    for s in splits:
        cand(s, True, cfg0)
    policy_us = cand(policy_s, ad.default_fused_merge(policy_s, shape.device), cfg0)
    old_us = cand(_old_splits(B, H_kv, L, sms), False, OLD_CONFIG[walk])
    swept = budget_left_s > 0
    if swept:
        top = sorted((us, s) for (s, f, c), us in timed.items() if us is not None and f and c == cfg0)[:2]
        for cfg in configs:
            for _, s in top:
                cand(s, True, cfg)
        best_cfg = (fastest(lambda s, f, c: f) or (0, 0, 0, cfg0))[3]
        for s in splits:
            cand(s, True, best_cfg)
    if fastest() is None:
        print(f"{shape.label()} {walk}: skip (no candidate ran)", flush=True)
        return None
    _, s_f, _, c_f = fastest(lambda s, f, c: f) or fastest()
    two_us = cand(s_f, False, c_f) if s_f > 1 else None
    us, s, f, c = fastest()
    fmt = lambda t: "-" if t is None else f"{t:.1f}us {shape.gbps(t):.0f}GB/s"
    line = (f"{shape.label()} {walk:<10} best s={s} ({B * H_kv * s / sms:.1f}/SM, {math.ceil(L / s)} tok) "
            f"{'no merge' if s == 1 else 'fused' if f else '2-kernel'} {c}: {us:.1f}us {shape.gbps(us):.0f}GB/s "
            f"{100 * shape.nbytes / (us * 1e-6) / copy_bw:.0f}% | 2-kernel {fmt(two_us)} | policy s={policy_s} {fmt(policy_us)} | "
            f"old {fmt(old_us)}" + ("" if swept else " | budget spent: configs not swept"))
    return dict(cols, splits=s, fused=f, config=str(c), us=us, programs_per_sm=B * H_kv * s / sms, tokens_per_split=L / s,
                fused_us=timed.get((s_f, True, c_f)), two_kernel_us=two_us, line=line)


def _tune_sdpa(shape: _TuneShape) -> str:
    """'sdpa cudnn X flash Y GB/s' on the contiguous copies (the same values), or why not."""
    if not HAS_SDPA_KERNEL:
        return "sdpa: not run (no torch.nn.attention.sdpa_kernel)"
    q4 = shape.q[:, :, None]  # [B, H, 1, D]
    parts = []
    for name, attr in (("cudnn", "CUDNN_ATTENTION"), ("flash", "FLASH_ATTENTION")):
        if not hasattr(SDPBackend, attr):
            parts.append(f"{name} n/a")
            continue
        try:
            with sdpa_kernel(getattr(SDPBackend, attr)):
                fn = lambda k, v: F.scaled_dot_product_attention(q4, k, v, enable_gqa=shape.H != shape.H_kv)
                err = _rel_err(fn(*shape.kv[0])[:, :, 0], shape.ref)
                us = stream_us([lambda k=k, v=v: fn(k, v) for k, v in shape.kv])
            parts.append(f"{name} {shape.gbps(us):.0f}" + ("" if err < 2e-2 else f" (rel err {err:.2g})"))
        except Exception as e:
            parts.append(f"{name} skip ({type(e).__name__})")
    return "sdpa " + " ".join(parts) + " GB/s"


def _tune_summary(best: list[dict], elapsed: float) -> None:
    """What to set in kernels.attention_decode: the programs per SM and split lengths that won
    (POLICY), how often and by how much the fused merge won (POLICY.fused_merge_up_to, _pdl), and the
    winning configs per walk (TILE_BYTES, STAGES)."""
    if not best:
        print(f"tune: nothing ran ({elapsed:.0f} s)")
        return
    by_work = defaultdict(list)
    for r in best:
        by_work[r["B"] * r["H_kv"]].append(f"{r['programs_per_sm']:.1f}/{r['tokens_per_split']:.0f}")
    print("best programs per SM / tokens per split, by B·H_kv: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(by_work.items())))
    pairs = [(r["fused_us"], r["two_kernel_us"]) for r in best if r["fused_us"] and r["two_kernel_us"]]
    if pairs:
        gain = [t - f for f, t in pairs]
        print(f"fused merge faster on {sum(g > 0 for g in gain)} of {len(pairs)} (shape, walk); two-kernel minus fused: "
              f"median {statistics.median(gain):+.1f}us, min {min(gain):+.1f}us, max {max(gain):+.1f}us")
    for walk in sorted({r["walk"] for r in best}):
        wins = Counter(r["config"] for r in best if r["walk"] == walk)
        print(f"best configs ({walk}): " + ", ".join(f"{c} ×{n}" for c, n in wins.most_common()))
    print(f"tune: {elapsed:.0f} s")


if __name__ == "__main__":
    tune()
