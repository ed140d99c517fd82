"""Where a batch-1 decode call's time goes, seen from inside the kernels. A copy of the split
kernel's contiguous bf16 path and of the merge kernel stamp %globaltimer in every program: at its
start, once seq_lens has arrived, once its loop's last tile is folded in, and (merge) before and
after its PDL wait and once its output is computed. Each stamp takes a data dependency on what it
waits for (an inline asm whose input is that value), so it cannot run early. Beside it, stream
times (back to back in a CUDA graph over KV copies > 2x L2) of: the real launcher; the real split
kernel alone; the copy with seq_lens' load replaced by an argument; the copy reading its tiles
without any math (what the loop structure alone costs); a read-only kernel of the same bytes; the
size-matched copy. Needs a CUDA GPU (sm_90 for PDL):

    python experiments/probes/decode_timeline.py
"""
import os, sys, statistics
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch, triton, triton.language as tl
import kernels.attention_decode as ad
from experiments.probes._decode_case import decode_case
from lab.benchmarks._common import rel_err, stream_us
from experiments.probes.read_floor import read_floor_us

NSTAMP = 4


@triton.jit
def _now(dep):
    """%globaltimer (ns), read once dep (32-bit, scalar or tensor: elementwise) is ready."""
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [dep], dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def _stamp(ST, j: tl.constexpr, dep):
    """ST[j] = the time once the scalar dep is ready."""
    tl.store(ST + j, _now(dep))


@triton.jit
def _stamp2d(ST, j: tl.constexpr, dep, R: tl.constexpr, C: tl.constexpr):
    """ST[j] = the time once element [0, 0] of the [R, C] dep is ready (its thread's stamp: no reduction)."""
    r = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    tl.store(ST + j + r * 0, _now(dep), mask=r == 0)


@triton.jit
def _split_stamped(Q, K, V, LENS, PO, PM, PL, ST, L_arg, G, num_splits, qk_scale, ml_stride, stride_kh,
                   HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
                   FROM_LENS: tl.constexpr, MATH: tl.constexpr, EVICT: tl.constexpr, TRIGGER: tl.constexpr):
    """Batch 1, K/V [H_kv, L, D] contiguous: the real split kernel's ONE_BLOCK bf16 path, with
    the splits taking the tiles in turn (the walk of more than 16 splits: every count timed here)."""
    h_kv = tl.program_id(0)
    split = tl.program_id(1)
    st = ST + (h_kv * num_splits + split) * 8
    _stamp(st, 0, split)
    if TRIGGER:
        tl.extra.cuda.gdc_launch_dependents()
    if FROM_LENS:
        L = tl.load(LENS)
    else:
        L = L_arg
    g = tl.arange(0, G_PAD)
    d = tl.arange(0, HEAD_DIM)
    heads = h_kv * G + g
    rows = g < G
    q = tl.load(Q + heads[:, None] * HEAD_DIM + d[None, :], mask=rows[:, None], other=0.0)
    _stamp(st, 1, L)
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, HEAD_DIM], tl.float32)
    x = tl.zeros([BLOCK_N, HEAD_DIM], tl.int16)
    offs_n = tl.arange(0, BLOCK_N)
    h64 = h_kv.to(tl.int64)
    for n0 in tl.range(split * BLOCK_N, L, num_splits * BLOCK_N, num_stages=3):
        tok = n0 + offs_n
        valid = tok < L
        row = h64 * stride_kh + tok * HEAD_DIM
        k = tl.load(K + row[:, None] + d[None, :], mask=valid[:, None], other=0.0, eviction_policy=EVICT)
        v = tl.load(V + row[:, None] + d[None, :], mask=valid[:, None], other=0.0, eviction_policy=EVICT)
        if MATH:
            s = tl.dot(q, tl.trans(k)) * qk_scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            acc = tl.dot(p.to(q.dtype), v, acc)
            m_i = m_new
        else:
            x ^= k.to(tl.int16, bitcast=True) ^ v.to(tl.int16, bitcast=True)
    if MATH:
        _stamp2d(st, 2, acc.to(tl.int32, bitcast=True), G_PAD, HEAD_DIM)
    else:
        _stamp2d(st, 2, x.to(tl.int32), BLOCK_N, HEAD_DIM)
        acc += tl.sum(x.to(tl.float32), 0)[None, :]
    head_row = heads
    tl.store(PO + (head_row * num_splits + split)[:, None] * HEAD_DIM + d[None, :], acc, mask=rows[:, None])
    tl.store(PM + head_row * ml_stride + split, m_i, mask=rows)
    tl.store(PL + head_row * ml_stride + split, l_i, mask=rows)
    _stamp(st, 3, split)


