"""What limits the int4 mma GEMV at M = 1: the kernel of the rule's tiling run with its inline PTX
rewritten, each variant timed beside the others (stream, 3 rounds interleaved, median):

  base         the launcher's asm (shifts, LOP3s, packed FMAs taking off magic + zero, 4 chained
               MMAs) and config (the rule's stagger included)
  no_dequant   WRONG RESULTS, timing only: the codes go to the MMA as they are (3 shifts a word,
               no LOP3 or FMA): what the dequantization's 8 instructions a word cost
  no_mma       WRONG RESULTS, timing only: each MMA replaced by 6 integer/float ops that keep its
               operands live: what the tensor-core work costs
  loads_only   WRONG RESULTS, timing only: a chunk's 4 words and its x words XOR-ed into the
               accumulators, nothing else: the kernel's structure alone (its loads, the cross-warp
               sum, the store)

--stagger 100,200 (session 28) times the base asm at MmaConfig.stagger 0, 100 and 200 instead: warp
w of each program spins w·S clocks before its first loads (exact results). Session 28 also timed
it with the two programs of an SM told apart (ranks 2w + (pid // 132) % 2, S/2 a rank) and with
nanosleep in place of the spin; neither was faster. --tilings "1,8,4,128,0;1,16,4,64,1" (row_tiles,
k_warps, unroll, maxnreg, x_lanes; 0 for no cap) times each of these tilings instead of the rule's.
--sum (session 29) times each variant also with Triton's tl.sum across the warps in place of
kernels.wo_matmul._m1_sum_asm (one barrier). --pairs "1,8,4,128,0@200;1,8,8,128,1@200" times these
tilings, each at its own stagger, interleaved; --rounds N (3 by default).

Session 27 timed two more variants beside these, the zero points taken off by a second MMA a word
(MmaConfig.zero_mma, chained behind each word's MMA or into accumulators of their own); they live
at commit 7fef34c. Needs a CUDA GPU:  python experiments/probes/int4_mma_limit.py [--shapes 4096x4096,...]
"""
import dataclasses, itertools, os, re, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder: int4_pick
import torch

import int4_pick  # its weights, cuBLAS timing, interleaved timing and --shapes

SHAPES = int4_pick.SHAPES if "--shapes" in sys.argv else [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (576, 1536)]
MMA = re.compile(r"^(mma\.sync\S+) \{(d0, d1, d2, d3)\}, \{([^}]*)\}, \{(\w+), (\w+)\}, \{([^}]*)\};$")


def variant_asm(name: str, cols, x_lanes: bool) -> tuple[str, str]:
    """(asm, constraints) of a variant, from kernels.wo_matmul._mma_asm's text."""
    from kernels.wo_matmul import _mma_asm
    asm, cons = _mma_asm(1, cols, 4, 1, x_lanes)
    lines = asm.splitlines()
    if name == "no_dequant":
        out = []
        for ln in lines:
            if ln.startswith("fma.rn.bf16x2"):
                continue
            if ln.startswith("lop3.b32 a"):
                dst, src = ln.split()[1].rstrip(","), ln.split()[2].rstrip(",")
                out.append(f"mov.b32 {dst}, {src};")
            else:
                out.append(ln)
        lines = out
    elif name == "loads_only":
        words = [f"${i}" for i in range(len(cols), len(cols) + 4)]  # the outputs come first, then the words
        head = [ln for ln in lines if ln == "{" or ln.startswith((".reg", "mov.b32 zr"))]
        out = head + [".reg .b32 kk;", ".reg .f32 kf;", f"lop3.b32 kk, {words[0]}, {words[1]}, {words[2]}, 0x96;",
                      f"xor.b32 kk, kk, {words[3]};"]
        for ln in lines:
            if ln.startswith("add.u32 src"):
                out.append(ln)
            elif ln.startswith(("mov.b64", "shfl")):  # every x word XOR-ed in, so that none of its loads is dead
                out += [ln, "lop3.b32 kk, kk, b0, b1, 0x96;"]
            elif ln.startswith("fma.rn.f32") and not out[-1].startswith("fma"):
                out += ["mov.b32 kf, kk;", "mov.f32 d0, kf;", "mov.f32 d2, kf;", ln]
            elif ln.startswith("fma.rn.f32") or ln == "}":
                out.append(ln)
        lines = out
    elif name == "no_mma":
        out, started = [], False
        for ln in lines:
            m = MMA.match(ln)
            if m:
                a = [v.strip() for v in m.group(3).split(",")]
                out += [f"lop3.b32 kk, {a[0]}, {a[1]}, {a[2]}, 0x96;", f"lop3.b32 kk, kk, {a[3]}, {m.group(4)}, 0x96;",
                        f"xor.b32 kk, kk, {m.group(5)};", "mov.b32 kf, kk;",
                        "add.f32 d0, d0, kf;" if started else "mov.f32 d0, kf;", "mov.f32 d2, d0;"]
                started = True
            else:
                out.append(ln)
        lines = out[:1] + [".reg .b32 kk;", ".reg .f32 kf;"] + out[1:]
    return "\n".join(lines), cons


