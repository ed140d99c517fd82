"""Decode split kernel with work stealing inside each (sequence, KV head) pair, against the launcher.

At batch 1 the split programs all carry the same bytes, yet their loops end 7.3-10.9 µs into a
32/8-head 8K call (session 12, decode_timeline.py): the slowest SMs set the time. Here each of a
pair's S programs takes one static tile (its slot), then tickets from the pair's counter (one
relaxed atomic a tile, fetched a tile ahead so its latency hides behind a load), so an SM that is
served faster folds in more tiles. Each program keeps the next tile's K/V load in flight in
registers while it folds in the current one (a while loop: Triton's pipeliner only takes for
loops). It writes one partial, as a split does, and the launcher's merge kernel merges them.

The counter needs no reset launch: a call takes exactly n_tiles + S tickets of a pair's counter
(every program fetches one ticket past its last tile, and one more if its static tile was its
last), so the program that draws ticket n_tiles + S - 1 stores 0 back.

Measured on an H200 (stream, median of 5 interleaved rounds): slower than the launcher at every
shape and granularity. B = 1, 32/8, 8K: HEAD 14.07 µs, best steal (64-key tiles, 4-tile chunks,
33 slots: hardly any stealing) 15.18, 1-2-tile chunks 17.4-19.2; 9/3, 32K: 12.33 against
13.9-21.7; 32/8, 32K: 38.4 against 40.2-54.2; B = 4, 32/8, 8K: 37.7 against 41.1-56.3. Each
chunk restarts the software pipeline (its first tile waits a full DRAM round trip), and that
costs more than the balance wins. Splits of one tile loaded at once (num_stages = 1, 64-128
splits, so the block scheduler balances) were slower too: 17.3-19.9 µs at 32/8 8K.

    python experiments/probes/decode_steal.py [B,H,H_kv,L ...]     # CUDA: stream µs beside HEAD
    TRITON_INTERPRET=1 python experiments/probes/decode_steal.py --check   # CPU: against the reference
"""
import os, statistics, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch, triton, triton.language as tl
import kernels.attention_decode as ad


