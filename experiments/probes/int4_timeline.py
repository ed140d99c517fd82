"""Where an int4 GEMV call at M = 1 spends its time, seen from inside each warp (session 29).
Session 28 read the SASS (a warp's math waits for its step's last load) and paced the warps' first
loads (`MmaConfig.stagger`); what is left after the last data lands (the last warps' math, the
cross-warp sum) was never measured. A copy of `_int4_mma_kernel` (made from this tree's source at
run time) stamps %globaltimer in every warp:

  start            the program's first instruction
  loads begin      the stagger's spin is over (= start without it)
  step 0 data      step 0's last chunk (its weight word, x and scale) has landed (only in the
                   "+data" rows: the stamp waits on those loads, so the math of the step's
                   earlier chunks may wait too)
  step 0 math      step 0's last MMA is done
  last step data   the same for the warp's last step
  last step math   (the loop is done)
  summed           the cross-warp sum of the program's tile is done (one stamp a program)

Each stamp waits on the value it marks: the timer's read is predicated on that value, so ptxas
cannot issue it early. Times are µs from the call's first program start, (min, median, max) over
warps, medians over the calls of a stream graph (back to back, weight copies > 2x L2), beside the
stream time of the same kernel unstamped and a same-size copy stamped the same way
(decode_timeline_persistent.copy_timeline). "loads only" is int4_mma_limit.py's variant (no
dequantization or MMA: wrong results, timing only). Needs an sm_90 GPU:

    python experiments/probes/int4_timeline.py [--shapes 4096x4096,...] [--stagger 0,200]

(--stagger: the stagger values timed; the rule's by default.) Each variant is timed as well with
Triton's tl.sum across the warps in place of the one-barrier sum (", tl.sum"), the epilogue before
session 29.
"""
import dataclasses, inspect, os, statistics, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder: int4_pick, int4_mma_limit

import torch
import triton

import int4_pick  # its weights, cuBLAS timing and --shapes
import kernels.wo_matmul as wm
from _patched import import_source
from int4_mma_limit import variant_asm
from lab.benchmarks._common import stream_us

SHAPES = int4_pick.SHAPES if "--shapes" in sys.argv else [(4096, 4096), (4096, 14336), (14336, 4096)]
STAGGERS = [int(v) for v in sys.argv[sys.argv.index("--stagger") + 1].split(",")] if "--stagger" in sys.argv else None
NS = 8  # stamps a warp
# (asm variant, the data stamps, the one-barrier sum of kernels.wo_matmul._m1_sum_asm or Triton's tl.sum)
VARIANTS = [("base", False, True), ("base", False, False), ("base", True, True), ("loads_only", True, True), ("loads_only", True, False)]
STAMPS = ["start", "loads begin", "step 0 data", "step 0 math", "last step data", "last step math", "summed"]

HEADER = '''
import kernels.wo_matmul as _w
globals().update({k: v for k, v in vars(_w).items() if not k.startswith("__")})


@triton.jit
def _now(dep):
    """%globaltimer (ns) once the int32 dep is ready: the read is predicated on dep's value."""
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.eq.b32 p, $1, 0x5A3C96E1; @p mov.u64 $0, 0; @!p mov.u64 $0, %globaltimer; }",
        "=l,r", [dep], dtype=tl.int64, is_pure=False, pack=1)


'''

