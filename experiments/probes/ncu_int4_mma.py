"""Two launches per Llama shape of the int4 mma GEMV (default config, M = 1), for
experiments/probes/ncu_int4_mma.sh to profile."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root
import torch
from kernels.wo_matmul import quantize_int4, wo_matmul, MmaConfig
for N, K in [(4096, 4096), (4096, 14336), (14336, 4096)]:
    w = torch.randn(N, K, device="cuda") * 0.02
    qm = quantize_int4(w, 128, True, layout="mma")
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    for _ in range(2):
        wo_matmul(x, qm)
    torch.cuda.synchronize()