@triton.jit(do_not_specialize=["G", "S", "ml_stride"])
def _split_steal(Q, K, V, LENS, PO, PM, PL, CNT, stride_qb, stride_qh, stride_kb, stride_kh, stride_kp,
                 stride_vb, stride_vh, stride_vp, G, qk_scale, S, ml_stride,
                 HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
                 TRIGGER: tl.constexpr):
    """K/V [B, H_kv, L_max, D] contiguous (the launcher's one-block view); grid (B, H_kv, S).
    A ticket is a chunk of CHUNK tiles, streamed by Triton's software pipeliner (num_stages)."""
    b = tl.program_id(0)
    h_kv = tl.program_id(1)
    slot = tl.program_id(2)
    if TRIGGER:  # the merge kernel (PDL) may launch; it waits for this grid
        tl.extra.cuda.gdc_launch_dependents()
    b64 = b.to(tl.int64)
    h64 = h_kv.to(tl.int64)
    L = tl.load(LENS + b)
    g = tl.arange(0, G_PAD)
    d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    heads = h_kv * G + g
    rows = g < G
    q = tl.load(Q + b64 * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=rows[:, None], other=0.0)
    Kp = K + b64 * stride_kb + h64 * stride_kh
    Vp = V + b64 * stride_vb + h64 * stride_vh
    n_chunks = tl.cdiv(L, BLOCK_N * CHUNK)
    ctr = CNT + b64 * tl.num_programs(1) + h_kv
    last = n_chunks + S - 1  # the call's last ticket of this pair
    c = slot  # the static chunk
    tkt = tl.atomic_add(ctr, 1, sem="relaxed", scope="gpu")  # in flight while the static chunk streams
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, HEAD_DIM], tl.float32)
    while c < n_chunks:
        t_new = tl.atomic_add(ctr, 1, sem="relaxed", scope="gpu")  # the ticket after next: nothing waits on it before the chunk is done
        c0 = c * (BLOCK_N * CHUNK)
        for n0 in range(c0, tl.minimum(c0 + BLOCK_N * CHUNK, L), BLOCK_N):
            tok = n0 + offs_n
            valid = tok < L
            k = tl.load(Kp + tok[:, None].to(tl.int64) * stride_kp + d[None, :], mask=valid[:, None], other=0.0)
            v = tl.load(Vp + tok[:, None].to(tl.int64) * stride_vp + d[None, :], mask=valid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * qk_scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = tl.dot(p.to(q.dtype), v, acc * alpha[:, None])
            m_i = m_new
        if tkt == last:  # every ticket is looked at once: here as it becomes the next chunk, or below
            tl.store(ctr, 0)
        c = S + tkt
        tkt = t_new
    if tkt == last:
        tl.store(ctr, 0)
    H = G * tl.num_programs(1)
    head_row = b64 * H + heads
    tl.store(PO + (head_row * S + slot)[:, None] * HEAD_DIM + d[None, :], acc, mask=rows[:, None])
    tl.store(PM + head_row * ml_stride + slot, m_i, mask=rows)
    tl.store(PL + head_row * ml_stride + slot, l_i, mask=rows)


_CNT = {}


def steal_decode(q, k_cache, v_cache, block_table, seq_lens, out=None, layout=None, slots=None, block_n=32, chunk=4, num_warps=4, num_stages=3):
    """paged_decode_attention for a contiguous [B, H_kv, L, D] cache viewed as one block per
    sequence (paged_from_contiguous), with the stealing split kernel."""
    B, H, D = q.shape
    _, H_kv, L_max, _ = k_cache.shape
    assert block_table.shape[1] == 1, "contiguous views only"
    k = k_cache.view(B, H_kv, L_max, D)  # block_table[b] == b for paged_from_contiguous
    v = v_cache.view(B, H_kv, L_max, D)
    dev = q.device
    interp = ad._interpreting()
    sms = ad._sm_count(dev)
    S = slots or max(1, (2 * sms) // (B * H_kv))
    G = H // H_kv
    out = torch.empty_like(q) if out is None else out
    cnt = _CNT.get(dev)
    if cnt is None or cnt.numel() < B * H_kv:
        cnt = _CNT[dev] = torch.zeros(max(4096, B * H_kv), dtype=torch.int32, device=dev)
    ml_stride = ad._cdiv(S, 32) * 32
    po = torch.empty(B * H * S * D, dtype=torch.float32, device=dev)
    pm = torch.empty(B * H * ml_stride, dtype=torch.float32, device=dev)
    pl = torch.empty_like(pm)
    pdl = not interp and ad._pdl_capable(dev)
    _split_steal[(B, H_kv, S)](q, k, v, seq_lens, po, pm, pl, cnt, q.stride(0), q.stride(1), *k.stride()[:3], *v.stride()[:3],
                               G, ad.LOG2E / D ** 0.5, S, ml_stride, HEAD_DIM=D, G_PAD=max(16, ad._pow2(G)),
                               BLOCK_N=block_n, CHUNK=chunk, TRIGGER=pdl, **({} if interp else {"num_warps": num_warps, "num_stages": num_stages}))
    dims = ad._merge_dims(B * H, D, sms)
    ad._decode_merge[(B, H, D // dims)](po, pm, pl, out, H, S, ml_stride, out.stride(0), out.stride(1),
                                        HEAD_DIM=D, DIMS=dims, CHUNK=max(1, min(ad._pow2(S), ad.MERGE_KERNEL_TILE // dims)),
                                        STAGES=ad.MERGE_STAGES, PDL=pdl, TRIGGER=False,
                                        **({} if interp else {"num_warps": 1}), **({"launch_pdl": True} if pdl else {}))
    return out


def check():
    """Against the float64 reference at small ragged shapes; the counters must be zero after each call."""
    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() and not ad._interpreting() else "cpu")
    dt = torch.float16 if dev.type == "cpu" else torch.bfloat16
    for B, H, H_kv, L, lens, slots, bn in ((1, 4, 1, 300, [300], 3, 16), (2, 6, 2, 170, [170, 33], 4, 16), (3, 9, 3, 164, [1, 164, 77], 5, 16),
                                           (1, 8, 2, 40, [0], 2, 16), (2, 4, 2, 150, [150, 149], 1, 16)):
        q = torch.randn(B, H, 32, device=dev, dtype=dt)
        k = torch.randn(B, H_kv, L, 32, device=dev, dtype=dt)
        v = torch.randn_like(k)
        kv = ad.paged_from_contiguous(k, v, torch.tensor(lens, dtype=torch.int32, device=dev))
        ref = ad.decode_reference(q, **kv.kwargs())
        for _ in range(2):  # the second call finds the counters zeroed by the first
            o = steal_decode(q, **kv.kwargs(), slots=slots, block_n=bn, chunk=2)
            err = ((o.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
            assert err < 2e-2, (B, H, H_kv, L, lens, slots, err)
            assert int(_CNT[dev].abs().sum()) == 0, "counters left non-zero"
        print(f"ok B={B} {H}/{H_kv} lens={lens} slots={slots}: err {err:.1e}")


def main(argv):
    from experiments.probes._decode_case import decode_case
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv] or [(1, 32, 8, 8192), (1, 9, 3, 8192), (1, 32, 8, 32768), (1, 9, 3, 32768), (4, 32, 8, 8192), (1, 32, 8, 2048)]
    sms = ad._sm_count(torch.device("cuda"))
    for B, H, H_kv, L in shapes:
        case = decode_case(B, H, H_kv, L)
        pairs = B * H_kv
        variants = {"HEAD": (ad.paged_decode_attention, {})}
        for bn, chunk in ((64, 1), (64, 2), (64, 4), (32, 2), (32, 4), (32, 8)):
            for per_sm in (2, 3):
                S = max(1, (per_sm * sms) // pairs)
                variants[f"steal n{bn}c{chunk} S{S}"] = (steal_decode, dict(slots=S, block_n=bn, chunk=chunk))
        times = {n: [] for n in variants}
        errs = {n: case.rel_err(f, **kw) for n, (f, kw) in variants.items()}
        for _ in range(5):
            for n, (f, kw) in variants.items():
                times[n].append(case.time(f, **kw))
        med = {n: statistics.median(t) for n, t in times.items()}
        print(f"B={B} {H}/{H_kv} L={L} copy {case.copy_us:.2f} us, HEAD {med['HEAD']:.2f} ({case.copy_us / med['HEAD']:.2f} of copy, {case.default_splits()} splits)", flush=True)
        for n in sorted(med, key=med.get):
            print(f"   {n:14s} {med[n]:6.2f} us  {case.copy_us / med[n]:.3f} of copy  err {errs[n]:.1e}", flush=True)
        del case
        torch.cuda.empty_cache()


if __name__ == "__main__":
    check() if "--check" in sys.argv else main(sys.argv[1:])
