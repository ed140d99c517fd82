"""Every prefill config the autotuner may pick (kernels.attention_prefill.GPU_CONFIGS), the tuning
set of lab/benchmarks/attention_prefill.py and a few smaller tiles, timed one by one against
SDPA-cuDNN and -flash on the benchmark shapes where a GPU other than the H200 the rules came from
fell short (session 8: the H100's kernels baseline). Needs a CUDA GPU:

    python experiments/probes/prefill_configs.py
"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo root

from kernels.attention_prefill import GPU_CONFIGS, PrefillConfig
from lab.benchmarks.attention_prefill import TUNE_CONFIGS, tune

# (B, H, H_kv, T, S, D, causal): under SDPA-flash on the H100 (S = 1K, 2K), under 0.8x cuDNN (S >= 4K)
SHAPES = [(16, 32, 32, 1024, 1024, 64, False), (16, 32, 32, 1024, 1024, 64, True), (8, 32, 32, 2048, 2048, 64, True),
          (16, 32, 32, 1024, 1024, 128, True), (4, 32, 32, 4096, 4096, 128, False), (4, 32, 32, 4096, 4096, 128, True),
          (4, 32, 8, 4096, 4096, 128, True), (1, 32, 32, 16384, 16384, 128, True)]
EXTRA = [PrefillConfig(64, 64, 4, 4), PrefillConfig(64, 128, 4, 3), PrefillConfig(128, 32, 4, 3), PrefillConfig(128, 64, 4, 4)]

if __name__ == "__main__":
    tune(SHAPES, list(dict.fromkeys(GPU_CONFIGS + TUNE_CONFIGS + EXTRA)), rep_ms=100)
