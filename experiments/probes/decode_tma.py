"""Decode split kernel whose K/V tiles arrive by TMA (tensor descriptors), against the launcher.

The launcher's split kernel streams K/V with cp.async: every thread issues its 16-byte pieces of
each tile and the pipeline waits on commit groups. Here one descriptor load a tile asks the copy
engine for the whole [BLOCK_N, D] box and the pipeline waits on an mbarrier, which frees the
warps' issue slots and registers. Batch-1 decode's loop ends ~1 µs after a read-only kernel's
whole call would (session 12); this asks whether the way tiles are fetched is part of that.
Contiguous bf16 cache only ([B·H_kv·L, D] rows; a tile past its split's end is masked in the math,
past the tensor's end TMA fills zeros); the launcher's merge kernel merges the splits.

Measured on an H200 (stream, median of 5 interleaved rounds, 4 warps): no faster than the
launcher's cp.async stream anywhere. B = 1, 32/8, 8K: HEAD 13.77 µs, TMA 14.30 (same tiles and
splits), 14.5-19.0 others; 9/3, 8K: 6.72 against 6.83; 9/3, 32K: 12.51 against 12.89; 32/8,
32K: 39.25 against 38.91 (16 splits of 128-key tiles, within noise); B = 4, 32/8, 8K: 38.50
against 38.59; B = 16, 9/3, 8K: 31.10 against 31.25. So how the tiles are fetched is not what
keeps batch 1 from a read-only kernel's time.

    python experiments/probes/decode_tma.py [B,H,H_kv,L ...]          # CUDA (sm_90): stream µs beside HEAD
    TRITON_INTERPRET=1 python experiments/probes/decode_tma.py --check  # CPU: against the reference
"""
import os, statistics, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch, triton, triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor
import kernels.attention_decode as ad


@triton.jit(do_not_specialize=["G", "num_splits", "ml_stride", "L_max"])
def _split_tma(Q, Kd, Vd, LENS, PO, PM, PL, stride_qb, stride_qh, G, qk_scale, num_splits, ml_stride, L_max,
               HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr, BLOCK_N: tl.constexpr, TRIGGER: tl.constexpr):
    b = tl.program_id(0)
    h_kv = tl.program_id(1)
    split = tl.program_id(2)
    if TRIGGER:  # the merge kernel (PDL) may launch; it waits for this grid
        tl.extra.cuda.gdc_launch_dependents()
    b64 = b.to(tl.int64)
    L = tl.load(LENS + b)
    g = tl.arange(0, G_PAD)
    d = tl.arange(0, HEAD_DIM)
    heads = h_kv * G + g
    rows = g < G
    q = tl.load(Q + b64 * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=rows[:, None], other=0.0)
    split_len = tl.cdiv(tl.cdiv(L, num_splits), 16) * 16
    start = split * split_len
    end = tl.minimum(L, start + split_len)
    row0 = (b * tl.num_programs(1) + h_kv) * L_max  # this head's first row in the [B·H_kv·L_max, D] view
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, HEAD_DIM], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    for n0 in range(start, end, BLOCK_N):
        k = Kd.load([row0 + n0, 0])  # [BLOCK_N, D]
        v = Vd.load([row0 + n0, 0])
        valid = n0 + offs_n < end
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.where(valid[:, None], v, 0.0)  # rows of the next head (or zeros): weight 0, but 0·inf would be NaN
        acc = tl.dot(p.to(q.dtype), v, acc * alpha[:, None])
        m_i = m_new
    H = G * tl.num_programs(1)
    head_row = b64 * H + heads
    tl.store(PO + (head_row * num_splits + split)[:, None] * HEAD_DIM + d[None, :], acc, mask=rows[:, None])
    tl.store(PM + head_row * ml_stride + split, m_i, mask=rows)
    tl.store(PL + head_row * ml_stride + split, l_i, mask=rows)


