"""Where a batch-1 call of the persistent decode kernel (kernels/attention_decode_hopper.py) spends
its time, seen from inside, beside a copy of the same bytes seen the same way. Session 12's
experiments/probes/decode_timeline.py did this for the split kernel; the persistent kernel, which
the launcher takes at batch 1 since session 19, was never looked at from inside.

A copy of `_decode_persistent` and of `_attend_tile_t` (made from their source at run time, so
they are the kernel of this tree) stamps %globaltimer in every program: at its start, once its
barriers are set up, its first items located and its prologue's loads issued, when its first
item's query rows and first tile have landed, when its last tile has landed, at each step of that
tile's math (s = K q, the max across warps, P in shared memory, O += V P; each stamp waits on the
value it marks), and after its last partial is stored. The merge is decode_timeline.py's stamped
copy of the merge kernel (16 dims of one head a program, one warp, under PDL, as the launcher's):
its start, its wake from the PDL wait, its loads, its output; beside it a Gluon merge whose
reductions over the splits stay in registers (no layout conversion through shared memory). A Triton copy kernel (negate, as the suite's copy-same-bytes row) stamps each
program's start and the arrival of its loads. Every call in the stream graph has its own stamps,
so the gap from one call's end to the next call's first program is seen too. Needs an sm_90 GPU:

    python experiments/probes/decode_timeline_persistent.py [H,H_kv,L ...]
"""
import contextlib, inspect, os, statistics, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

import torch
import triton
import triton.language as tl

import kernels.attention_decode as ad
import kernels.attention_decode_hopper as hopper
from experiments.probes._decode_case import decode_case
from experiments.probes._patched import import_source
from experiments.probes.decode_timeline import _merge_stamped, _pcts, _stamp
from lab.benchmarks._common import input_copies, rel_err, stream_us

SHAPES = [(32, 8, 8192), (9, 3, 8192), (9, 3, 5632), (9, 3, 32768), (32, 8, 1024)]
NS = 16  # stamps a program
DECODE_STAMPS = ["start", "prologue issued", "q landed", "tile 0 landed", "last tile landed", "last math done", "last stored",
                 "barriers ready", "items located", "prologue loads", "last s = K q", "last max", "last P shared", "last O += V P"]
ORDER = [0, 7, 8, 9, 1, 2, 3, 4, 10, 11, 12, 13, 5, 6]  # the order printed
MERGE_STAMPS = ["merge start", "merge woke", "merge loaded", "merge done"]

HEADER = '''
import kernels.attention_decode_hopper as _h
globals().update({k: v for k, v in vars(_h).items() if not k.startswith("__")})


@gluon.jit
def _stamp_g(st, j: gl.constexpr, dep, num_warps: gl.constexpr):
    """st[j] = %globaltimer once the scalar dep is ready (one thread stores it)."""
    lanes = _lanes(num_warps)
    t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [lanes * 0 + dep], dtype=gl.int64, is_pure=False, pack=1)
    gl.store(st + j + lanes * 0, t, mask=lanes == 0)


@gluon.jit
def _stamp_on1(st, j: gl.constexpr, x, layout: gl.constexpr):
    """st[j] = %globaltimer once element 0 of the 1-D float32 x (in `layout`) is ready."""
    r = gl.arange(0, x.type.shape[0], layout=layout)
    t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [x.to(gl.int32, bitcast=True)], dtype=gl.int64,
                                  is_pure=False, pack=1)
    gl.store(st + j + r * 0, t, mask=r == 0)


@gluon.jit
def _stamp_on(st, j: gl.constexpr, x, layout: gl.constexpr):
    """st[j] = %globaltimer once element [0, 0] of the 2-D float32 x (in `layout`) is ready."""
    R: gl.constexpr = x.type.shape[0]
    C: gl.constexpr = x.type.shape[1]
    r = gl.arange(0, R, layout=gl.SliceLayout(1, layout))[:, None]
    c = gl.arange(0, C, layout=gl.SliceLayout(0, layout))[None, :]
    t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [x.to(gl.int32, bitcast=True)], dtype=gl.int64,
                                  is_pure=False, pack=1)
    gl.store(st + j + r * 0 + c * 0, t, mask=(r == 0) & (c == 0))


@gluon.jit
def _gdc_wait(num_warps: gl.constexpr):
    gl.inline_asm_elementwise("griddepcontrol.wait; mov.u32 $0, $1;", "=r,r", [_lanes(num_warps)], dtype=gl.int32, is_pure=False,
                              pack=1)


@gluon.jit
def _merge_g_stamped(PO, PM, PL, O, ST, num_splits, ml_stride, HEAD_DIM: gl.constexpr, SPLITS: gl.constexpr,
                     DSLICE: gl.constexpr, num_warps: gl.constexpr):
    """The merge with its reductions over splits in registers: one warp, lane (split half, dim) holds
    SPLITS / (32 / DSLICE) splits of one dim, so a reduction is in-thread adds and one or two
    shuffles, and m, l and the partials share one layout (no conversion through shared memory)."""
    TPS: gl.constexpr = 32 // DSLICE  # lanes along the splits
    layout: gl.constexpr = gl.BlockedLayout([SPLITS // TPS, 1], [TPS, DSLICE], [1, 1], [0, 1])
    h = gl.program_id(0)
    part = gl.program_id(1)
    st = ST + (h * gl.num_programs(1) + part) * 8
    _stamp_g(st, 0, h, num_warps)
    _gdc_wait(num_warps)
    _stamp_g(st, 1, h, num_warps)
    s = gl.arange(0, SPLITS, layout=gl.SliceLayout(1, layout))
    d = part * DSLICE + gl.arange(0, DSLICE, layout=gl.SliceLayout(0, layout))
    ok = s < num_splits
    m = gl.load(PM + h * ml_stride + s, mask=ok, other=float("-inf"), cache_modifier=".cg")
    l = gl.load(PL + h * ml_stride + s, mask=ok, other=0.0, cache_modifier=".cg")
    a = gl.load(PO + (h * num_splits + s)[:, None] * HEAD_DIM + d[None, :], mask=ok[:, None], other=0.0, cache_modifier=".cg")
    _stamp_on(st, 2, a, layout)
    mx = gl.max(m, 0)
    w = gl.exp2(m - mx)
    o = gl.sum(w[:, None] * a, 0) / gl.sum(w * l, 0)
    _stamp_on1(st, 3, o, gl.SliceLayout(0, layout))
    gl.store(O + h * HEAD_DIM + d, o.to(O.dtype.element_ty))


'''

