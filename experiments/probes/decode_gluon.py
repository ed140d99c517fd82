"""Can a persistent decode kernel that streams K/V across item boundaries read batch 1's cache
as fast as a read-only kernel, with the attention math beside the stream? The split kernel
(kernels/attention_decode.py) leaves most SMs idle for the last ~3.6 µs of a 32/8-head 8K call
(session 12's timeline), and taking work from a counter inside Triton's software pipeliner
restarts the pipeline at every chunk (session 13). Gluon (Triton's explicit-layout language)
lets the loads run ahead across chunks: these kernels are written in it.

  grid: one program per SM, persistent
  work: items of C tiles of BLOCK_N keys of one (sequence, KV head); program p takes item p
        first, then (kind "d") the item P + a ticket from one counter (a relaxed atomic, drawn two
        items ahead and read one item later), else items p + P, p + 2P, ...
  loads: TMA (cp.async.bulk.tensor) into a ring of STAGES K/V tile buffers, STAGES - 1 tiles
        ahead of the one being used, across item boundaries (C >= STAGES - 1, so the loads run at
        most one item ahead); the item's G query rows (a box of G_BOX rows from q [B·H, D]) into
        one of two q buffers with the item's first tile
  math: S = q Kᵀ and O += P V as wgmma (m64: rows past G are padding), an online softmax in the
        wgmma layout (a row lives in one thread quad: no cross-warp reductions); each item leaves
        a partial as the split kernel does, and kernels.attention_decode's merge kernel combines
        them (the items of a pair are its splits)
  swapped math (kinds ending in "t", G <= 8): sᵀ = K qᵀ and Oᵀ += Vᵀ Pᵀ, keys as wgmma's M and
        the query rows as its N of 8, 1/8 of the tensor-core work of m64; the max crosses the 4
        warps (a shared-memory reduction a tile) and P goes through shared memory
  merge="poll": the decode kernel bumps a per-pair counter (release) after each partial, and a
        merge grid launched under PDL waits on its pair's counter (acquire) instead of the grid
  kinds: "s" / "d" one partition of 4 warps issuing its own loads (static / ticket items);
        "ws1" / "ws2" warp-specialized, a producer warp streams the same items (static) and one
        or two consumer warpgroups compute (with two, each takes every other tile of an item and
        leaves its own partial)
  cluster=CL (kind "st"): CL programs a (sequence, KV head), one item each, launched as a thread-
        block cluster and merged through distributed shared memory (see _cluster_merge_asm)
  block_n: keys a tile (default 16 KB of K: 64 at D = 128, 128 at D = 64)
  read_only: the one-partition kernel's loads and barriers, nothing computed or written
  per_sm: programs an SM (2 fit at 3 stages)

The tickets: each program draws 2 tickets first (the next item and the one after) and one more
after each item, and stops at its first item past the last. A program that starts past the last
item draws 2; one that ends on a drawn item has drawn it and the 2 after it, all past the end; so
a call draws (total - P) + 3·P tickets where total >= P, 3·total + 2·(P - total) where not:
total + 2·P either way. The program that draws the last one zeroes the counter for the next call
(CUDA graphs replay it as it is).

What it found (H200, session 15; results/baselines/README.md, "Decode, session 15"): at B = 1,
32/8 heads, 8K the loads alone take 10.3-11.3 µs (0.98-1.05 of the same-size copy; the split
kernel's structure reads in ~11.75), tickets make that slower (11.90), and the math costs 2.5-2.7
µs over the stream in every arrangement (the kernel alone 12.8-13.2, the call with its merge
14.1-16.3, the launcher 13.4-14.3). One timing run ended in a launch failure at 32/8, 32K inside
the graph of all configs' calls; run alone, every config matched the reference there.
Session 17 ("Decode, session 17"): the swapped math cuts that to ~1.9 µs, the kernel alone reads
at 0.87-0.92 of the copy, and the call (13.6-14.0 µs) only ties the launcher's, because the merge
still costs 1.2-1.3 µs; waiting per pair (merge="poll") costs more, 1.4-3.1 µs over the merge kernel.
Session 18 ("Decode, session 18"): the cluster merge is correct, but a cluster per pair cannot
cover the GPU at B = 1 (7 clusters of 16 or 15 of 8 fit on an H200, for 8 pairs), and on 64 SMs
the math loop, not the loads, sets the pace (17.7 µs; loads alone 10.5). 128-key tiles halve the
loop's fixed cost a key: st c2s2 at block_n=128 runs B = 1, 32/8, 8K at 0.90 of the copy on an
H200 and 0.87 on an H100, 7.5 and 6 % faster than the launcher, and 9/3 8K 13 and 10 % faster
(still 0.62 / 0.66 of its copy); at 32/8 from 16K, and at B = 4, the launcher is as fast or faster.
Session 19 put this kernel in the launcher (kernels/attention_decode_hopper.py, with seq_lens and the
block table); the fractions above are of this probe's own copy timing, 5-10 % slower than the
decode suite's for the same bytes (results/baselines/README.md, "Decode, session 19").

Contiguous bf16 caches [B, H_kv, S, D] with every sequence at L keys only (a probe, not the
launcher). Needs an sm_90 GPU:

    python experiments/probes/decode_gluon.py --check          # every config against the reference
    python experiments/probes/decode_gluon.py [B,H,H_kv,L ...]  # stream µs beside the launcher
    python experiments/probes/decode_gluon.py --breakdown [B,H,H_kv,L ...]  # call, kernel alone, loads alone
    python experiments/probes/decode_gluon.py --cluster | --tiles [--check | B,H,H_kv,L ...]  # session 18's configs
"""
import os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

import kernels.attention_decode as ad
from kernels.attention_decode_hopper import (  # the launcher's persistent kernel ("st" with 128-key tiles, per-sequence lengths) shares these
    _attend_tile_t, _barriers, _fresh_state_t, _lanes, _launch_dependents, _store_partial_t, _wgmma_layout)
from experiments.probes._decode_case import decode_case
from experiments.probes.read_floor import read_floor_us
from kernels.attention_decode import decode_reference, paged_from_contiguous
from lab.benchmarks._common import rel_err, stream_us

LOG2E = 1.4426950408889634
M_WG = gl.constexpr(64)  # wgmma's M: the q rows a warpgroup multiplies (G of them real)


