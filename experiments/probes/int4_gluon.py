"""Does a persistent int4 GEMV whose weight arrives by TMA read batch 1's weight as fast as a copy
of its bytes? kernels.wo_matmul's mma kernel (Triton) holds only what its registers can: ~32 KB in
flight an SM against the ~40 KB Little's law asks on an H200, and ptxas serializes the loads of
the warps it leaves uncapped (results/baselines/README.md, int4 sessions 6-10), so 4096² runs at
1.3× a copy of its int4 bytes where 3× cuBLAS needs ~1.1×. Shared memory holds more: here a
producer warp streams the weight through a ring of STAGES boxes (cp.async.bulk.tensor), so the
loads run ahead of the math by the ring's size whatever the registers, across row tiles too.

  weight: kernels.wo_matmul's "mma" layout (pack_mma: int32 [N/16, K/64, 32, 4], a 16-byte load
          is the A operand of a lane's four m16n8k16 MMAs), viewed [tiles · chunks, 128 words]
  scales: the same values re-laid [N/16 · K/G, 16] (the 16 rows of a tile beside each other), so
          a box's groups are one TMA copy (no byte repeated)
  grid:   one program per SM (or per_sm of them; fewer if there are fewer row tiles); program p
          takes the row tiles p, p + P, ... whole, so no partial sum leaves it
  boxes:  NW·U chunks (512 B each) of one tile, their groups' scales and their 64·NW·U values of
          x, one stage of the ring; consumer warp w multiplies chunks u·NW + w (U independent
          chains through the Triton kernel's asm: dequantize, 4 MMAs chained, the group scale), so
          a tile's NW warps split its K; after a tile's last box they sum across the warps and
          store its 16 outputs
  read_only: the same stream and barriers, nothing computed

What it found (H200, session 16; results/baselines/README.md, "int4, session 16"): every config
matches the reference, but none beats the Triton kernel. The stream alone, at its best (16 KB
boxes, 6 stages, one program an SM), takes 1.2-1.9 µs more than a read-only Triton kernel of the
same bytes: 5.22-5.28 µs at 4096² (the floor 3.61-3.69, the launcher's whole GEMV 5.25-5.27,
3× cuBLAS ≤ 4.52), and the math adds 0.7-4.2 µs to that.

M = 1, bf16 x, symmetric with float16 scales (quantize_int4's default), groups of 64 or 128, K/64
a multiple of NW·U (the Llama shapes and 576×1536). A probe, not the launcher. Needs an sm_90 GPU:

    python experiments/probes/int4_gluon.py --check           # every config against the reference
    python experiments/probes/int4_gluon.py [N,K ...]          # stream µs beside the launcher and cuBLAS
"""
import math, os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
import torch.nn.functional as F
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from kernels.wo_matmul import MMA_K, MMA_ROWS, _MMA_TYPES, _mma_asm, bytes_moved, dequantize, quantize_int4, wo_matmul
from lab.benchmarks._common import copy_same_bytes, rel_err, stream_us


@gluon.constexpr_function
def _consumer_layouts(U, NGB, CPG):
    """[box pass u, group in a pass, chunk in a group, g, t, word]: warp (group, chunk) holds one
    chunk of each of the box's U passes, lane 4g + t its 4 words (16 bytes) of each; and the same
    without the word axis (U values a thread)."""
    w6 = gl.BlockedLayout([U, 1, 1, 1, 1, 4], [1, 1, 1, 8, 4, 1], [1, NGB, CPG, 1, 1, 1], [5, 4, 3, 2, 1, 0])
    w5 = gl.BlockedLayout([U, 1, 1, 1, 1], [1, 1, 1, 8, 4], [1, NGB, CPG, 1, 1], [4, 3, 2, 1, 0])
    return w6, w5


@gluon.constexpr_function
def _axis_layout(parent, rank, d):
    """The 1-d layout of axis d of `parent` (every other axis sliced away, highest first)."""
    lay = parent
    for k in reversed(range(rank)):
        if k != d:
            lay = gl.SliceLayout(k, lay)
    return lay


