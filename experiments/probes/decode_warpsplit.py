"""Does the batch-1 split kernel lose its tail to cross-warp reductions? The real kernel's 4 warps
share each [G_pad, BLOCK_N] score tile, so every tile's row max and row sum, and the step from
scores to the P operand, pass through shared memory behind barriers. Here each warp keeps its own
online softmax over its own KW keys of every tile (one batched tl.dot of [W, G_pad, D] x
[W, D, KW]), and the W states are combined once, after the loop. A copy of the contiguous bf16
path at batch 1 (tiles taken in turn), feeding the real merge kernel, timed beside the real
launcher on the same inputs (stream, the median of 5 interleaved rounds). Needs a CUDA GPU:

    python experiments/probes/decode_warpsplit.py [H,H_kv,L ...]
"""
import os, statistics, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch, triton, triton.language as tl
import kernels.attention_decode as ad
from experiments.probes._decode_case import decode_case
from lab.benchmarks._common import stream_us


@triton.jit
def _split_warps(Q, K, V, PO, PM, PL, L, G, num_splits, qk_scale, ml_stride, stride_kh,
                 HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr, W: tl.constexpr, KW: tl.constexpr, TRIGGER: tl.constexpr):
    """Batch 1, K/V [H_kv, L, D]: split s folds in tiles s, s + num_splits, ... of W·KW keys,
    warp w the keys [w·KW, (w+1)·KW) of each."""
    h_kv = tl.program_id(0)
    split = tl.program_id(1)
    if TRIGGER:
        tl.extra.cuda.gdc_launch_dependents()
    g = tl.arange(0, G_PAD)
    d = tl.arange(0, HEAD_DIM)
    heads = h_kv * G + g
    rows = g < G
    q = tl.load(Q + heads[:, None] * HEAD_DIM + d[None, :], mask=rows[:, None], other=0.0)  # [G_PAD, D]
    q3 = tl.broadcast_to(q[None, :, :], (W, G_PAD, HEAD_DIM))
    m_i = tl.full([W, G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([W, G_PAD], tl.float32)
    acc = tl.zeros([W, G_PAD, HEAD_DIM], tl.float32)
    key = tl.arange(0, W)[:, None] * KW + tl.arange(0, KW)[None, :]  # [W, KW]
    base = h_kv.to(tl.int64) * stride_kh
    for n0 in tl.range(split * (W * KW), L, num_splits * (W * KW), num_stages=3):
        tok = n0 + key
        valid = tok < L
        row = base + tok.to(tl.int64) * HEAD_DIM
        k = tl.load(K + row[:, :, None] + d[None, None, :], mask=valid[:, :, None], other=0.0)  # [W, KW, D]
        v = tl.load(V + row[:, :, None] + d[None, None, :], mask=valid[:, :, None], other=0.0)
        s = tl.dot(q3, tl.trans(k, (0, 2, 1))) * qk_scale  # [W, G_PAD, KW], log2 domain
        s = tl.where(valid[:, None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 2))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a warp that has seen no key yet
        p = tl.math.exp2(s - m_ref[:, :, None])
        alpha = tl.math.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 2)
        acc = acc * alpha[:, :, None]
        acc = tl.dot(p.to(q.dtype), v, acc)  # [W, G_PAD, KW] x [W, KW, D]
        m_i = m_new
    m = tl.max(m_i, 0)  # [G_PAD]: the W states, once
    w = tl.math.exp2(m_i - tl.where(m == float("-inf"), 0.0, m)[None, :])
    l = tl.sum(w * l_i, 0)
    o = tl.sum(w[:, :, None] * acc, 0)  # [G_PAD, D]
    tl.store(PO + (heads * num_splits + split)[:, None] * HEAD_DIM + d[None, :], o, mask=rows[:, None])
    tl.store(PM + heads * ml_stride + split, m, mask=rows)
    tl.store(PL + heads * ml_stride + split, l, mask=rows)


def warpsplit_call(q, k, v, out, splits, kw, warps=4):
    """One batch-1 call: q [H, D], k/v [H_kv, L, D] -> out [H, D] (the real merge kernel, under PDL)."""
    H, D = q.shape
    H_kv, L, _ = k.shape
    G = H // H_kv
    ml_stride = -(-splits // 32) * 32
    buf = torch.empty(H * splits * D + 2 * H * ml_stride, dtype=torch.float32, device=q.device)
    po, pm, pl = buf[: H * splits * D], buf[H * splits * D : H * splits * D + H * ml_stride], buf[H * splits * D + H * ml_stride :]
    pdl = not ad._interpreting()
    grid_opts = {} if ad._interpreting() else dict(num_warps=warps)
    _split_warps[(H_kv, splits)](q, k, v, po, pm, pl, L, G, splits, D ** -0.5 * ad.LOG2E, ml_stride, k.stride(0),
                                 HEAD_DIM=D, G_PAD=max(16, triton.next_power_of_2(G)), W=warps, KW=kw, TRIGGER=pdl, **grid_opts)
    dims = ad._merge_dims(H, D, ad._sm_count(q.device))
    ad._decode_merge[(1, H, D // dims)](po, pm, pl, out, H, splits, ml_stride, 0, out.stride(0),  # out [H, D]: batch 1
                                        HEAD_DIM=D, DIMS=dims, CHUNK=max(1, min(ad._pow2(splits), ad.MERGE_KERNEL_TILE // dims)),
                                        STAGES=ad.MERGE_STAGES, PDL=pdl, TRIGGER=False,
                                        **({} if ad._interpreting() else {"num_warps": 1, "launch_pdl": True}))
    return out


def main(argv):
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv] or [(32, 8, 8192), (9, 3, 8192), (32, 8, 32768), (9, 3, 32768)]
    for H, H_kv, L in shapes:
        case = decode_case(1, H, H_kv, L)
        D = case.q.shape[-1]
        splits, config = case.plan()
        kws = (16, 32) if D == 128 else (32, 16)
        variants = {"HEAD": lambda c: case.time()}
        errs = {"HEAD": case.rel_err()}
        for kw in kws:
            def run(c, kw=kw):
                return stream_us([lambda cc=cc: warpsplit_call(case.q[0], cc.k_cache.view(H_kv, -1, D), cc.v_cache.view(H_kv, -1, D),
                                                               case.out[0], splits, kw) for cc in case.caches])
            variants[f"warps x {kw} keys"] = run
            o = warpsplit_call(case.q[0], case.caches[0].k_cache.view(H_kv, -1, D), case.caches[0].v_cache.view(H_kv, -1, D),
                               torch.empty_like(case.q[0]), splits, kw)
            errs[f"warps x {kw} keys"] = ((o.double() - case.ref[0]).abs().max() / case.ref[0].abs().max()).item()
        times = {n: [] for n in variants}
        for _ in range(5):
            for n, f in variants.items():
                times[n].append(f(None))
        line = f"{H}/{H_kv} L={L}, {splits} splits (HEAD tile n{config.block_n}), copy {case.copy_us:.2f} us:"
        for n in variants:
            us = statistics.median(times[n])
            line += f"  {n} {us:.2f} us ({case.copy_us / us:.2f} of copy, err {errs[n]:.1e})"
        print(line, flush=True)
        del case
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