def main():
    from kernels import wo_matmul as wm
    from kernels.wo_matmul import bytes_moved, pick_mma_config, MMA_ROWS, MMA_K, MmaConfig
    from lab.benchmarks._common import stream_us, copy_same_bytes
    import triton
    dev = torch.device("cuda")
    tiling = lambda t: MmaConfig(*map(int, t.split(",")[:3]), maxnreg=int(t.split(",")[3]) or None, x_lanes=bool(int(t.split(",")[4])))
    # label -> (asm variant, stagger (None: the config's), the one-barrier sum, config (None: the rule's or --tilings'))
    names = {n: (n, None, True, None) for n in ["base", "no_dequant", "no_mma", "loads_only"]}
    if "--stagger" in sys.argv:
        names = {f"stagger{v}": ("base", int(v), True, None) for v in ["0"] + sys.argv[sys.argv.index("--stagger") + 1].split(",")}
    if "--pairs" in sys.argv:  # "r,k,u,reg,xl@S;...": tilings with their stagger, all interleaved
        names = {p: ("base", int(p.split("@")[1]), True, tiling(p.split("@")[0])) for p in sys.argv[sys.argv.index("--pairs") + 1].split(";")}
    if "--sum" in sys.argv:  # each label also with Triton's tl.sum across the warps (before session 29)
        names.update({f"{n} tl.sum": (v, s, False, c) for n, (v, s, _, c) in list(names.items())})
    tilings = [None]
    if "--tilings" in sys.argv:
        tilings = [tiling(t) for t in sys.argv[sys.argv.index("--tilings") + 1].split(";")]
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    for (N, K), tiling in itertools.product(SHAPES, tilings):
        w, qm, qms, dq = int4_pick.int4_weight(N, K, dev)
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
        ref = x.double() @ dq.T
        cfg = tiling or pick_mma_config(1, N, K)
        cols = (0, 2)
        nt, kc = triton.cdiv(N, MMA_ROWS), triton.cdiv(K, MMA_K)
        xk, sxm = x.view(torch.int64), x.stride(0) // 4
        y = torch.empty((1, N), dtype=x.dtype, device=dev)

        def launcher(label):
            name, stagger, sum_asm, own = names[label]
            c = own or cfg
            c = c if stagger is None else dataclasses.replace(c, stagger=stagger)
            grid, meta = wm._mma_plan(1, N, K, qm.group_size, False, torch.bfloat16, c, False)
            asm, cons = variant_asm(name, cols, meta["X_LANES"])
            meta = dict(meta, ASM=asm, CONSTRAINTS=cons, **({} if sum_asm else {"SUM_ASM": ""}))
            return lambda q: wm._int4_mma_kernel[grid](xk, q.qweight, q.scale, q.scale, y, 1, N, K, nt, kc,
                                                       sxm, q.scale.stride(0), q.scale.stride(0), y.stride(0), **meta)
        runs = {n: launcher(n) for n in names}
        for n, f in runs.items():
            f(qms[0])
            torch.cuda.synchronize()
            err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
            print(f"  {n}: max rel err {err:.2e}{'' if names[n][0] == 'base' else ' (expected wrong)'}", flush=True)
        cub = int4_pick.cublas_us(x, w)
        cp = stream_us(copy_same_bytes(bytes_moved(1, N, K, qm), dev))
        us = int4_pick.interleaved_us(runs, qms, rounds)
        print(f"N={N} K={K} ({cfg}): cublas {cub:.2f} copy {cp:.2f} µs; " + ", ".join(f"{n} {v:.2f}" for n, v in us.items()), flush=True)
        del qms
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