@gluon.jit
def _iota(n: gl.constexpr, d: gl.constexpr, rank: gl.constexpr, layout: gl.constexpr):
    """0 .. n - 1 along axis d of a rank-`rank` tensor in `layout` (size 1 on the other axes)."""
    i = gl.arange(0, n, layout=_axis_layout(layout, rank, d))
    for k in gl.static_range(rank):
        if k != d:
            i = gl.expand_dims(i, k)
    return i


@gluon.jit
def _columns(t, lay: gl.constexpr):
    """[..., 4] -> its 4 columns (each thread's own registers), in `lay`."""
    a, b = gl.split(gl.reshape(t, t.shape[:-1] + [2, 2]))
    c0, c2 = gl.split(a)
    c1, c3 = gl.split(b)
    return (gl.convert_layout(c0, lay), gl.convert_layout(c1, lay), gl.convert_layout(c2, lay), gl.convert_layout(c3, lay))


@gluon.jit
def _producer(a, STAGES: gl.constexpr):
    """One warp: the program's tiles' boxes (codes, scales, x) into the ring, each once its stage
    is released."""
    (w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, empty, Y, N, n_tiles, n_chunks, n_groups) = a
    CB: gl.constexpr = w_desc.block_type.shape[0]  # chunks a box
    GB: gl.constexpr = s_desc.block_type.shape[0]  # groups a box
    NBYTES: gl.constexpr = w_desc.block_type.nbytes + s_desc.block_type.nbytes + x_desc.block_type.nbytes
    pid = gl.program_id(0)
    P = gl.num_programs(0)
    nb = n_chunks // CB
    i = 0
    for tile in range(pid, n_tiles, P):
        for b in range(nb):
            s = i % STAGES
            mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
            bar = ready.index(s)
            mbarrier.expect(bar, NBYTES)
            tma.async_copy_global_to_shared(w_desc, [tile * n_chunks + b * CB, 0], bar, w_bufs.index(s))
            tma.async_copy_global_to_shared(s_desc, [tile * n_groups + b * GB, 0], bar, s_bufs.index(s))
            tma.async_copy_global_to_shared(x_desc, [b * CB, 0], bar, x_bufs.index(s))
            i += 1