# (anchor in the kernel's source, what goes after it); each anchor must occur once
EDITS = [
    ("def _decode_persistent(", None),  # renamed below
    ("qk_scale, BLOCK_N: gl.constexpr", "qk_scale, ST, BLOCK_N: gl.constexpr"),
    ("    _launch_dependents(num_warps)\n", "    st = ST + pid * 16\n    _stamp_g(st, 0, pid, num_warps)\n"),
    ("    q_ready = _barriers(2)  # an item's query rows have landed\n", "    _stamp_g(st, 7, pid, num_warps)\n"),
    ("    key_c = cur_chunk * TILES * BLOCK_N  # the current item's first key\n", None),  # stamp 8 before it
    ("    if STAGES - 1 < TILES:  # the next tile to issue\n", None),  # stamp 9 before it
    ("_attend_tile_t(q_bufs.index(slot),", "_attend_tile_t_stamped(st, q_bufs.index(slot),"),
    ("    n = 0  # tiles consumed\n", "    _stamp_g(st, 1, pid, num_warps)\n"),
    ("        mbarrier.wait(q_ready.index(slot), (seq // 2) & 1)\n", "        if seq == 0:\n            _stamp_g(st, 2, pid, num_warps)\n"),
    ("            mbarrier.wait(ready.index(s), (n // STAGES) & 1)\n",
     "            if n == 0:\n                _stamp_g(st, 3, pid, num_warps)\n            _stamp_g(st, 4, n, num_warps)\n"),
    ("            n += 1\n", "            _stamp_on(st, 5, acc, s_layout)\n"),
    ("        seq += 1\n", "        _stamp_g(st, 6, seq, num_warps)\n"),
]


ATTEND_EDITS = [
    ("def _attend_tile_t(", "def _attend_tile_t_stamped(st, "),
    ("use_acc=False)\n", "    _stamp_on(st, 10, sc, s_layout)\n"),
    ("    m_new = gl.maximum(m_i, gl.max(sc, 0))\n", "    _stamp_on1(st, 11, m_new, gl.SliceLayout(0, s_layout))\n"),
    ("before the warpgroup reads them\n", "    _stamp_g(st, 12, key0, num_warps)\n"),
    ("    acc = warpgroup_mma(v_t.permute((1, 0)), p_s.permute((1, 0)), acc)\n", "    _stamp_on(st, 13, acc, s_layout)\n"),
]