@gluon.jit
def _stage_buffers(k_desc, v_desc, q_desc, STAGES: gl.constexpr, SWAP: gl.constexpr, N_P: gl.constexpr):
    """The K and V rings (STAGES tiles each), two q buffers and N_P P buffers (one a consumer
    warpgroup, used when swapped). The q buffers hold M_WG rows for q Kᵀ (G_BOX of them loaded),
    G_BOX when swapped (K qᵀ), where G_BOX = 8 is wgmma's N."""
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    D: gl.constexpr = k_desc.block_type.shape[1]
    G_BOX: gl.constexpr = q_desc.block_type.shape[0]
    gl.static_assert(not SWAP or G_BOX == 8, "swapped: one wgmma N of 8 query rows")
    Q_ROWS: gl.constexpr = G_BOX if SWAP else M_WG
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BLOCK_N, D], k_desc.layout)
    v_bufs = gl.allocate_shared_memory(v_desc.dtype, [STAGES, BLOCK_N, D], v_desc.layout)
    q_bufs = gl.allocate_shared_memory(gl.bfloat16, [2, Q_ROWS, D], gl.NVMMASharedLayout.get_default_for([Q_ROWS, D], gl.bfloat16))
    p_bufs = gl.allocate_shared_memory(gl.bfloat16, [N_P, G_BOX, BLOCK_N], gl.NVMMASharedLayout.get_default_for([G_BOX, BLOCK_N], gl.bfloat16))
    return k_bufs, v_bufs, q_bufs, p_bufs


@gluon.jit
def _draw(CNT, k, DYNAMIC: gl.constexpr, num_warps: gl.constexpr):
    """Ask for a ticket (DYNAMIC) without waiting for it: a one-lane tensor atomic, whose result
    stays in lane 0's register until `_item` reads it (a scalar atomic would be broadcast through
    shared memory at once, stalling every warp for the atomic's round trip). Static: k."""
    lanes = _lanes(num_warps)
    if DYNAMIC:
        t = gl.atomic_add(CNT + lanes * 0, gl.full(lanes.shape, 1, gl.int32, lanes.type.layout), mask=lanes == 0, sem="relaxed")
        t = gl.where(lanes == 0, t, -1)
    else:
        t = gl.where(lanes == 0, k, -1)
    return t


@gluon.jit
def _item(t, CNT, last, P, pid, DYNAMIC: gl.constexpr):
    """The item a drawn ticket names: P + the ticket (DYNAMIC), else pid + k·P for the k-th draw.
    The reader of the call's last ticket zeroes the counter."""
    t = gl.max(t, 0)
    if DYNAMIC:
        if t == last:
            gl.atomic_xchg(CNT, 0, sem="relaxed")
        item = P + t
    else:
        item = pid + t * P
    return item


@gluon.jit
def _walk_item(item, seq, n_chunks):
    """(pair, chunk, q slot) of the seq-th item a program takes. The warp-specialized partitions
    walk the same static sequence (item = pid + seq·P), so they agree without telling each other."""
    return item // n_chunks, item % n_chunks, seq % 2


@gluon.jit
def _issue(item, tt, n, q_slot, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready, q_ready,
           L, S_rows, n_chunks, total, G, C: gl.constexpr, STAGES: gl.constexpr, BLOCK_N: gl.constexpr,
           READ_ONLY: gl.constexpr):
    """TMA loads of tile tt of `item` into stage n % STAGES (and, on its first tile, its q rows
    into q slot q_slot). Slots past L or past the last item arrive with no bytes, so the barrier
    phases stay in step with the consumer's count."""
    s = n % STAGES
    pair = item // n_chunks
    key0 = ((item % n_chunks) * C + tt) * BLOCK_N
    live = (item < total) & (key0 < L)
    bar = ready.index(s)
    mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes, pred=live)
    mbarrier.arrive(bar, pred=(item >= total) | (key0 >= L))
    row = pair * S_rows + key0
    tma.async_copy_global_to_shared(k_desc, [row, 0], bar, k_bufs.index(s), pred=live)
    tma.async_copy_global_to_shared(v_desc, [row, 0], bar, v_bufs.index(s), pred=live)
    if not READ_ONLY:
        if tt == 0:
            qb = q_ready.index(q_slot)
            q_live = item < total
            mbarrier.expect(qb, q_desc.block_type.nbytes, pred=q_live)
            mbarrier.arrive(qb, pred=item >= total)
            G_BOX: gl.constexpr = q_desc.block_type.shape[0]
            tma.async_copy_global_to_shared(q_desc, [pair * G, 0], qb, q_bufs.index(q_slot).slice(0, G_BOX), pred=q_live)


@gluon.jit
def _attend_tile(q_s, k_t, v_t, key0, L, qk_scale, m_i, l_i, acc, s_layout: gl.constexpr, o_layout: gl.constexpr,
                 p_layout: gl.constexpr):
    """One K/V tile (in shared memory, keys key0 ...) folded into the online softmax of the q rows in q_s."""
    BLOCK_N: gl.constexpr = k_t.type.shape[0]
    sc = warpgroup_mma(q_s, k_t.permute((1, 0)), gl.zeros([M_WG, BLOCK_N], gl.float32, s_layout), use_acc=False)
    sc = sc * qk_scale  # log2 domain
    cols = key0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    sc = gl.where((cols < L)[None, :], sc, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(sc, 1))
    p = gl.exp2(sc - m_new[:, None])
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, 1)
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    acc = warpgroup_mma(gl.convert_layout(p.to(gl.bfloat16), p_layout), v_t, acc)
    return m_new, l_i, acc


@gluon.jit
def _store_partial(PO, PM, PL, pair, G, split, n_splits, ml_stride, m_i, l_i, acc, s_layout: gl.constexpr,
                   o_layout: gl.constexpr):
    """Rows < G of a (sequence, KV head)'s partial, in the layout the merge kernel reads."""
    D: gl.constexpr = acc.type.shape[1]
    rows = gl.arange(0, M_WG, layout=gl.SliceLayout(1, o_layout))
    dims = gl.arange(0, D, layout=gl.SliceLayout(0, o_layout))
    head_row = (pair * G + rows).to(gl.int64)
    gl.store(PO + ((head_row * n_splits + split) * D)[:, None] + dims[None, :], acc, mask=(rows < G)[:, None])
    rows_s = gl.arange(0, M_WG, layout=gl.SliceLayout(1, s_layout))
    hr_s = (pair * G + rows_s).to(gl.int64) * ml_stride + split
    gl.store(PM + hr_s, m_i, mask=rows_s < G)
    gl.store(PL + hr_s, l_i, mask=rows_s < G)


