"""Where the kernel tests run: compiled on a GPU, else through Triton's interpreter on the CPU
(tests/conftest.py sets TRITON_INTERPRET=1 there before any kernel module is imported)."""
import os

import torch

GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = "cuda" if GPU else "cpu"