def stamped_kernel():
    """`_decode_persistent` of this tree with the stamps of EDITS, from a module written to a temp dir."""
    src = inspect.getsource(hopper._decode_persistent.fn)
    for anchor, after in EDITS:
        if src.count(anchor) != 1:
            raise SystemExit(f"decode_timeline_persistent: {anchor!r} occurs {src.count(anchor)} times in _decode_persistent; "
                             "update EDITS to the kernel's source")
        if after is None:
            before = {"key_c": "    _stamp_g(st, 8, pid, num_warps)\n", "    if STAGES": "    _stamp_g(st, 9, pid, num_warps)\n"}
            new = next((b + anchor for k, b in before.items() if anchor.lstrip().startswith(k.lstrip())), "def _decode_persistent_stamped(")
            src = src.replace(anchor, new)
        elif after.startswith("qk_scale") or after.startswith("_attend"):
            src = src.replace(anchor, after)
        elif anchor == "            n += 1\n":  # the math stamp goes before the count
            src = src.replace(anchor, after + anchor)
        else:
            src = src.replace(anchor, anchor + after)
    attend = inspect.getsource(hopper._attend_tile_t.fn)
    for anchor, after in ATTEND_EDITS:
        if attend.count(anchor) != 1:
            raise SystemExit(f"decode_timeline_persistent: {anchor!r} occurs {attend.count(anchor)} times in _attend_tile_t")
        attend = attend.replace(anchor, after if anchor.startswith("def ") else anchor + after)
    mod = import_source("_decode_persistent_stamped", HEADER + attend + "\n\n" + src)
    return mod._decode_persistent_stamped, mod._merge_g_stamped


@triton.jit
def _copy_stamped(S, Dst, ST, n, BLOCK: tl.constexpr):
    """Dst = -S (the suite's copy-same-bytes is torch.neg), BLOCK elements a program; stamps: start,
    loads landed (the stamp waits on the first element)."""
    pid = tl.program_id(0)
    st = ST + pid * 2
    _stamp(st, 0, pid)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(S + offs, mask=offs < n)
    t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [x.to(tl.int16, bitcast=True).to(tl.int32)],
                                  dtype=tl.int64, is_pure=False, pack=1)
    tl.store(st + 1 + offs * 0, t, mask=offs == pid * BLOCK)
    tl.store(Dst + offs, -x, mask=offs < n)