# (anchor in the kernel's source, what goes after it); each anchor must occur once
EDITS = [
    ("def _int4_mma_kernel(", "def _int4_mma_kernel_stamped("),  # replaces the anchor
    ("SUM_ASM: tl.constexpr,\n", "    ST, DATA: tl.constexpr,\n"),
    ("    pid = tl.program_id(0)\n",
     "    tid_s = tl.arange(0, NW * 32)\n    st_w = ST + (pid * NW + tid_s // 32) * 8\n    lead = tid_s % 32 == 0\n"
     "    t_start = _now(pid + tid_s * 0)\n    tl.store(st_w + 0, t_start, mask=lead)\n    tl.store(st_w + 1, t_start, mask=lead)\n"),
    ("        wp += waited * 128", None),  # the stamp goes after this line
    ("                if HALVES == 2:  # M = 9..16: every column of both halves\n", None),  # the data stamps go before it
    ("        wp += UNROLL * K_WARPS * 128\n", None),  # the stamps go before this line
    ("            tl.store(Y + col * stride_ym + row, v.to(Y.dtype.element_ty), mask=(col < M) & (row < N))\n",
     "            if hc == HALVES * N_COLS - 1:\n                vt = _now(v.to(tl.int32, bitcast=True))\n"
     "                tl.store(ST + pid * NW * 8 + 6 + ln * 0 + r0 * 0, vt, mask=(ln == 0) & (r0 == pid * ROW_TILES))\n"),
    ("        tl.store(Y + row, v.to(Y.dtype.element_ty), mask=(j < ROW_TILES * 16) & (row < N))\n",  # M = 1's one-barrier sum
     "        tl.store(ST + pid * NW * 8 + 6 + j * 0, _now(v.to(tl.int32, bitcast=True)), mask=j == 0)\n"),
]


def stamped_kernel():
    """`_int4_mma_kernel` of this tree with the stamps of EDITS, from a module written to a temp dir."""
    src = inspect.getsource(wm._int4_mma_kernel.fn)
    for anchor, after in EDITS:
        if src.count(anchor) != 1:
            raise SystemExit(f"int4_timeline: {anchor!r} occurs {src.count(anchor)} times in _int4_mma_kernel; "
                             "update EDITS to the kernel's source")
        if anchor.startswith("def "):
            src = src.replace(anchor, after)
        elif anchor.startswith("        wp += waited"):
            line = src[src.index(anchor):].split("\n", 1)[0] + "\n"
            src = src.replace(line, line + "        tl.store(st_w + 1, _now(waited + tid_s * 0), mask=lead)\n")
        elif anchor.startswith("                if HALVES == 2"):  # the step's last chunk: its word, x and scale
            src = src.replace(anchor, "                if DATA and u == UNROLL - 1:\n"
                                      "                    xd = xc if X_LANES else x_0.to(tl.int32)\n"
                                      "                    wd = _now(w0 ^ xd ^ sl.to(tl.int32, bitcast=True))\n"
                                      "                    tl.store(st_w + 2, wd, mask=lead & (i0 == 0))\n"
                                      "                    tl.store(st_w + 4, wd, mask=lead)\n" + anchor)
        elif anchor.startswith("        wp += UNROLL"):
            src = src.replace(anchor, "        am = _now(a0.to(tl.int32, bitcast=True))\n        tl.store(st_w + 3, am, mask=lead & (i0 == 0))\n"
                                      "        tl.store(st_w + 5, am, mask=lead)\n" + anchor)
        else:
            src = src.replace(anchor, anchor + after)
    return import_source("_int4_mma_stamped", HEADER + src)._int4_mma_kernel_stamped


