"""What a scenario is handed: the chosen variants, the device, a Recorder, and builders.

A scenario is a function registered in the "scenario" group:

    @register("scenario", "prefill", config=PrefillConfig)
    def run(ctx: RunContext, cfg: PrefillConfig) -> None:
        model = ctx.model()                       # variants already applied
        with ctx.rec.point(seq_len=512):
            ctx.rec.time(lambda: model(tokens), flops=..., bytes_moved=..., tokens=...)

Each axis' entry point has one calling convention, so nothing here knows a variant by name:
  attention, position, quant:  apply_(model, cfg) -> None       (transform in place)
  sampler:                     build(cfg) -> sampler(logits [B, V], generator) -> tokens [B]
  kv:                          build(cfg, *, n_layers, batch, max_len, dtype, device) -> cache
  spec:                        build(cfg) -> a speculative-decoding method (or None)
  model:                       build(cfg, *, device, dtype) -> lab.model.LoadedModel
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from lab import registry
from lab.records import Recorder
from lab.registry import AXES, VariantConfig

# The order transforms are applied in: positions first (they define the tables attention uses),
# quantization last (it replaces the Linear weights that attention conversions produce).
MODEL_TRANSFORMS = ("position", "attention", "quant")


@dataclass
class RunContext:
    choices: dict[str, VariantConfig]  # group -> config, for every axis plus "model" and "scenario"
    device: torch.device
    dtype: torch.dtype
    rec: Recorder
    seed: int = 0
    corpus_path: str | None = None
    corpus_max_tokens: int = 4096
    run_dir: Path | None = None
    size: str = "small"  # "small" (CPU, CI: seconds) or "full" (GPU benchmark shapes); config key `size`
    show_progress: bool = True
    _cache: dict[str, Any] = field(default_factory=dict)

    # ---- variants ------------------------------------------------------------------------------
    def variant(self, group: str) -> tuple[registry.Entry, VariantConfig]:
        cfg = self.choices[group]
        return registry.get(group, cfg.name), cfg

    def variant_columns(self) -> dict[str, str]:
        return {g: c.name for g, c in self.choices.items() if g in AXES}

    # ---- model ---------------------------------------------------------------------------------
    def loaded(self, dtype: torch.dtype | None = None):
        """The model as loaded, before any variant transform. The last one loaded is kept across
        the points of a run (a sweep over variants loads and dequantizes the weights once);
        `model()` deep-copies it before transforming, so no point sees another's changes."""
        dtype = dtype or self.dtype
        entry, cfg = self.variant("model")
        key = (repr(cfg), str(self.device), str(dtype), self.seed)
        if _LAST_LOADED.get("key") != key:
            _LAST_LOADED.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            torch.manual_seed(self.seed)  # random-weight presets are reproducible
            _LAST_LOADED.update(key=key, value=entry.fn(cfg, device=self.device, dtype=dtype))
        return _LAST_LOADED["value"]

    def model(self, *, reference: bool = False, dtype: torch.dtype | None = None) -> torch.nn.Module:
        """A fresh model with the chosen position/attention/quant variants applied (or none of them
        when reference=True: the unconverted model, for quality comparisons)."""
        import copy

        base = self.loaded(dtype).model
        transforms = [self.variant(g) for g in MODEL_TRANSFORMS]
        if reference or all(e.reference and c == e.default_config() for e, c in transforms):
            return base.eval()  # nothing to change: no copy (an 8B model's copy is 16 GB more)
        model = copy.deepcopy(base)
        for entry, cfg in transforms:
            entry.fn(model, cfg)
        return model.eval()

    def tokenizer(self):
        tok = self.loaded().tokenizer
        if tok is None:
            from lab.errors import LabError

            raise LabError(f"model={self.choices['model'].name} has no tokenizer; text scenarios need a GGUF or Hugging Face checkpoint")
        return tok

    @property
    def args(self):
        return self.loaded().args

    def sampler(self):
        entry, cfg = self.variant("sampler")
        return entry.fn(cfg)

    def make_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None):
        entry, cfg = self.variant("kv")
        return entry.fn(cfg, n_layers=self.args.n_layers, batch=batch, max_len=max_len, dtype=dtype or self.dtype, device=self.device)

    def spec(self):
        entry, cfg = self.variant("spec")
        return entry.fn(cfg)

    # ---- data ----------------------------------------------------------------------------------
    def corpus_text(self) -> str:
        """The quality corpus: a text file by path, else Python's own pydoc_data.topics."""
        if self.corpus_path:
            from lab.errors import LabError

            p = Path(self.corpus_path).expanduser()
            if not p.is_file():
                raise LabError(f"corpus.path={self.corpus_path!r}: no such file; give a path to a UTF-8 text file")
            return p.read_text(encoding="utf-8", errors="replace")
        return default_corpus()

    def progress(self, iterable: Iterable, desc: str = "", total: int | None = None):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=not self.show_progress, leave=False, dynamic_ncols=True)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


_LAST_LOADED: dict[str, Any] = {}


def forget_loaded() -> None:
    """Drop the kept model (its memory goes back) — e.g. before loading a different one."""
    _LAST_LOADED.clear()


@functools.lru_cache(maxsize=1)
def default_corpus() -> str:
    """English prose that ships with every Python: the help topics of pydoc (~120K SmolLM2 tokens)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))