@contextlib.contextmanager
def _stamping(kernel, merge, st_d, st_m):
    """The launcher's own call (`hopper._run`: its arguments, descriptors and plan), with the
    stamped kernel and merge in place of the real ones: each gets its stamp buffer appended."""
    class _Grid:
        def __getitem__(self, grid):
            return lambda *args, **meta: kernel[grid](*args, st_d, **meta)

    def launch_merge(po, pm, pl, out, splits, ml_stride, warm_only=False):
        assert not warm_only
        B, H, D = out.shape
        if merge is None:
            _merge_stamped[(H, D // 16)](po, pm, pl, out, st_m, splits, ml_stride, HEAD_DIM=D, CHUNK=triton.next_power_of_2(splits),
                                         DSLICE=16, CG=True, num_warps=1, launch_pdl=True)
        else:
            merge[(H, D // 16)](po, pm, pl, out, st_m, splits, ml_stride, HEAD_DIM=D, SPLITS=max(2, triton.next_power_of_2(splits)),
                                DSLICE=16, num_warps=1, launch_pdl=True)

    saved = hopper._decode_persistent, ad.launch_merge
    hopper._decode_persistent, ad.launch_merge = _Grid(), launch_merge
    try:
        yield
    finally:
        hopper._decode_persistent, ad.launch_merge = saved


def decode_timeline(case, kernel, gluon_merge=None):
    """(stream µs, rel err, per-stamp (min, median, max) µs from each call's first program start,
    medians over calls; and the gap from a call's merge output to the next call's first program)."""
    q = case.q
    B, H, D = q.shape
    assert B == 1, "the stamped merge takes batch 1"
    c0 = case.caches[0]
    p = hopper.plan(B, c0.k_cache.shape[1], c0.capacity, D, ad._sm_count(q.device))
    if p is None:
        return None
    calls, stamps, outs = [], [], []
    for c in case.caches:
        st_d = torch.zeros(p.programs * NS, device=q.device, dtype=torch.int64)
        st_m = torch.zeros(H * (D // 16) * 8, device=q.device, dtype=torch.int64)
        out = torch.empty_like(q)
        stamps.append((st_d, st_m))
        outs.append(out)

        def call(c=c, st_d=st_d, st_m=st_m, out=out):
            with _stamping(kernel, gluon_merge, st_d, st_m):
                hopper._run(q, c.k_cache, c.v_cache, c.block_table, c.seq_lens, D ** -0.5, out, p)
        calls.append(call)
    calls[0]()
    err = rel_err(outs[0], case.ref)
    us = stream_us(calls)  # the graph's replays write every call's stamps, the last replay's stay
    per_call, gaps = [], []
    ends, starts = [], []
    for st_d, st_m in stamps:
        d = st_d.view(-1, NS)[:, :len(DECODE_STAMPS)].cpu().tolist()
        m = st_m.view(-1, 8)[:, :len(MERGE_STAMPS)].cpu().tolist()
        d = [r for r in d if r[6]]  # programs that took an item
        t0 = min(r[0] for r in d)
        starts.append(t0)
        ends.append(max(r[3] for r in m))
        row = {DECODE_STAMPS[j]: _pcts([r[j] - t0 for r in d]) for j in ORDER}
        row.update({name: _pcts([r[j] - t0 for r in m]) for j, name in enumerate(MERGE_STAMPS)})
        per_call.append(row)
    gaps = [b - a for a, b in zip(ends, starts[1:])]
    med = {k: tuple(statistics.median(r[k][i] for r in per_call[1:]) / 1e3 for i in range(3)) for k in per_call[0]}
    return us, err, med, statistics.median(gaps) / 1e3, p


def copy_timeline(nbytes: int, block: int = 4096):
    """The same-size copy (negate nbytes/2 into a second buffer), stamped: stream µs, per-stamp
    medians over calls, the gap from a call's last load to the next call's first program."""
    dev = torch.device("cuda")
    half = max(nbytes // 4, 1)
    pairs = input_copies(lambda i: (torch.zeros(half, dtype=torch.float16, device=dev), torch.empty(half, dtype=torch.float16, device=dev)),
                         nbytes, dev)
    grid = triton.cdiv(half, block)
    sts = [torch.zeros(grid * 2, dtype=torch.int64, device=dev) for _ in pairs]
    calls = [lambda s=s, d=d, st=st: _copy_stamped[(grid,)](s, d, st, half, BLOCK=block, num_warps=4) for (s, d), st in zip(pairs, sts)]
    us = stream_us(calls)
    neg = stream_us([lambda s=s, d=d: torch.neg(s, out=d) for s, d in pairs])
    rows, starts, ends = [], [], []
    for st in sts:
        x = st.view(-1, 2).cpu().tolist()
        t0 = min(r[0] for r in x)
        starts.append(t0)
        ends.append(max(r[1] for r in x))
        rows.append({"start": _pcts([r[0] - t0 for r in x]), "loads landed": _pcts([r[1] - t0 for r in x])})
    med = {k: tuple(statistics.median(r[k][i] for r in rows[1:]) / 1e3 for i in range(3)) for k in rows[0]}
    gaps = [b - a for a, b in zip(ends, starts[1:])]
    return us, neg, med, statistics.median(gaps) / 1e3, grid


def main(argv):
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv] or SHAPES
    kernel, gluon_merge = stamped_kernel()
    print(torch.cuda.get_device_name(), flush=True)
    for H, H_kv, L in shapes:
        case = decode_case(1, H, H_kv, L)
        real = case.time()
        nbytes = int(ad.bytes_moved(1, H, H_kv, case.q.shape[-1], L))
        cus, neg, cmed, cgap, grid = copy_timeline(nbytes)
        print(f"\n{H}/{H_kv} heads, L={L}: launcher {real:.2f} us; copy (torch.neg) {case.copy_us:.2f} / {neg:.2f}, "
              f"stamped Triton copy {cus:.2f} ({grid} programs)", flush=True)
        for k, (lo, mid, hi) in cmed.items():
            print(f"    copy {k:13s} {lo:6.2f} {mid:6.2f} {hi:6.2f}")
        print(f"    {'-> next copy starts':18s} {cgap:6.2f} after its last program's loads", flush=True)
        for label, merge in (("merge kernel (Triton, as the launcher's)", None), ("merge in Gluon, reductions in registers", gluon_merge)):
            got = decode_timeline(case, kernel, merge)
            if got is None:
                print("  the launcher takes the split kernel here; nothing to stamp")
                break
            us, err, med, gap, p = got
            print(f"  {p}, {label}: stamped call {us:.2f} us (err {err:.1e}); µs from the call's first program start "
                  "(min, median, max over programs; medians over the calls of the graph):")
            for k, (lo, mid, hi) in med.items():
                print(f"    {k:18s} {lo:6.2f} {mid:6.2f} {hi:6.2f}")
            print(f"    {'-> next call starts':18s} {gap:6.2f} after the last merge output", flush=True)
        del case
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
