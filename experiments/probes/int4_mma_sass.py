"""Compile kernels.wo_matmul._int4_mma_kernel for sm_90 without a GPU (ptxas ships with Triton):
SASS opcode counts, registers, shared memory; the SASS, PTX and TTGIR land in /tmp/mma.*. What the
session-6/7 notes on load order and instruction counts (results/baselines/README.md) came from.
With Triton 3.6 (the GPU machine's) installed at DIR, from the repo root:

    PYTHONPATH=DIR python experiments/probes/int4_mma_sass.py "{'RT': 1, 'KW': 8, 'U': 4, 'M': 1}"
    NREG=128 ...  # with a register cap (MmaConfig.maxnreg); STAGGER=200 ...: MmaConfig.stagger
    SUM=0 ...  # M = 1 summed across warps by Triton's tl.sum (before session 29) instead of _m1_sum_asm
    ... "{'KW': 8, 'U': 8, 'XL': True}"  # x one register a chunk, shuffled (MmaConfig.x_lanes)
    (session 26's LF option, loads_first, lives at commit 95d6ced; session 27's ZM, zero_mma, at 7fef34c)
"""
import collections, re, sys, os, ast
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels import wo_matmul as wm

def compile_mma(M=1, RT=1, KW=8, U=8, G=128, HAS_ZERO=False, x_kind=1, EVEN=True, XL=False):
    fn = wm._int4_mma_kernel
    cols = (0, 2) if M == 1 else (0, 1, 2, 3)
    halves = 2 if M > 8 else 1
    XL = XL and M == 1 and G >= 64  # x_lanes, as _mma_plan takes it
    asm, cons = wm._mma_asm(x_kind, cols, 4 if G >= 64 else 1, halves, XL)
    ty = wm._MMA_TYPES[x_kind]
    sig = {"X": "*i64", "Wt": "*i32", "S": "*fp16", "Z": "*u8", "Y": "*bf16", "M": "i32", "N": "i32", "K": "i32",
           "n_tiles": "i32", "n_chunks": "i32", "stride_xm": "i32", "stride_sn": "i32", "stride_zn": "i32", "stride_ym": "i32"}
    const = dict(CHAIN=G >= 64, HALVES=halves, GROUP=G, HAS_ZERO=HAS_ZERO, ROW_TILES=RT, K_WARPS=KW, UNROLL=U, BLOCK_M=triton.next_power_of_2(M), X_KIND=x_kind, EVEN=EVEN,
                 ASM=asm, CONSTRAINTS=cons, ALL_COLS=len(cols) == 4, ZERO_BITS=ty[1] | 0x8000, MAGIC=ty[1] * 0x10001, ONE=ty[2], X_LANES=XL,
                 STAGGER=int(os.environ.get("STAGGER", 0)), STAGGER_WAIT=wm._STAGGER_WAIT,
                 SUM_ASM=wm._m1_sum_asm(RT, KW) if M == 1 and G >= 64 and os.environ.get("SUM", "1") == "1" else "")
    if os.environ.get("M1"): const["M"] = 1
    for k in const: sig[k] = "constexpr"
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()},
                    attrs={(i,): [["tt.divisibility", 16]] for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11)})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=RT * KW, num_stages=int(os.environ.get("NS", 1)), **({"maxnreg": int(os.environ["NREG"])} if os.environ.get("NREG") else {})))

def count(ck):
    ops = collections.Counter()
    for line in ck.asm["sass"].splitlines():
        m = re.match(r"^\S+\t(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", line)
        if m: ops[m.group(2).split(".")[0]] += 1
    return ops

if __name__ == "__main__":
    kw = ast.literal_eval(sys.argv[1]) if len(sys.argv) > 1 else {}
    ck = compile_mma(**kw)
    open("/tmp/mma.ttgir", "w").write(ck.asm["ttgir"]); open("/tmp/mma.sass", "w").write(ck.asm["sass"]); open("/tmp/mma.ptx", "w").write(ck.asm["ptx"])
    ops = count(ck)
    regs = 1 + max(int(r) for r in re.findall(r"\bR(\d+)\b", ck.asm["sass"]))  # the highest register named
    print("registers", regs, "shared", ck.metadata.shared, "STL", ops.get("STL", 0), "total", sum(ops.values()))
    body, rest = ck.asm["sass"].split("HMMA", 1)  # the loads issued before the first MMA, and after
    loads = lambda text: collections.Counter(m.group(1) for m in re.finditer(r"(LDG\.E[.A-Z0-9]*)", text))
    print("loads before the first HMMA:", dict(loads(body)), "after:", dict(loads(rest.split("BAR.SYNC", 1)[0])))
    print(sorted(ops.items(), key=lambda t: -t[1])[:30])
    if os.environ.get("LLIR"):
        import re as _re
        for line in ck.asm["llir"].splitlines():
            if " asm " in line:
                m = _re.search(r"call (\{[^}]*\}|\w+) asm", line); cons = _re.search(r'", "([^"]*)"', line)
                print(m.group(1), cons.group(1) if cons else None)