def tma_decode(q, k_cache, v_cache, block_table, seq_lens, out=None, layout=None, num_splits=None, block_n=64, num_warps=4, num_stages=3):
    """paged_decode_attention for a contiguous cache viewed as one block per sequence, K/V by TMA."""
    B, H, D = q.shape
    _, H_kv, L_max, _ = k_cache.shape
    assert block_table.shape[1] == 1, "contiguous views only"
    dev = q.device
    interp = ad._interpreting()
    S = num_splits or ad.decode_plan(B, H_kv, L_max, D, k_cache.element_size(), dev, paged=False, block_size=L_max)[0]
    G = H // H_kv
    out = torch.empty_like(q) if out is None else out
    kd = TensorDescriptor.from_tensor(k_cache.view(-1, D), [block_n, D])
    vd = TensorDescriptor.from_tensor(v_cache.view(-1, D), [block_n, D])
    ml_stride = ad._cdiv(S, 32) * 32
    po = torch.empty(B * H * S * D, dtype=torch.float32, device=dev)
    pm = torch.empty(B * H * ml_stride, dtype=torch.float32, device=dev)
    pl = torch.empty_like(pm)
    pdl = not interp and ad._pdl_capable(dev)
    _split_tma[(B, H_kv, S)](q, kd, vd, seq_lens, po, pm, pl, q.stride(0), q.stride(1), G, ad.LOG2E / D ** 0.5, S, ml_stride, L_max,
                             HEAD_DIM=D, G_PAD=max(16, ad._pow2(G)), BLOCK_N=block_n, TRIGGER=pdl,
                             **({} if interp else {"num_warps": num_warps, "num_stages": num_stages}))
    dims = ad._merge_dims(B * H, D, ad._sm_count(dev))
    ad._decode_merge[(B, H, D // dims)](po, pm, pl, out, H, S, ml_stride, out.stride(0), out.stride(1),
                                        HEAD_DIM=D, DIMS=dims, CHUNK=max(1, min(ad._pow2(S), ad.MERGE_KERNEL_TILE // dims)),
                                        STAGES=ad.MERGE_STAGES, PDL=pdl, TRIGGER=False,
                                        **({} if interp else {"num_warps": 1}), **({"launch_pdl": True} if pdl else {}))
    return out


def check():
    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() and not ad._interpreting() else "cpu")
    dt = torch.float16 if dev.type == "cpu" else torch.bfloat16
    for B, H, H_kv, L, lens, splits in ((1, 4, 1, 300, [300], 3), (2, 6, 2, 170, [170, 33], 4), (3, 9, 3, 164, [1, 164, 77], 5), (1, 8, 2, 40, [0], 2)):
        q = torch.randn(B, H, 32, device=dev, dtype=dt)
        k = torch.randn(B, H_kv, L, 32, device=dev, dtype=dt)
        v = torch.randn_like(k)
        kv = ad.paged_from_contiguous(k, v, torch.tensor(lens, dtype=torch.int32, device=dev))
        ref = ad.decode_reference(q, **kv.kwargs())
        o = tma_decode(q, **kv.kwargs(), num_splits=splits, block_n=16)
        err = ((o.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
        assert err < 2e-2, (B, H, H_kv, L, lens, splits, err)
        print(f"ok B={B} {H}/{H_kv} lens={lens} splits={splits}: err {err:.1e}")


def main(argv):
    from experiments.probes._decode_case import decode_case
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv] or [(1, 32, 8, 8192), (1, 9, 3, 8192), (1, 32, 8, 32768), (1, 9, 3, 32768), (4, 32, 8, 8192), (16, 9, 3, 8192)]
    for B, H, H_kv, L in shapes:
        case = decode_case(B, H, H_kv, L)
        s0 = case.default_splits()
        variants = {"HEAD": (ad.paged_decode_attention, {})}
        D = case.q.shape[-1]
        for bn, st in ((64, 3), (64, 4), (128, 3), (32, 5)) if D == 128 else ((128, 3), (128, 4), (64, 5)):
            for s in sorted({s0, max(1, s0 // 2)}):
                variants[f"tma n{bn}s{st} {s} splits"] = (tma_decode, dict(num_splits=s, block_n=bn, num_stages=st))
        times = {n: [] for n in variants}
        errs = {}
        for n, (f, kw) in list(variants.items()):
            try:
                errs[n] = case.rel_err(f, **kw)
            except Exception as e:  # a tiling that does not fit or compile here
                print(f"   skip {n}: {type(e).__name__}: {str(e).splitlines()[0][:120]}", flush=True)
                del variants[n], times[n]
        for _ in range(5):
            for n, (f, kw) in variants.items():
                times[n].append(case.time(f, **kw))
        med = {n: statistics.median(t) for n, t in times.items()}
        print(f"B={B} {H}/{H_kv} L={L} copy {case.copy_us:.2f} us, HEAD {med['HEAD']:.2f} ({case.copy_us / med['HEAD']:.2f} of copy, {s0} splits)", flush=True)
        for n in sorted(med, key=med.get):
            print(f"   {n:24s} {med[n]:6.2f} us  {case.copy_us / med[n]:.3f} of copy  err {errs[n]:.1e}", flush=True)
        del case
        torch.cuda.empty_cache()


if __name__ == "__main__":
    check() if "--check" in sys.argv else main(sys.argv[1:])