@gluon.jit
def _consumer(a, STAGES: gl.constexpr, U: gl.constexpr, READ_ONLY: gl.constexpr, ASM: gl.constexpr,
              CONSTRAINTS: gl.constexpr, ZZ: gl.constexpr, MAGIC: gl.constexpr, ONE: gl.constexpr):
    """NW warps: chunks u·NW + w of every box through the mma asm (U independent chains a warp);
    a tile's sum across the warps at its end."""
    (w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, empty, Y, N, n_tiles, n_chunks, n_groups) = a
    CB: gl.constexpr = w_desc.block_type.shape[0]
    GB: gl.constexpr = s_desc.block_type.shape[0]
    NW: gl.constexpr = CB // U
    NGB: gl.constexpr = GB // U
    CPG: gl.constexpr = NW // NGB
    w6: gl.constexpr = _consumer_layouts(U, NGB, CPG)[0]
    w5: gl.constexpr = _consumer_layouts(U, NGB, CPG)[1]
    flat6: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [5, 4, 3, 2, 1, 0])
    flat4: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [3, 2, 1, 0])
    pid = gl.program_id(0)
    P = gl.num_programs(0)
    nb = n_chunks // CB
    SHAPE: gl.constexpr = [U, NGB, CPG, 8, 4]
    zz = gl.full(SHAPE, ZZ, gl.int32, w5)
    magic = gl.full(SHAPE, MAGIC, gl.int32, w5)
    one = gl.full(SHAPE, ONE, gl.int32, w5)
    a0 = gl.zeros(SHAPE, gl.float32, w5)  # row g of the tile (c0), summed over this lane's chunks
    a1 = gl.zeros(SHAPE, gl.float32, w5)  # row g + 8 (c2)
    i = 0
    for tile in range(pid, n_tiles, P):
        for b in range(nb):
            s = i % STAGES
            mbarrier.wait(ready.index(s), (i // STAGES) & 1)
            if not READ_ONLY:  # (read-only: the stream and the barriers, nothing computed)
                words = w_bufs.index(s)._reinterpret(gl.int32, [U, NGB, CPG, 8, 4, 4], flat6).load(w6)
                # x: int64 words of 4 values, 16·chunk + 4t + j (the same for every g)
                xw = x_bufs.index(s)._reinterpret(gl.int64, [U, NGB, CPG, 1, 4, 4], flat6).load(w6)
                sc = s_bufs.index(s)._reinterpret(gl.float16, [U, NGB, 2, 8], flat4)  # (pass, group, row half, g)
                s_lo = gl.expand_dims(sc.slice(0, 1, dim=2).load(gl.SliceLayout(4, w5)), 4).to(gl.float32)  # [U, NGB, 1, 8, 1]
                s_hi = gl.expand_dims(sc.slice(1, 1, dim=2).load(gl.SliceLayout(4, w5)), 4).to(gl.float32)
            gl.thread_barrier()  # every consumer warp holds its words: the stage may be refilled
            mbarrier.arrive(empty.index(s))
            if not READ_ONLY:
                w0, w1, w2, w3 = _columns(words, w5)
                x0, x1, x2, x3 = _columns(xw, w5)
                a0, a1 = gl.inline_asm_elementwise(ASM, CONSTRAINTS, [w0, w1, w2, w3, x0, x1, x2, x3, s_lo, s_hi, zz, zz, magic, one, a0, a1],
                                                   dtype=(gl.float32, gl.float32), is_pure=True, pack=1)
            i += 1
        # the tile's 16 outputs: the warps' sums, from the lanes of column 0 (t = 0)
        lo = gl.sum(gl.sum(gl.sum(a0, 0), 0), 0)  # [8, 4]
        hi = gl.sum(gl.sum(gl.sum(a1, 0), 0), 0)
        o2: gl.constexpr = lo.type.layout
        g = _iota(8, 0, 2, o2)
        t = _iota(4, 1, 2, o2)
        row = tile * 16 + g
        gl.store(Y + row + t * 0, lo.to(Y.dtype.element_ty), mask=(t == 0) & (row < N))
        gl.store(Y + row + 8 + t * 0, hi.to(Y.dtype.element_ty), mask=(t == 0) & (row + 8 < N))
        a0 = gl.zeros(SHAPE, gl.float32, w5)
        a1 = gl.zeros(SHAPE, gl.float32, w5)


@gluon.jit
def _int4_stream(w_desc, s_desc, x_desc, Y, N, n_tiles, n_chunks, n_groups, STAGES: gl.constexpr, U: gl.constexpr,
                 READ_ONLY: gl.constexpr, ASM: gl.constexpr, CONSTRAINTS: gl.constexpr, ZZ: gl.constexpr,
                 MAGIC: gl.constexpr, ONE: gl.constexpr, num_warps: gl.constexpr):
    w_bufs = gl.allocate_shared_memory(w_desc.dtype, [STAGES] + w_desc.block_type.shape, w_desc.layout)
    s_bufs = gl.allocate_shared_memory(s_desc.dtype, [STAGES] + s_desc.block_type.shape, s_desc.layout)
    x_bufs = gl.allocate_shared_memory(x_desc.dtype, [STAGES] + x_desc.block_type.shape, x_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    a = (w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, empty, Y, N, n_tiles, n_chunks, n_groups)
    gl.warp_specialize([(_consumer, (a, STAGES, U, READ_ONLY, ASM, CONSTRAINTS, ZZ, MAGIC, ONE)), (_producer, (a, STAGES))],
                       [1], [24])


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------
def tile_scales(qm) -> torch.Tensor:
    """scale [N, K/G] -> [N/16 · K/G, 16]: row (tile, group) holds the group's scales of the tile's
    16 rows (rows past N: 0, never stored)."""
    N, K = qm.shape
    nt = -(-N // MMA_ROWS)
    s = torch.zeros(nt * MMA_ROWS, K // qm.group_size, dtype=qm.scale.dtype, device=qm.scale.device)
    s[:N] = qm.scale
    return s.view(nt, MMA_ROWS, -1).transpose(1, 2).contiguous().view(-1, MMA_ROWS)


class GluonInt4:
    """The probe's launcher for one weight (its descriptors built once, as a model would; x's per
    call). nw consumer warps, u chunks each a box (a box: nw·u chunks of 512 bytes)."""

    def __init__(self, qm, nw: int = 8, u: int = 2, stages: int = 8, read_only: bool = False, per_sm: int = 1):
        N, K = qm.shape
        G = qm.group_size
        nt, kc = qm.qweight.shape[:2]
        cb = nw * u
        if (qm.layout != "mma" or not qm.symmetric or qm.scale.dtype != torch.float16 or G not in (64, 128) or (nw * MMA_K) % G
                or not fits(K, G, nw, u)):
            raise ValueError(f"int4_gluon: needs a symmetric mma-layout weight with float16 scales, G 64/128, K/64 a multiple of "
                             f"nw·u and a box's scales filling 128 bytes (TMA writes shared memory 128-byte aligned); got layout "
                             f"{qm.layout}, symmetric {qm.symmetric}, scales {qm.scale.dtype}, G {G}, K/64 {kc}, nw·u {cb}")
        gb = cb * MMA_K // G
        self.words = qm.qweight.view(nt * kc, 128)
        self.scales = tile_scales(qm)
        self.w_desc = TensorDescriptor.from_tensor(self.words, [cb, 128], _flat_layout(32))
        self.s_desc = TensorDescriptor.from_tensor(self.scales, [gb, MMA_ROWS], _flat_layout(16))
        self.N, self.K, self.nt, self.kc, self.ng, self.cb = N, K, nt, kc, K // G, cb
        self.grid = (min(per_sm * torch.cuda.get_device_properties(qm.qweight.device).multi_processor_count, nt),)
        self.stages, self.read_only, self.nw, self.u = stages, read_only, nw, u

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        assert x.dtype == torch.bfloat16 and x.shape == (1, self.K) and x.is_contiguous()
        x_desc = TensorDescriptor.from_tensor(x.view(self.kc, MMA_K), [self.cb, MMA_K], _flat_layout(16))
        y = torch.empty(1, self.N, dtype=x.dtype, device=x.device) if out is None else out
        _int4_stream[self.grid](self.w_desc, self.s_desc, x_desc, y, self.N, self.nt, self.kc, self.ng,
                                STAGES=self.stages, U=self.u, READ_ONLY=self.read_only, **_ASM, num_warps=self.nw)
        return y


def fits(K: int, G: int, nw: int, u: int) -> bool:
    """Whether a box of nw·u chunks tiles K and its (float16) scales fill whole 128-byte lines."""
    cb = nw * u
    return (K // MMA_K) % cb == 0 and (cb * MMA_K // G) * MMA_ROWS * 2 % 128 == 0


def _flat_layout(bits):
    return gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=bits, rank=2)


def _asm_constants():
    """The mma kernel's asm for M = 1 and bf16 x (4 words chained, columns c0 and c2), and its constants."""
    asm, cons = _mma_asm(1, (0, 2), 4, 1)
    _, magic, one = _MMA_TYPES[1]
    zb = (magic | 0x8000) + 8  # -(magic + 8): the symmetric zero
    return dict(ASM=asm, CONSTRAINTS=cons, ZZ=(zb << 16) | zb, MAGIC=magic * 0x10001, ONE=one)


_ASM = _asm_constants()
# (consumer warps, chunks each a box, stages, programs an SM)
CONFIGS = [(8, 1, 16, 1), (8, 2, 8, 1), (8, 4, 4, 1), (8, 4, 6, 1), (16, 2, 4, 1), (8, 4, 3, 2), (4, 4, 4, 2), (4, 4, 4, 3)]
READ_CONFIGS = [(8, 1, 16, 1), (8, 4, 6, 1), (8, 4, 3, 2), (4, 4, 4, 3)]
SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (576, 1536)]
ROUNDS = 3


def _weight(N, K, G, dev, seed=0):
    torch.manual_seed(seed)
    w = torch.randn(N, K, device=dev) * 0.02
    return w, quantize_int4(w, G, True, layout="mma")


def check():
    """Every config against the float64 dequantized reference on odd shapes (N not a multiple of
    16 nor of the programs, groups of 64 and 128, fewer tiles than programs), twice with the
    output poisoned in between."""
    dev = torch.device("cuda")
    worst = 0.0
    for N, K, G in ((4096, 4096, 128), (1000, 1536, 128), (200, 4096, 64), (4100, 2048, 64), (576, 1536, 128)):
        w, qm = _weight(N, K, G, dev)
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
        ref = x.double() @ dequantize(qm, torch.float64).T
        for nw, u, st, per_sm in CONFIGS:
            if not fits(K, G, nw, u):
                continue
            f = GluonInt4(qm, nw, u, st, per_sm=per_sm)
            errs = []
            for _ in range(2):
                y = torch.full((1, N), float("nan"), dtype=x.dtype, device=dev)
                f(x, y)
                torch.cuda.synchronize()
                errs.append(rel_err(y, ref))
            ok = all(e < 1e-2 for e in errs)  # bf16 output: ~4e-3
            worst = max(worst, *errs)
            print(f"check N={N} K={K} G={G} nw{nw}u{u}s{st}p{per_sm}: err {errs[0]:.1e} {errs[1]:.1e}{'' if ok else '  FAILED'}", flush=True)
    print(f"check: worst err {worst:.1e}", flush=True)


def main(argv):
    from lab.benchmarks.wo_matmul import group_for
    from experiments.probes.read_floor import read_floor_us
    if argv[:1] == ["--check"]:
        return check()
    shapes = [tuple(int(v) for v in a.split(",")) for a in argv] or SHAPES
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    for N, K in shapes:
        w, qm = _weight(N, K, group_for(K), dev)
        qms = [qm.clone() for _ in range(int(min(64, max(2, math.ceil(100e6 / qm.nbytes)))))]
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
        ref = x.double() @ dequantize(qm, torch.float64).T
        y = torch.empty(1, N, dtype=x.dtype, device=dev)
        dense = [w.to(torch.bfloat16) for _ in range(max(2, math.ceil(100e6 / (N * K * 2))))]
        variants = {"cuBLAS": lambda: stream_us([lambda d=d: F.linear(x, d) for d in dense]),
                    "copy": lambda: stream_us(copy_same_bytes(bytes_moved(1, N, K, qm), dev)),
                    "HEAD": lambda: stream_us([lambda q=q: wo_matmul(x, q) for q in qms])}
        errs = {"HEAD": rel_err(wo_matmul(x, qm), ref)}
        floor = read_floor_us(qm.nbytes)
        for nw, u, st, per_sm, ro in [c + (False,) for c in CONFIGS] + [c + (True,) for c in READ_CONFIGS]:
            name = f"{'read ' if ro else ''}nw{nw}u{u}s{st}p{per_sm}"
            if not fits(K, group_for(K), nw, u):
                continue
            try:
                fs = [GluonInt4(q, nw, u, st, ro, per_sm) for q in qms]
                if not ro:
                    errs[name] = rel_err(fs[0](x), ref)
                variants[name] = lambda fs=fs: stream_us([lambda f=f: f(x, y) for f in fs])
            except Exception as e:  # a config that does not compile or fit: say so, go on
                print(f"  {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        times = {n: [] for n in variants}
        for _ in range(ROUNDS):
            for n, f in variants.items():
                times[n].append(f())
        med = {n: statistics.median(t) for n, t in times.items()}
        cub = med["cuBLAS"]
        line = f"N={N} K={K}: cuBLAS {cub:.2f} us, copy {med['copy']:.2f} (bound {cub / med['copy']:.2f}x; 3x <= {cub / 3:.2f}), read floor {floor:.2f}"
        for n in variants:
            if n in ("cuBLAS", "copy"):
                continue
            line += f" | {n} {med[n]:.2f} ({cub / med[n]:.2f}x{f', err {errs[n]:.1e}' if n in errs else ''})"
        print(line + f"  t={time.perf_counter() - t0:.0f}s", flush=True)
        qms = dense = fs = variants = None  # free the copies before the next shape
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