def _pcts(xs):
    xs = sorted(xs)
    return xs[0], xs[len(xs) // 2], xs[-1]


def timeline(kernel, N, K, cfg, asm_variant, data, sum_asm, x, qms, ref):
    """(stream µs of the stamped calls, rel err of call 0, per-stamp (min, median, max) µs from each
    call's first start, medians over calls; the median gap from a call's last sum to the next call's
    first start; the stream µs of the same kernel unstamped)."""
    grid, meta = wm._mma_plan(1, N, K, qms[0].group_size, False, torch.bfloat16, cfg, False)
    assert meta["EVEN"] and meta["CHAIN"], "the stamps sit in the EVEN, CHAIN path (whole tiles, groups of 64/128)"
    asm, cons = variant_asm(asm_variant, (0, 2), meta["X_LANES"])
    meta = dict(meta, ASM=asm, CONSTRAINTS=cons, **({} if sum_asm else {"SUM_ASM": ""}))
    nw = cfg.row_tiles * cfg.k_warps
    nt, kc = triton.cdiv(N, wm.MMA_ROWS), triton.cdiv(K, wm.MMA_K)
    xk, sxm = x.view(torch.int64), x.stride(0) // 4
    ys = [torch.empty((1, N), dtype=x.dtype, device=x.device) for _ in qms]
    sts = [torch.zeros(grid[0] * nw * NS, dtype=torch.int64, device=x.device) for _ in qms]

    def call(q, y, st=None):
        args = (xk, q.qweight, q.scale, q.scale, y, 1, N, K, nt, kc, sxm, q.scale.stride(0), q.scale.stride(0), y.stride(0))
        if st is None:
            return wm._int4_mma_kernel[grid](*args, **meta)
        return kernel[grid](*args, **meta, ST=st, DATA=data)
    calls = [lambda q=q, y=y, st=st: call(q, y, st) for q, y, st in zip(qms, ys, sts)]
    calls[0]()
    torch.cuda.synchronize()
    err = ((ys[0].double() - ref).abs().max() / ref.abs().max()).item()
    plain = stream_us([lambda q=q, y=y: call(q, y) for q, y in zip(qms, ys)])
    us = stream_us(calls)  # every replay writes each call's stamps; the last replay's stay
    rows, starts, ends = [], [], []
    for st in sts:
        w = st.view(-1, NS).cpu().tolist()  # [programs · warps, NS]
        t0 = min(r[0] for r in w)
        summed = [r[6] for r in w[::nw]]
        starts.append(t0)
        ends.append(max(summed))
        row = {name: _pcts([r[j] - t0 for r in w]) for j, name in enumerate(STAMPS[:6]) if data or j not in (2, 4)}
        row["summed"] = _pcts([s - t0 for s in summed])
        rows.append(row)
    med = {k: tuple(statistics.median(r[k][i] for r in rows[1:]) / 1e3 for i in range(3)) for k in rows[0]}
    gaps = [b - a for a, b in zip(ends, starts[1:])]
    return us, err, med, statistics.median(gaps) / 1e3, plain


def main():
    from decode_timeline_persistent import copy_timeline
    kernel = stamped_kernel()
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), flush=True)
    for N, K in SHAPES:
        w, qm, qms, dq = int4_pick.int4_weight(N, K, dev)
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
        ref = x.double() @ dq.T
        rule = wm.pick_mma_config(1, N, K)
        cub = int4_pick.cublas_us(x, w)
        cus, neg, cmed, cgap, grid = copy_timeline(int(wm.bytes_moved(1, N, K, qm)))
        print(f"\nN={N} K={K}: cuBLAS {cub:.2f} µs (3x asks {cub / 3:.2f}); copy (torch.neg) {neg:.2f}, stamped Triton copy "
              f"{cus:.2f} ({grid} programs)", flush=True)
        for k, (lo, mid, hi) in cmed.items():
            print(f"    copy {k:13s} {lo:6.2f} {mid:6.2f} {hi:6.2f}")
        print(f"    {'-> next copy starts':18s} {cgap:6.2f} after its last program's loads", flush=True)
        for s in STAGGERS or [rule.stagger]:
            cfg = dataclasses.replace(rule, stagger=s)
            for variant, data, sum_asm in VARIANTS:
                us, err, med, gap, plain = timeline(kernel, N, K, cfg, variant, data, sum_asm, x, qms, ref)
                label = variant + (" +data" if data else "") + ("" if sum_asm else ", tl.sum")
                print(f"  {cfg}, {label}: unstamped {plain:.2f} µs, stamped {us:.2f} (err {err:.1e}"
                      f"{'' if variant == 'base' else ', expected wrong'}); µs from the call's first start (min, median, max over warps):")
                for k, (lo, mid, hi) in med.items():
                    print(f"    {k:18s} {lo:6.2f} {mid:6.2f} {hi:6.2f}")
                print(f"    {'-> next call starts':18s} {gap:6.2f} after the call's last sum", flush=True)
        del qms
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
