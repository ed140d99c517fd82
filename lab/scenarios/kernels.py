"""Scenario `kernels`: every kernel of the core side by side with its peers (lab/benchmarks/*).

Each suite module has `run(rec, device, size)`; on CPU the Triton kernels run through Triton's
interpreter (TRITON_INTERPRET=1, set here before the kernels are imported), at `small` sizes only.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass

from lab.context import RunContext
from lab.errors import LabError, suggest
from lab.registry import VariantConfig, register

ALL_SUITES = ("attention_prefill", "attention_decode", "rope", "rmsnorm", "swiglu", "wo_matmul", "sampling")


def available_suites() -> list[str]:
    import lab.benchmarks

    return sorted(m.name for m in pkgutil.iter_modules(lab.benchmarks.__path__) if not m.name.startswith("_"))


@dataclass(frozen=True)
class KernelsConfig(VariantConfig):
    suites: tuple[str, ...] = ALL_SUITES

    def validate(self, args=None) -> None:
        have = available_suites()
        for s in self.suites:
            if s not in have:
                raise LabError(f"scenario.suites: no benchmark suite {s!r}{suggest(s, have)}; suites: {', '.join(have)}")


@register("scenario", "kernels", config=KernelsConfig)
def run(ctx: RunContext, cfg: KernelsConfig) -> None:
    """Kernel benchmark: ours vs the best peers, with the error vs the reference beside each time."""
    if ctx.device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    cfg.validate()
    for name in ctx.progress(cfg.suites, desc="kernel suites"):
        with ctx.rec.point(suite=name):
            importlib.import_module(f"lab.benchmarks.{name}").run(ctx.rec, ctx.device, ctx.size)