@triton.jit
def _merge_stamped(PO, PM, PL, O, ST, num_splits, ml_stride, HEAD_DIM: tl.constexpr, CHUNK: tl.constexpr,
                   DSLICE: tl.constexpr, CG: tl.constexpr):
    """Program (head, slice): DSLICE of the head's dims, every split in one step (CHUNK >= num_splits), under PDL."""
    h = tl.program_id(0)
    part = tl.program_id(1)
    st = ST + (h * tl.num_programs(1) + part) * 8
    _stamp(st, 0, h)
    tl.extra.cuda.gdc_wait()
    _stamp(st, 1, h)
    c = tl.arange(0, CHUNK)
    d = part * DSLICE + tl.arange(0, DSLICE)
    ok = c < num_splits
    if CG:
        m = tl.load(PM + h * ml_stride + c, mask=ok, other=float("-inf"), cache_modifier=".cg")
        l = tl.load(PL + h * ml_stride + c, mask=ok, other=0.0, cache_modifier=".cg")
        a = tl.load(PO + (h * num_splits + c)[:, None] * HEAD_DIM + d[None, :], mask=ok[:, None], other=0.0, cache_modifier=".cg")
    else:
        m = tl.load(PM + h * ml_stride + c, mask=ok, other=float("-inf"))
        l = tl.load(PL + h * ml_stride + c, mask=ok, other=0.0)
        a = tl.load(PO + (h * num_splits + c)[:, None] * HEAD_DIM + d[None, :], mask=ok[:, None], other=0.0)
    _stamp2d(st, 2, a.to(tl.int32, bitcast=True), CHUNK, DSLICE)
    mx = tl.max(m, 0)
    w = tl.math.exp2(m - mx)
    o = tl.sum(w[:, None] * a, 0) / tl.sum(w * l, 0)
    _stamp2d(st, 3, o.to(tl.int32, bitcast=True)[None, :], 1, DSLICE)
    tl.store(O + h * HEAD_DIM + d, o.to(O.dtype.element_ty))