@gluon.constexpr_function
def _math_layouts(SWAP, BLOCK_N, D):
    """(scores, output, P operand) layouts: wgmma accumulators of BLOCK_N / D columns, or, swapped,
    one layout of G_BOX = 8 columns for both (the P operand then goes through shared memory)."""
    if SWAP:
        return _wgmma_layout(8), _wgmma_layout(8), None
    o = _wgmma_layout(D)
    return _wgmma_layout(BLOCK_N), o, gl.DotOperandLayout(operand_index=0, parent=o, k_width=2)


@gluon.jit
def _fresh_state(SWAP: gl.constexpr, BLOCK_N: gl.constexpr, D: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr):
    """An item's (m, l, acc) before its first tile."""
    if SWAP:
        m_i, l_i, acc = _fresh_state_t(BLOCK_N, D, 8, s_layout)
    else:
        m_i = gl.full([M_WG], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
        l_i = gl.zeros([M_WG], gl.float32, gl.SliceLayout(1, s_layout))
        acc = gl.zeros([M_WG, D], gl.float32, o_layout)
    return m_i, l_i, acc


@gluon.jit
def _attend(SWAP: gl.constexpr, q_s, k_t, v_t, p_s, key0, L, qk_scale, m_i, l_i, acc, s_layout: gl.constexpr,
            o_layout: gl.constexpr, p_layout: gl.constexpr):
    if SWAP:
        m_i, l_i, acc = _attend_tile_t(q_s, k_t, v_t, p_s, key0, L, qk_scale, m_i, l_i, acc, s_layout, 4)  # one warpgroup
    else:
        m_i, l_i, acc = _attend_tile(q_s, k_t, v_t, key0, L, qk_scale, m_i, l_i, acc, s_layout, o_layout, p_layout)
    return m_i, l_i, acc


@gluon.jit
def _finish(SWAP: gl.constexpr, PO, PM, PL, pair, G, split, n_splits, ml_stride, m_i, l_i, acc, s_layout: gl.constexpr,
            o_layout: gl.constexpr):
    if SWAP:
        _store_partial_t(PO, PM, PL, pair, G, split, n_splits, ml_stride, m_i, l_i, acc, s_layout)
    else:
        _store_partial(PO, PM, PL, pair, G, split, n_splits, ml_stride, m_i, l_i, acc, s_layout, o_layout)


# The cluster merge (cluster > 0): the CL programs of one (sequence, KV head) run as one thread-block
# cluster (Hopper), each over 1/CL of its keys, and merge their partials through distributed shared
# memory instead of a second kernel: each program writes its (m, l, accᵀ) to its own shared memory,
# one cluster barrier, then program r reads rows d ≡ r (mod CL) from all CL peers and stores them
# finished. Gluon has no cross-CTA op that lowers on sm_90 in Triton 3.6 (a cross-CTA reduce asserts,
# a cross-CTA convert_layout emits invalid mapa), so the exchange is PTX: the buffers are .shared
# variables declared inside the asm (a function-scope declaration ptxas accepts), the kernel is
# compiled for one CTA and launched with a cluster dimension (see gluon_decode).
@gluon.constexpr_function
def _cluster_merge_asm(CL):
    """PTX for one thread's row of the merge: $0-$7 the finished row (8 query columns), $8-$15 its
    accᵀ row, $16-$23 m, $24-$31 l (one a column), $32 the row index. Every thread stores its row
    and m, l into slot %tid.x; the owners of a row fold the CL peers' slots as an online softmax
    (a peer with no keys has m = -inf, l = 0: its weight is 0). Ends with the cluster barrier's
    arrive; _cluster_wait is its wait, so no program exits while a peer still reads it."""
    BATCH = min(CL, 4)  # peers whose loads are in flight at once: 24 registers each (all 16 spill)
    f = lambda r: "{" + ", ".join(r) + "}"
    ops = lambda a: [f"${a + j}" for j in range(8)]
    body = [".reg .pred own, empty;", ".reg .b32 t, rk, a, po, pm, pa;",
            f".reg .f32 M<8>, S<8>, A<8>, Mn, Mr, x, y, mc<{8 * BATCH}>, lc<{8 * BATCH}>, oc<{8 * BATCH}>;",
            # one array, a multiple of 1 KB: Triton's dynamic shared memory follows it, and its TMA
            # and wgmma buffers (128-byte swizzle) need 1 KB alignment (4160 bytes gave a misaligned address)
            ".shared .align 1024 .b8 cm[5120];",  # [0, 4096): a thread's 8 o values; [4096, 4160): m, l
            "mov.u32 t, %tid.x;", "mov.u32 rk, %cluster_ctarank;",
            "mov.u32 a, cm;", "shl.b32 po, t, 5;", "add.u32 po, a, po;", "add.u32 pm, a, 4096;",
            f"st.shared.v4.f32 [po], {f(ops(8)[:4])};", f"st.shared.v4.f32 [po+16], {f(ops(8)[4:])};",
            f"st.shared.v4.f32 [pm], {f(ops(16)[:4])};", f"st.shared.v4.f32 [pm+16], {f(ops(16)[4:])};",
            f"st.shared.v4.f32 [pm+32], {f(ops(24)[:4])};", f"st.shared.v4.f32 [pm+48], {f(ops(24)[4:])};",
            "barrier.cluster.arrive.release.aligned;", "barrier.cluster.wait.acquire.aligned;",
            f"rem.u32 a, $32, {CL};", "setp.eq.u32 own, a, rk;"]
    for c in range(CL):
        mc, lc, oc = ([f"{n}{8 * (c % BATCH) + j}" for j in range(8)] for n in ("mc", "lc", "oc"))
        body += [f"mapa.shared::cluster.u32 pa, pm, {c};",
                 f"@own ld.shared::cluster.v4.f32 {f(mc[:4])}, [pa];", f"@own ld.shared::cluster.v4.f32 {f(mc[4:])}, [pa+16];",
                 f"@own ld.shared::cluster.v4.f32 {f(lc[:4])}, [pa+32];", f"@own ld.shared::cluster.v4.f32 {f(lc[4:])}, [pa+48];",
                 f"mapa.shared::cluster.u32 pa, po, {c};",
                 f"@own ld.shared::cluster.v4.f32 {f(oc[:4])}, [pa];", f"@own ld.shared::cluster.v4.f32 {f(oc[4:])}, [pa+16];"]
        for j in range(8):
            if c == 0:
                body += [f"mov.f32 M{j}, {mc[j]};", f"mov.f32 S{j}, {lc[j]};", f"mov.f32 A{j}, {oc[j]};"]
            else:  # (M, S, A) and peer c's (m, l, o), both rescaled to the larger max (0 where both are -inf)
                body += [f"max.f32 Mn, M{j}, {mc[j]};", "setp.eq.f32 empty, Mn, 0fFF800000;", "selp.f32 Mr, 0f00000000, Mn, empty;",
                         f"sub.f32 x, M{j}, Mr;", "ex2.approx.ftz.f32 x, x;", f"sub.f32 y, {mc[j]}, Mr;", "ex2.approx.ftz.f32 y, y;",
                         f"mul.f32 S{j}, S{j}, x;", f"fma.rn.f32 S{j}, {lc[j]}, y, S{j};",
                         f"mul.f32 A{j}, A{j}, x;", f"fma.rn.f32 A{j}, {oc[j]}, y, A{j};", f"mov.f32 M{j}, Mn;"]
    body += [f"div.rn.f32 ${j}, A{j}, S{j};" for j in range(8)]
    body += ["barrier.cluster.arrive.relaxed.aligned;"]
    return "{\n" + "\n".join(body) + "\n}"


_CLUSTER_MERGE_CONSTRAINTS = gl.constexpr("=f," * 8 + "f," * 24 + ",".join(["r"] * 8))


@gluon.jit
def _cluster_wait(num_warps: gl.constexpr):
    gl.inline_asm_elementwise("barrier.cluster.wait.aligned; mov.u32 $0, $1;", "=r,r", [_lanes(num_warps)],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _cluster_merge_t(O, pair, G, rank, m_i, l_i, acc, s_layout: gl.constexpr, CL: gl.constexpr, num_warps: gl.constexpr):
    """The swapped state's rows d ≡ rank (mod CL) of o[pair·G + g, d], g < G, merged over the cluster."""
    D: gl.constexpr = acc.type.shape[0]
    gl.static_assert(num_warps == 4, "the asm's buffer holds 128 threads' rows")
    row8: gl.constexpr = gl.BlockedLayout([1, 8], [32, 1], [num_warps, 1], [1, 0])  # a thread's 8 columns: one asm call
    o = gl.convert_layout(acc, row8)
    zero = gl.zeros([D, 8], gl.float32, row8)
    m = gl.convert_layout(m_i, gl.SliceLayout(0, row8))[None, :] + zero
    l = gl.convert_layout(gl.sum(l_i, 0), gl.SliceLayout(0, row8))[None, :] + zero
    rows = gl.arange(0, D, layout=gl.SliceLayout(1, row8))
    cols = gl.arange(0, 8, layout=gl.SliceLayout(0, row8))
    out = gl.inline_asm_elementwise(_cluster_merge_asm(CL), _CLUSTER_MERGE_CONSTRAINTS,
                                    [o, m, l, rows[:, None] + gl.zeros([D, 8], gl.int32, row8)],
                                    dtype=gl.float32, is_pure=False, pack=8)
    mine = ((rows % CL) == rank)[:, None] & (cols < G)[None, :]
    gl.store(O + ((pair * G + cols).to(gl.int64) * D)[None, :] + rows[:, None], out.to(O.dtype.element_ty), mask=mine)
    _cluster_wait(num_warps)


@gluon.jit
def _decode_persistent(q_desc, k_desc, v_desc, PO, PM, PL, CNT, SIG, O, L, S_rows, n_chunks, total, G, ml_stride, qk_scale,
                       C: gl.constexpr, STAGES: gl.constexpr, DYNAMIC: gl.constexpr, READ_ONLY: gl.constexpr,
                       SWAP: gl.constexpr, SIGNAL: gl.constexpr, CLUSTER: gl.constexpr, num_warps: gl.constexpr):
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    D: gl.constexpr = k_desc.block_type.shape[1]
    gl.static_assert(C >= STAGES - 1, "the loads run at most one item ahead")
    pid = gl.program_id(0)
    P = gl.num_programs(0)
    _launch_dependents(num_warps)
    last = total + 2 * P - 1  # see the module doc

    k_bufs, v_bufs, q_bufs, p_bufs = _stage_buffers(k_desc, v_desc, q_desc, STAGES, SWAP, 1)
    ready = _barriers(STAGES)
    q_ready = _barriers(2)

    s_layout: gl.constexpr = _math_layouts(SWAP, BLOCK_N, D)[0]
    o_layout: gl.constexpr = _math_layouts(SWAP, BLOCK_N, D)[1]
    p_layout: gl.constexpr = _math_layouts(SWAP, BLOCK_N, D)[2]

    cur = pid  # no ticket for the first item: its loads start at once
    nxt_t = _draw(CNT, 1, DYNAMIC, num_warps)  # tickets in flight: read one item after they are drawn
    fut_t = _draw(CNT, 2, DYNAMIC, num_warps)
    drawn = 3
    for u in gl.static_range(STAGES - 1):  # the prologue: the first item's first tiles
        _issue(cur, u, u, 0, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready, q_ready,
               L, S_rows, n_chunks, total, G, C, STAGES, BLOCK_N, READ_ONLY)
    n = 0  # tiles consumed
    seq = 0  # items done
    while cur < total:
        pair, chunk, slot = _walk_item(cur, seq, n_chunks)
        m_i, l_i, acc = _fresh_state(SWAP, BLOCK_N, D, s_layout, o_layout)
        if not READ_ONLY:
            mbarrier.wait(q_ready.index(slot), (seq // 2) & 1)
        q_s = q_bufs.index(slot)
        nxt = cur  # read from its ticket at the next item's first load
        for t in gl.static_range(C):
            # every warp is done with the stage the next load overwrites (used by tile n - 1)
            gl.thread_barrier()
            fence_async_shared()
            ahead = t + STAGES - 1  # the tile loaded now, counted from this item's first
            if ahead == C:  # the first load of the next item: its ticket is needed now
                nxt = _item(nxt_t, CNT, last, P, pid, DYNAMIC)
            if ahead < C:
                _issue(cur, ahead, n + STAGES - 1, slot, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready, q_ready,
                       L, S_rows, n_chunks, total, G, C, STAGES, BLOCK_N, READ_ONLY)
            else:
                _issue(nxt, ahead - C, n + STAGES - 1, 1 - slot, k_desc, v_desc, q_desc, k_bufs, v_bufs, q_bufs, ready,
                       q_ready, L, S_rows, n_chunks, total, G, C, STAGES, BLOCK_N, READ_ONLY)
            s = n % STAGES
            mbarrier.wait(ready.index(s), (n // STAGES) & 1)
            key0 = (chunk * C + t) * BLOCK_N
            if not READ_ONLY:
                if key0 < L:
                    m_i, l_i, acc = _attend(SWAP, q_s, k_bufs.index(s), v_bufs.index(s), p_bufs.index(0), key0, L, qk_scale, m_i, l_i,
                                            acc, s_layout, o_layout, p_layout)
            n += 1
        if CLUSTER > 0 and not READ_ONLY:  # one item a program, its cluster's rank = chunk: merged in the cluster
            gl.static_assert(SWAP, "the cluster merge takes the swapped state")
            _cluster_merge_t(O, pair, G, chunk, m_i, l_i, acc, s_layout, CLUSTER, num_warps)
        elif not READ_ONLY:  # the item's partial: split index = chunk
            _finish(SWAP, PO, PM, PL, pair, G, chunk, n_chunks, ml_stride, m_i, l_i, acc, s_layout, o_layout)
            if SIGNAL:  # every warp's partial stores, then one release: the polling merge may read them
                gl.thread_barrier()
                gl.atomic_add(SIG + pair, 1, sem="release", scope="gpu")
        seq += 1
        cur = nxt
        nxt_t = fut_t
        fut_t = _draw(CNT, drawn, DYNAMIC, num_warps)
        drawn += 1
    _item(nxt_t, CNT, last, P, pid, DYNAMIC)  # the two past the end: read for the counter's reset
    _item(fut_t, CNT, last, P, pid, DYNAMIC)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
    for i in gl.static_range(2):
        mbarrier.invalidate(q_ready.index(i))


# ---------------------------------------------------------------------------------------------
# Warp-specialized: a producer warp streams, one or two consumer warpgroups compute
# ---------------------------------------------------------------------------------------------
@gluon.jit
def _ws_producer(a, C: gl.constexpr, STAGES: gl.constexpr, NC: gl.constexpr):
    """One warp: the static item sequence's K/V tiles into the ring (waiting for a stage to be
    released by its consumer) and each item's q rows into one of two q buffers."""
    (q_desc, k_desc, v_desc, k_bufs, v_bufs, q_bufs, p_bufs, ready, empty, q_ready, q_empty,
     PO, PM, PL, L, S_rows, n_chunks, total, G, ml_stride, qk_scale) = a
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    G_BOX: gl.constexpr = q_desc.block_type.shape[0]
    pid = gl.program_id(0)
    P = gl.num_programs(0)
    n = 0
    seq = 0
    item = pid
    while item < total:
        pair, chunk, slot = _walk_item(item, seq, n_chunks)
        mbarrier.wait(q_empty.index(slot), ((seq // 2) & 1) ^ 1)  # both consumers are done with item seq - 2
        mbarrier.expect(q_ready.index(slot), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [pair * G, 0], q_ready.index(slot), q_bufs.index(slot).slice(0, G_BOX))
        for t in gl.static_range(C):
            s = n % STAGES
            mbarrier.wait(empty.index(s), ((n // STAGES) & 1) ^ 1)
            key0 = (chunk * C + t) * BLOCK_N
            bar = ready.index(s)
            mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes, pred=key0 < L)
            mbarrier.arrive(bar, pred=key0 >= L)
            row = pair * S_rows + key0
            tma.async_copy_global_to_shared(k_desc, [row, 0], bar, k_bufs.index(s), pred=key0 < L)
            tma.async_copy_global_to_shared(v_desc, [row, 0], bar, v_bufs.index(s), pred=key0 < L)
            n += 1
        seq += 1
        item += P


@gluon.jit
def _ws_consumer(a, C: gl.constexpr, STAGES: gl.constexpr, NC: gl.constexpr, SWAP: gl.constexpr, c: gl.constexpr):
    """One warpgroup: tiles t ≡ c (mod NC) of every item, its own online softmax, one partial per
    item (split NC·chunk + c), each stage released as soon as its PV product is done."""
    (q_desc, k_desc, v_desc, k_bufs, v_bufs, q_bufs, p_bufs, ready, empty, q_ready, q_empty,
     PO, PM, PL, L, S_rows, n_chunks, total, G, ml_stride, qk_scale) = a
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    D: gl.constexpr = k_desc.block_type.shape[1]
    s_layout: gl.constexpr = _math_layouts(SWAP, BLOCK_N, D)[0]
    o_layout: gl.constexpr = _math_layouts(SWAP, BLOCK_N, D)[1]
    p_layout: gl.constexpr = _math_layouts(SWAP, BLOCK_N, D)[2]
    pid = gl.program_id(0)
    P = gl.num_programs(0)
    n = 0
    seq = 0
    item = pid
    while item < total:
        pair, chunk, slot = _walk_item(item, seq, n_chunks)
        mbarrier.wait(q_ready.index(slot), (seq // 2) & 1)
        q_s = q_bufs.index(slot)
        m_i, l_i, acc = _fresh_state(SWAP, BLOCK_N, D, s_layout, o_layout)
        for t in gl.static_range(C):
            if t % NC == c:
                s = (n + t) % STAGES
                mbarrier.wait(ready.index(s), ((n + t) // STAGES) & 1)
                key0 = (chunk * C + t) * BLOCK_N
                if key0 < L:
                    m_i, l_i, acc = _attend(SWAP, q_s, k_bufs.index(s), v_bufs.index(s), p_bufs.index(c), key0, L, qk_scale,
                                            m_i, l_i, acc, s_layout, o_layout, p_layout)
                mbarrier.arrive(empty.index(s))
        mbarrier.arrive(q_empty.index(slot))
        _finish(SWAP, PO, PM, PL, pair, G, chunk * NC + c, n_chunks * NC, ml_stride, m_i, l_i, acc, s_layout, o_layout)
        n += C
        seq += 1
        item += P


@gluon.jit
def _ws_consumer1(a, C: gl.constexpr, STAGES: gl.constexpr, NC: gl.constexpr, SWAP: gl.constexpr):
    _ws_consumer(a, C, STAGES, NC, SWAP, 1)


@gluon.jit
def _decode_ws(q_desc, k_desc, v_desc, PO, PM, PL, L, S_rows, n_chunks, total, G, ml_stride, qk_scale,
               C: gl.constexpr, STAGES: gl.constexpr, NC: gl.constexpr, SWAP: gl.constexpr, CONSUMER_REGS: gl.constexpr,
               num_warps: gl.constexpr):
    _launch_dependents(num_warps)
    k_bufs, v_bufs, q_bufs, p_bufs = _stage_buffers(k_desc, v_desc, q_desc, STAGES, SWAP, NC)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=NC)
    a = (q_desc, k_desc, v_desc, k_bufs, v_bufs, q_bufs, p_bufs, ready, empty, q_ready, q_empty,
         PO, PM, PL, L, S_rows, n_chunks, total, G, ml_stride, qk_scale)
    if NC == 2:  # the second consumer first among the workers: its 4 warps then make an aligned warpgroup
        gl.warp_specialize([(_ws_consumer, (a, C, STAGES, NC, SWAP, 0)), (_ws_consumer1, (a, C, STAGES, NC, SWAP)),
                            (_ws_producer, (a, C, STAGES, NC))], [4, 1], [CONSUMER_REGS, 24])
    else:
        gl.warp_specialize([(_ws_consumer, (a, C, STAGES, NC, SWAP, 0)), (_ws_producer, (a, C, STAGES, NC))], [1], [24])


# ---------------------------------------------------------------------------------------------
# The polling merge: launched under PDL while the decode kernel runs, each program waits for its
# (sequence, KV head)'s partials (a counter the decode kernel bumps with release semantics once
# per item) rather than for the whole grid, so the merge of the first pairs done overlaps the rest
# of the stream and the tail after the last partial is one L2 round trip and one merge.
# ---------------------------------------------------------------------------------------------
@triton.jit
def _merge_polling(PO, PM, PL, O, SIG, DONE, H, G, num_splits, ml_stride, stride_ob, stride_oh,
                   HEAD_DIM: tl.constexpr, DIMS: tl.constexpr, CHUNK: tl.constexpr, STAGES: tl.constexpr,
                   BACKOFF_NS: tl.constexpr):
    """kernels.attention_decode._decode_merge's grid (B, H, HEAD_DIM // DIMS) and merge, after its
    pair's counter reaches num_splits. The last program of a pair to pass zeroes the counters for
    the next call (the next decode kernel starts after this grid ends: it is not launched with PDL)."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    pair = b * (H // G) + h // G
    seen = tl.atomic_add(SIG + pair, 0, sem="acquire", scope="gpu")
    while seen < num_splits:
        if BACKOFF_NS > 0:  # sleep between polls: the waiting programs share SMs with the decode kernel
            seen = tl.inline_asm_elementwise("nanosleep.u32 $2; mov.u32 $0, $1;", "=r,r,r", [seen, seen * 0 + BACKOFF_NS],
                                             dtype=tl.int32, is_pure=False, pack=1)
        seen = tl.atomic_add(SIG + pair, 0, sem="acquire", scope="gpu")
    ad._merge_partials(PO, PM, PL, O, b, h, 1, H, num_splits, ml_stride, stride_ob, stride_oh, tl.program_id(2) * DIMS,
                       HEAD_DIM, DIMS, 1, CHUNK, STAGES)
    if tl.atomic_add(DONE + pair, 1, sem="relaxed", scope="gpu") == G * tl.num_programs(2) - 1:
        tl.atomic_xchg(SIG + pair, 0, sem="relaxed", scope="gpu")
        tl.atomic_xchg(DONE + pair, 0, sem="relaxed", scope="gpu")


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------

TILE_BYTES = 16384  # of K per tile, as the split kernel's rule: 64 keys at D = 128, 128 at D = 64


def gluon_decode(q, k, v, L, *, kind="ws2", C=4, stages=4, read_only=False, merge=True, out=None, per_sm=1, backoff_ns=0,
                 cluster=0, block_n=None):
    """o [B, H, D] of one query per sequence over the contiguous bf16 cache k, v [B, H_kv, S, D],
    every sequence L <= S keys. kind: "s" / "d" the one-partition kernel with static / ticket
    items (read_only: nothing computed, out returned unwritten), "ws1" / "ws2" the warp-specialized
    one with 1 / 2 consumer warpgroups; a trailing "t" swaps the math (K qᵀ, G <= 8). merge:
    True the launcher's merge kernel (under PDL, after the whole grid), "poll" the polling merge
    (one-partition kinds), False none (out is returned unwritten). cluster: CL > 0 runs CL programs
    a (sequence, KV head) as a thread-block cluster, each over 1/CL of the keys (C is then the tiles
    that takes), merged in the cluster (kind "st" only; no merge kernel). block_n: keys a tile
    (default TILE_BYTES of K)."""
    swap = kind.endswith("t")
    kind = kind.removesuffix("t")
    B, H_kv, S, D = k.shape
    H = q.shape[1]
    G = H // H_kv
    block_n = block_n or TILE_BYTES // (D * 2)
    g_box = max(8, ad._pow2(G))
    kv_layout = gl.NVMMASharedLayout.get_default_for([block_n, D], gl.bfloat16)
    k_desc = TensorDescriptor.from_tensor(k.view(B * H_kv * S, D), [block_n, D], kv_layout)
    v_desc = TensorDescriptor.from_tensor(v.view(B * H_kv * S, D), [block_n, D], kv_layout)
    q_desc = TensorDescriptor.from_tensor(q.view(B * H, D), [g_box, D], gl.NVMMASharedLayout.get_default_for([g_box, D], gl.bfloat16))
    if cluster:
        if kind != "s" or not swap or not 2 <= cluster <= 16:
            raise ValueError(f"cluster={cluster}: needs kind 'st' and 2 to 16 programs a cluster")
        C = max(ad._cdiv(ad._cdiv(L, block_n), cluster), stages - 1)  # chunks past L load nothing, leave m = -inf
        n_chunks = cluster
    else:
        n_chunks = ad._cdiv(ad._cdiv(L, block_n), C)
    total = B * H_kv * n_chunks
    P = total if cluster else per_sm * ad._sm_count(q.device)
    nc = int(kind[2:]) if kind.startswith("ws") else 1
    splits = n_chunks * nc
    ml_stride = ad._cdiv(splits, 32) * 32
    poll = merge == "poll" and not read_only
    if poll and kind.startswith("ws"):
        raise ValueError(f"merge='poll' needs a one-partition kind (s, d, st, dt), not {kind!r}")
    key = (q.device, B * H * splits * D, B * H * ml_stride, B * H_kv)
    if key not in _BUFS:
        _BUFS[key] = (torch.empty(B * H * splits * D, dtype=torch.float32, device=q.device),
                      torch.empty(B * H * ml_stride, dtype=torch.float32, device=q.device),
                      torch.empty(B * H * ml_stride, dtype=torch.float32, device=q.device),
                      torch.zeros(1, dtype=torch.int32, device=q.device),  # the ticket counter
                      torch.zeros(2, B * H_kv, dtype=torch.int32, device=q.device))  # the polling merge's counters
    po, pm, pl, cnt, sig = _BUFS[key]
    qk_scale = LOG2E / D ** 0.5
    out = torch.empty_like(q) if out is None else out
    if not kind.startswith("ws"):
        args = (q_desc, k_desc, v_desc, po, pm, pl, cnt, sig[0], out, L, S, n_chunks, total, G, ml_stride, qk_scale)
        kw = dict(C=C, STAGES=stages, DYNAMIC=kind == "d", READ_ONLY=read_only, SWAP=swap, SIGNAL=poll, CLUSTER=cluster, num_warps=4)
        grid = (P,)
        if cluster:  # compiled for one CTA; Triton's launcher sets the cluster dimension from num_ctas and launches grid·num_ctas
            compiled = _decode_persistent.warmup(*args, grid=grid, **kw)
            nw, _, shared = compiled.packed_metadata
            if compiled not in _CLUSTER_FIT:  # a cluster's programs share one GPC; this also allows sizes over 8 (non-portable)
                compiled._init_handles()
                _CLUSTER_FIT[compiled] = triton.runtime.driver.active.utils.cuOccupancyMaxActiveClusters(compiled.function, shared, cluster)
                print(f"  cluster {cluster} (C={C}, {stages} stages): {_CLUSTER_FIT[compiled]} clusters fit at once", flush=True)
            compiled.packed_metadata = (nw, cluster, shared)
            grid = (P // cluster,)
        _decode_persistent[grid](*args, **kw)
        if cluster:  # merged in the kernel (read_only: out unwritten)
            return out
    else:
        _decode_ws[(P,)](q_desc, k_desc, v_desc, po, pm, pl, L, S, n_chunks, total, G, ml_stride, qk_scale,
                         C=C, STAGES=stages, NC=nc, SWAP=swap, CONSUMER_REGS=192, num_warps=4)
    if merge and not read_only:
        dims = ad._merge_dims(B * H, D, ad._sm_count(q.device))
        chunk = max(1, min(ad._pow2(splits), ad.MERGE_KERNEL_TILE // dims))
        if poll:
            _merge_polling[(B, H, D // dims)](po, pm, pl, out, sig[0], sig[1], H, G, splits, ml_stride, out.stride(0), out.stride(1),
                                              HEAD_DIM=D, DIMS=dims, CHUNK=chunk, STAGES=ad.MERGE_STAGES, BACKOFF_NS=backoff_ns,
                                              num_warps=1, launch_pdl=True)
        else:
            ad._decode_merge[(B, H, D // dims)](po, pm, pl, out, H, splits, ml_stride, out.stride(0), out.stride(1),
                                                HEAD_DIM=D, DIMS=dims, CHUNK=chunk, STAGES=ad.MERGE_STAGES, PDL=True, TRIGGER=False,
                                                num_warps=1, launch_pdl=True)
    return out


_BUFS = {}
_CLUSTER_FIT = {}
CONFIGS = [  # (kind, C, stages, more gluon_decode keywords); session 15 also timed ws2 c4s5 c2s4 c8s6 c8s4
    # and ws1 c4s5, session 17 st c8s6, ws1t c1s4 c4s4, ws2t c2s4 c8s6 and st at 2-3 programs an SM with
    # 2-3 stages (all slower)
    ("ws2", 4, 4, {}), ("s", 4, 4, {}), ("d", 4, 4, {}), ("st", 4, 4, {}), ("st", 2, 3, {}), ("ws2t", 4, 4, {}),
    ("st", 4, 4, {"merge": "poll"}), ("st", 2, 3, {"merge": "poll"}), ("st", 2, 3, {"merge": "poll", "per_sm": 2}),
    ("st", 2, 2, {"merge": "poll", "per_sm": 2}), ("st", 1, 2, {"merge": "poll", "per_sm": 2})]

# --cluster: the cluster merge (C is then set from L: one item a program) beside st c4s4; session 18
# also timed cluster 16 at 4 stages, 9 at 4 stages and 12 (2 waves or slower) and 9 with 128-key tiles
CLUSTER_CONFIGS = [("st", 4, 4, {}), ("st", 0, 3, {"cluster": 16}), ("st", 0, 4, {"cluster": 8}), ("st", 0, 6, {"cluster": 9}),
                   ("st", 0, 3, {"cluster": 8, "block_n": 128}), ("st", 0, 4, {"cluster": 8, "read_only": True})]
# --tiles: the persistent swapped kernel with 128-key tiles (256 at D = 64), beside st c4s4
TILE_CONFIGS = [("st", 4, 4, {}), ("st", 2, 3, {"block_n": 128}), ("st", 4, 3, {"block_n": 128}), ("st", 1, 2, {"block_n": 128}),
                ("st", 2, 2, {"block_n": 128}), ("st", 3, 3, {"block_n": 128}), ("st", 2, 2, {"block_n": 128, "merge": False}),
                ("st", 2, 2, {"block_n": 256}), ("st", 1, 2, {"block_n": 256})]


def _config_name(kind, C, st, kw):
    return f"{kind} c{C}s{st}" + "".join(f" {k}={v}" for k, v in kw.items())


def _writes_out(kw) -> bool:
    """Whether a config's call writes o (read_only and merge=False leave it unwritten)."""
    return not kw.get("read_only") and kw.get("merge", True) is not False
READ_CONFIGS = [("s", 4, 4), ("s", 8, 6)]
SHAPES = [(1, 32, 8, 8192), (1, 9, 3, 8192), (1, 32, 8, 32768), (1, 9, 3, 32768), (4, 32, 8, 8192), (16, 32, 8, 8192), (1, 32, 8, 131072)]
ROUNDS = 3


def check():
    """Every config against the float64 reference on odd shapes (L not a multiple of a tile or an
    item, G = 3 and 4, more items than programs and fewer), twice per config with the partials
    poisoned in between (an item left undone shows as NaN) and the ticket counter back at zero."""
    dev = torch.device("cuda")
    worst = 0.0
    for B, H, H_kv, L, S in ((1, 32, 8, 8192, 8192), (3, 9, 3, 1000, 1040), (2, 32, 8, 777, 800), (1, 9, 3, 64, 64), (5, 32, 8, 3000, 3000)):
        D = 128 if H == 32 else 64
        q = torch.randn(B, H, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(B, H_kv, S, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        pk = paged_from_contiguous(k, v, torch.full((B,), L, dtype=torch.int32, device=dev))
        ref = decode_reference(q, **pk.kwargs())
        for kind, C, st, kw in CONFIGS:
            if not _writes_out(kw):
                continue
            errs = []
            try:
                for _ in range(2):
                    for bufs in _BUFS.values():
                        for b in bufs[:3]:
                            b.fill_(float("nan"))
                    o = gluon_decode(q, k, v, L, kind=kind, C=C, stages=st, out=torch.full_like(q, float("nan")), **kw)  # an element left unwritten shows
                    torch.cuda.synchronize()
                    errs.append(rel_err(o, ref))
            except triton.runtime.errors.OutOfResources as e:  # e.g. 256-key tiles at D = 128: say so, go on
                print(f"check B={B} {H}/{H_kv} L={L} {_config_name(kind, C, st, kw)}: does not fit ({e})", flush=True)
                continue
            counters = sum(int(bufs[3].item()) != 0 or bool(bufs[4].any()) for bufs in _BUFS.values())
            ok = all(e < 2e-2 for e in errs) and counters == 0
            worst = max(worst, *errs)
            print(f"check B={B} {H}/{H_kv} L={L} {_config_name(kind, C, st, kw)}: err {errs[0]:.1e} {errs[1]:.1e}, counters left nonzero {counters}"
                  f"{'' if ok else '  FAILED'}", flush=True)
    print(f"check: worst err {worst:.1e}", flush=True)


def breakdown(shapes):
    """Where a persistent call's time goes: the whole call, its kernel without the merge, and
    the stream alone, one-partition (s) and warp-specialized (ws2), each also swapped, beside the launcher."""
    for B, H, H_kv, L in shapes:
        case = decode_case(B, H, H_kv, L)
        kvs = [(c.k_cache, c.v_cache) for c in case.caches]
        run = lambda **kw: stream_us([lambda k=k, v=v: gluon_decode(case.q, k, v, L, out=case.out, **kw) for k, v in kvs])
        variants = {"HEAD": lambda: case.time()}
        for kind in ("s", "st", "ws2", "ws2t"):
            variants[f"{kind} c4s4"] = lambda kind=kind: run(kind=kind)
            variants[f"{kind} c4s4 no merge"] = lambda kind=kind: run(kind=kind, merge=False)
        variants["s c4s4 read-only"] = lambda: run(kind="s", read_only=True)
        times = {n: [] for n in variants}
        for _ in range(ROUNDS):
            for n, f in variants.items():
                times[n].append(f())
        print(f"B={B} {H}/{H_kv} L={L}: copy {case.copy_us:.2f} us | " + " | ".join(f"{n} {statistics.median(t):.2f}" for n, t in times.items()), flush=True)


def main(argv):
    for flag, configs in (("--cluster", CLUSTER_CONFIGS), ("--tiles", TILE_CONFIGS)):
        if flag in argv:
            argv.remove(flag)
            CONFIGS[:] = configs
    if argv[:1] == ["--check"]:
        return check()
    if argv[:1] == ["--breakdown"]:
        return breakdown([tuple(int(x) for x in a.split(",")) for a in argv[1:]] or [(1, 32, 8, 8192), (1, 9, 3, 8192)])
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv] or SHAPES
    t0 = time.perf_counter()
    for B, H, H_kv, L in shapes:
        case = decode_case(B, H, H_kv, L)
        kvs = [(c.k_cache, c.v_cache) for c in case.caches]
        nbytes = 2 * kvs[0][0].numel() * 2
        floor = read_floor_us(nbytes)
        variants = {"HEAD": lambda: case.time()}
        errs = {"HEAD": case.rel_err()}
        for kind, C, st, kw in CONFIGS:
            name = _config_name(kind, C, st, kw)
            fn = lambda kind=kind, C=C, st=st, kw=kw: [lambda k=k, v=v: gluon_decode(case.q, k, v, L, kind=kind, C=C, stages=st, out=case.out, **kw)
                                                       for k, v in kvs]
            try:
                o = gluon_decode(case.q, *kvs[0], L, kind=kind, C=C, stages=st, **kw)
                o2 = gluon_decode(case.q, *kvs[0], L, kind=kind, C=C, stages=st, **kw)  # the counters came back to zero
                torch.cuda.synchronize()
                if _writes_out(kw):
                    errs[name] = max(rel_err(x, case.ref) for x in (o, o2))
                variants[name] = lambda fn=fn: stream_us(fn())
            except Exception as e:  # a config that does not compile or fit: say so, go on
                print(f"  {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        for kind, C, st in READ_CONFIGS:
            name = f"read {kind} c{C}s{st}"
            fn = lambda kind=kind, C=C, st=st: [lambda k=k, v=v: gluon_decode(case.q, k, v, L, kind=kind, C=C, stages=st, read_only=True, out=case.out) for k, v in kvs]
            try:
                gluon_decode(case.q, *kvs[0], L, kind=kind, C=C, stages=st, read_only=True)
                variants[name] = lambda fn=fn: stream_us(fn())
            except Exception as e:
                print(f"  {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        times = {n: [] for n in variants}
        for _ in range(ROUNDS):
            for n, f in variants.items():
                times[n].append(f())
        line = f"B={B} {H}/{H_kv} L={L}: copy {case.copy_us:.2f} us, read-only floor {floor:.2f}"
        for n in variants:
            us = statistics.median(times[n])
            line += f" | {n} {us:.2f} ({case.copy_us / us:.2f} of copy{f', err {errs[n]:.1e}' if n in errs else ''})"
        print(line + f"  t={time.perf_counter() - t0:.0f}s", flush=True)
        case = kvs = variants = None  # free the caches before the next shape
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
