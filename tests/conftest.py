"""Suite-wide setup. Without a GPU, Triton kernels run through Triton's interpreter; the variable
must be set before any kernel module is imported (triton.jit reads it at decoration time). Tests
check correctness, not speed: on a GPU they use the heuristic kernel configs, not autotuning."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