def _pcts(xs):
    xs = sorted(xs)
    return xs[0], xs[len(xs) // 2], xs[-1]


def timeline(case, splits: int, block_n: int, from_lens=True, math=True, evict="", dslice=0, merge_warps=4, cg=True):
    """Stream µs of split + merge copies, and the stamps of each call's programs."""
    assert ad.POLICY.interleave(splits), f"{splits} splits: the launcher would take runs, which this copy does not"
    q = case.q[0]  # [H, D]
    H, D = q.shape
    H_kv = case.caches[0].k_cache.shape[1]
    G = H // H_kv
    dev = q.device
    L = int(case.caches[0].seq_lens[0])
    ml_stride = -(-splits // 32) * 32
    calls, stamps, outs = [], [], []
    chunk = triton.next_power_of_2(splits)
    dslice = dslice or D
    for c in case.caches:
        k = c.k_cache.view(H_kv, -1, D)  # one block of L tokens
        v = c.v_cache.view(H_kv, -1, D)
        po = torch.empty(H * splits * D, device=dev, dtype=torch.float32)
        pm = torch.empty(H * ml_stride, device=dev, dtype=torch.float32)
        pl = torch.empty_like(pm)
        st_s = torch.zeros(H_kv * splits * 8, device=dev, dtype=torch.int64)
        st_m = torch.zeros(H * (D // dslice) * 8, device=dev, dtype=torch.int64)
        out = torch.empty(H, D, device=dev, dtype=q.dtype)
        stamps.append((st_s, st_m))
        outs.append(out)

        def call(k=k, v=v, po=po, pm=pm, pl=pl, st_s=st_s, st_m=st_m, out=out, lens=c.seq_lens):
            _split_stamped[(H_kv, splits)](q, k, v, lens, po, pm, pl, st_s, L, G, splits, D ** -0.5 * 1.4426950408889634,
                                           ml_stride, k.stride(0), HEAD_DIM=D, G_PAD=max(16, triton.next_power_of_2(G)),
                                           BLOCK_N=block_n, FROM_LENS=from_lens, MATH=math, EVICT=evict, TRIGGER=True, num_warps=4, num_stages=3)
            _merge_stamped[(H, D // dslice)](po, pm, pl, out, st_m, splits, ml_stride, HEAD_DIM=D, CHUNK=chunk, DSLICE=dslice,
                                             CG=cg, num_warps=merge_warps, launch_pdl=True)
        calls.append(call)
    calls[0]()
    err = rel_err(outs[0], case.ref[0]) if math else float("nan")
    us = stream_us(calls)  # its graph replays write every copy's stamps last
    rows = []
    for st_s, st_m in stamps:
        s = st_s.view(-1, 8)[:, :NSTAMP].cpu().tolist()
        m = st_m.view(-1, 8)[:, :4].cpu().tolist()
        t0 = min(r[0] for r in s)
        rows.append(dict(
            split_start=_pcts([r[0] - t0 for r in s]),
            lens_wait=_pcts([r[1] - r[0] for r in s]),
            loop_end=_pcts([r[2] - t0 for r in s]),
            stored=_pcts([r[3] - t0 for r in s]),
            merge_start=_pcts([r[0] - t0 for r in m]),
            merge_woke=_pcts([r[1] - t0 for r in m]),
            merge_loaded=_pcts([r[2] - t0 for r in m]),
            merge_done=_pcts([r[3] - t0 for r in m]),
        ))
    med = {k: tuple(statistics.median(r[k][i] for r in rows) / 1e3 for i in range(3)) for k in rows[0]}
    ticks = sorted({t for r in stamps[-1][0].view(-1, 8)[:, :NSTAMP].cpu().tolist() for t in r})
    med["timer step (ns)"] = (min(b - a for a, b in zip(ticks, ticks[1:])),) * 3 if len(ticks) > 1 else (0,) * 3
    return us, err, med


def main():
    for H, H_kv, L in [(32, 8, 8192), (9, 3, 8192), (32, 8, 32768), (9, 3, 32768)]:
        case = decode_case(1, H, H_kv, L)
        D = case.q.shape[-1]
        splits, config = case.plan()
        block_n = config.block_n
        real = case.time()
        saved = ad._decode_merge
        ad._decode_merge = type("_NoLaunch", (), {"__getitem__": lambda self, g: (lambda *a, **k: None)})()
        try:
            real_split = case.time(fused_merge=False)
        finally:
            ad._decode_merge = saved
        nbytes = 2 * H_kv * L * D * 2
        floor = read_floor_us(nbytes)
        print(f"\n{H}/{H_kv} heads D={D} L={L}, {splits} splits, n{block_n}: copy {case.copy_us:.2f} us, read-only floor {floor:.2f}, "
              f"real {real:.2f} ({case.copy_us / real:.2f} of copy), real split kernel alone {real_split:.2f}", flush=True)
        fast = dict(dslice=16, merge_warps=1)
        for label, kw in (("stamped copy", {}), ("no math (loads only)", dict(math=False)), ("merge: 16 dims a program, 1 warp", fast),
                          *((f"{s} splits, fast merge", dict(fast, splits=s)) for s in (48, 64, 96, 128) if s != splits)):
            kw = dict(kw)
            us, err, med = timeline(case, kw.pop("splits", splits), block_n, **kw)
            print(f"  {label}: {us:.2f} us/call (rel err {err:.1e}); stamps in us from the first program's start, (min, median, max) over programs:", flush=True)
            for k, (lo, mid, hi) in med.items():
                print(f"    {k:12s} {lo:6.2f} {mid:6.2f} {hi:6.2f}", flush=True)
        del case
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
