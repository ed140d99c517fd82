"""attention_op: the attention op alone, reference vs SDPA vs the Triton kernels, at real head shapes.

For each head shape (a model preset's H / H_kv × D: SmolLM2 9/3×64, Llama-3-8B 32/8×128), each
sequence length and each mode, q/k/v are random and every implementation is timed on the same
tensors, with:
  latency and the roofline position (FLOPs and least bytes from the kernels' own cost formulas:
      prefill is compute-bound, decode memory-bound, and the intensity column shows it),
  peak memory of one call above what was allocated before it (`mem_peak_extra_bytes`;
      `mem_workspace_bytes` = that minus the output: the score matrix, for the reference),
  max_rel_err = max|o - o64| / max|o64| against the float64 definition, on the last 128 query
      rows of batch 0 (with bottom-right causal alignment those rows see what they see in full).

Modes:  prefill  q [B, H, T, D], k/v [B, H_kv, T, D], causal
        decode   q [B_dec, H, 1, D] against a cache k/v [B_dec, H_kv, S, D]
        cross    q [B, H, T/cross_ratio, D] against encoder k/v [B, H_kv, T, D], not causal
                 (encoder-decoder cross-attention: S_enc != T_dec, no mask)
Implementations: reference  eager softmax (lab.model.llama.eager_attention: [B, H, T, S] float32)
                 sdpa       torch.nn.functional.scaled_dot_product_attention (torch picks)
                 flash      kernels.attention_prefill.flash_attention (prefill, cross) and
                            kernels.attention_decode.paged_decode_attention (decode, cache viewed
                            as one page per sequence, no copy)
On CPU the Triton kernels run only through the interpreter: their error is checked, their timing
and memory are recorded as not run (an interpreter timing says nothing about the kernel).

claim=true adds the check of an often-quoted claim, by measurement (see `check_claim`; on CPU each
implementation's peak is measured in a fresh Python process, since the RSS is the whole process's).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from lab.context import RunContext
from lab.errors import LabError
from lab.registry import VariantConfig, register

IMPLS = ("reference", "sdpa", "flash")
MODES = ("prefill", "decode", "cross")
ERR_ROWS = 128
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class AttentionOpConfig(VariantConfig):
    shapes: tuple[str, ...] = ("smollm2_135m", "llama3_8b")  # model presets whose head shape is used
    impls: tuple[str, ...] = IMPLS
    modes: tuple[str, ...] = MODES
    seq_lens: tuple[int, ...] = ()  # () = by size: small (48, 160), full (512 … 16384)
    batch: int = 1  # prefill and cross
    decode_batch: int = 8  # decode: a batch of sequences, each with seq_len cached tokens
    cross_ratio: int = 4  # cross: decoder length = seq_len / cross_ratio, encoder length = seq_len
    dtype: str = "auto"  # auto (the run's dtype) | float32 | bfloat16 | float16
    error: bool = True  # max_rel_err vs float64
    memory: bool = True  # peak memory of one call
    claim: bool = False  # also measure the "4.3 GB naive vs < 100 MB tiled" claim

    def validate(self, args=None) -> None:
        from lab.model.presets import PRESETS

        for name, allowed in (("impls", IMPLS), ("modes", MODES)):
            bad = [x for x in getattr(self, name) if x not in allowed]
            if bad:
                raise LabError(f"scenario.{name}: unknown {bad}; valid: {', '.join(allowed)}")
        bad = [s for s in self.shapes if s not in PRESETS or PRESETS[s].args is None]
        if bad:
            raise LabError(f"scenario.shapes: {bad} are not presets with a fixed shape; valid: {', '.join(k for k, p in PRESETS.items() if p.args)}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise LabError(f"scenario.dtype={self.dtype!r}; valid: auto, {', '.join(DTYPES)}")
        if self.cross_ratio < 1 or self.batch < 1 or self.decode_batch < 1:
            raise LabError("scenario.cross_ratio, batch and decode_batch must be >= 1")


def head_shape(preset: str) -> tuple[int, int, int]:
    """(H, H_kv, D) of a model preset."""
    from lab.model.presets import PRESETS

    a = PRESETS[preset].args
    return a.n_heads, a.n_kv_heads, a.head_dim


# ---------------------------------------------------------------------------------------------
# The implementations: fn(q, k, v, causal) -> o
# ---------------------------------------------------------------------------------------------
def reference_op(q, k, v, causal: bool):
    """The model's eager attention (float32 scores materialized), or its non-causal twin."""
    from lab.model.llama import AttnContext, eager_attention

    if causal:
        pos = torch.zeros(1, q.shape[2], dtype=torch.long, device=q.device)
        return eager_attention(q, k, v, AttnContext(pos=pos, cos=q.new_empty(0), sin=q.new_empty(0)))
    B, H, T, D = q.shape
    k = k.repeat_interleave(H // k.shape[1], 1)
    v = v.repeat_interleave(H // v.shape[1], 1)
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(D)  # [B, H, T, S]
    return (torch.softmax(scores, -1) @ v.float()).to(q.dtype)


def sdpa_op(q, k, v, causal: bool):
    T, S = q.shape[2], k.shape[2]
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal and T == S and T > 1, enable_gqa=q.shape[1] != k.shape[1])


def flash_op(q, k, v, causal: bool):
    return prepare("flash", q, k, v, causal)()


OPS = {"reference": reference_op, "sdpa": sdpa_op, "flash": flash_op}


def prepare(impl: str, q, k, v, causal: bool):
    """A closure doing one call; host-side setup (the decode kernel's page table: FlashInfer's
    plan step) happens here, once, outside what is timed."""
    if impl == "flash" and q.shape[2] == 1 and causal:  # decode: the paged kernel, the cache viewed as pages
        from kernels.attention_decode import paged_decode_attention, paged_from_contiguous

        kw = paged_from_contiguous(k, v).kwargs()  # no copy: one page of S slots per sequence
        q3 = q[:, :, 0]
        return lambda: paged_decode_attention(q3, **kw)[:, :, None]
    if impl == "flash":
        from kernels.attention_prefill import flash_attention

        return lambda: flash_attention(q, k, v, causal=causal)
    op = OPS[impl]
    return lambda: op(q, k, v, causal)


def cost(mode: str, B: int, H: int, H_kv: int, T: int, S: int, D: int, dtype_bytes: int) -> tuple[float, float]:
    """(FLOPs, least bytes) from the kernels' formulas: QKᵀ and PV over the visible pairs; q, k, v
    read once and o written once."""
    if mode == "decode":
        from kernels import attention_decode as ad

        return B * ad.flops(H, D, S), ad.bytes_moved(B, H, H_kv, D, B * S, dtype_bytes, dtype_bytes)
    from kernels import attention_prefill as ap

    return ap.flops(B, H, T, S, D, causal=mode == "prefill"), ap.bytes_moved(B, H, H_kv, T, S, D, dtype_bytes)


def max_rel_err(o: torch.Tensor, q, k, v, causal: bool) -> float:
    """max|o - o64| / max|o64| over the last ERR_ROWS query rows of batch 0, all heads."""
    from kernels.attention_prefill import attention_reference

    R = min(ERR_ROWS, q.shape[2])
    ref = attention_reference(q[:1, :, -R:], k[:1], v[:1], causal=causal)  # [1, H, R, D] float64
    return float((o[:1, :, -R:].double() - ref).abs().max() / ref.abs().max())


def exact_cpu_rss() -> str:
    """Make the RSS follow tensors on Linux/glibc (lab.measure.memory.cpu_allocator_setup: a fixed
    256 KiB mmap threshold, set once per process; measure_peak also applies it). Returns its note."""
    from lab.measure.memory import cpu_allocator_setup

    return cpu_allocator_setup()


def peak_extra(fn, device: torch.device) -> tuple[int, dict]:
    """Bytes one call allocates above what was allocated before it (inputs excluded)."""
    from lab.measure.memory import measure_peak

    peak = measure_peak(fn, device)
    extra = peak["peak_allocated_bytes"]
    if device.type == "cuda":  # CUDA reports the absolute peak; the CPU measure is already a difference
        extra -= peak["baseline_bytes"]
    return int(max(0, extra)), peak


_FRESH = """
import json, sys, torch
from lab.measure.memory import measure_peak
from lab.scenarios.attention_op import prepare
impl, B, H, T, D, seed, threads = sys.argv[1], *map(int, sys.argv[2:])
torch.set_num_threads(threads)
gen = torch.Generator().manual_seed(seed)
q, k, v = (torch.randn(B, H, T, D, dtype=torch.float32, generator=gen) for _ in range(3))  # [B, H, T, D]
fn = prepare(impl, q, k, v, True)
fn()  # first-touch, lazy initialisation: outside the measurement
print(json.dumps(measure_peak(fn, "cpu")))
"""


def fresh_process_peak(impl: str, B: int, H: int, T: int, D: int, seed: int) -> tuple[int, dict]:
    """peak_extra of one causal float32 call of `impl` on CPU, measured in a new Python process
    with the same shapes, so nothing this process allocated or freed before (allocator history,
    other threads) can hide or add memory. ~2 s per call: the import of torch."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])  # the repository: lab/ and kernels/ importable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    cmd = [sys.executable, "-c", _FRESH, impl, *map(str, (B, H, T, D, seed, torch.get_num_threads()))]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"fresh-process measurement of {impl} failed: {r.stderr.strip()[-400:]}")
    peak = json.loads(r.stdout.strip().splitlines()[-1])
    peak["method"] = f"a fresh python process (same shapes, {torch.get_num_threads()} threads), warm call: {peak['method']}"
    return int(max(0, peak["peak_allocated_bytes"])), peak


def _flash_note(device: torch.device) -> str | None:
    """Why the Triton kernels cannot be timed here (None: they can)."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return "needs the triton package"
    if device.type != "cuda":
        return "Triton interpreter on CPU: correctness only, its timing and memory say nothing about the kernel"
    return None


# ---------------------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------------------
@register("scenario", "attention_op", config=AttentionOpConfig)
def run(ctx: RunContext, cfg: AttentionOpConfig) -> None:
    """the attention op alone: reference vs SDPA vs Triton, prefill/decode/cross, at model head shapes"""
    cfg.validate()
    if ctx.device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    full = ctx.size == "full"
    seq_lens = tuple(cfg.seq_lens) or ((512, 1024, 2048, 4096, 8192, 16384) if full else (48, 160))
    dtype = ctx.dtype if cfg.dtype == "auto" else DTYPES[cfg.dtype]
    rec, dev = ctx.rec, ctx.device
    gen = torch.Generator(dev).manual_seed(ctx.seed)
    flash_note = _flash_note(dev)
    for shape in cfg.shapes:
        H, H_kv, D = head_shape(shape)
        for mode in cfg.modes:
            for L in seq_lens:
                B = cfg.decode_batch if mode == "decode" else cfg.batch
                T = {"prefill": L, "decode": 1, "cross": max(1, L // cfg.cross_ratio)}[mode]
                S, causal = L, mode != "cross"
                with rec.point(shape=shape, heads=f"{H}/{H_kv}x{D}", mode=mode, seq_len=L, batch=B, q_len=T, kv_len=S):
                    q = torch.randn(B, H, T, D, device=dev, dtype=dtype, generator=gen)
                    k = torch.randn(B, H_kv, S, D, device=dev, dtype=dtype, generator=gen)
                    v = torch.randn(B, H_kv, S, D, device=dev, dtype=dtype, generator=gen)
                    flops, nbytes = cost(mode, B, H, H_kv, T, S, D, q.element_size())
                    for impl in cfg.impls:
                        with rec.point(impl=impl):
                            _one(ctx, cfg, impl, q, k, v, causal, flops, nbytes, T * B if mode != "decode" else B, flash_note)
                    del q, k, v
    if cfg.claim:
        check_claim(ctx)


def _one(ctx: RunContext, cfg: AttentionOpConfig, impl: str, q, k, v, causal: bool, flops: float, nbytes: float, tokens: int, flash_note: str | None) -> None:
    rec, dev = ctx.rec, ctx.device
    op = OPS[impl]
    if impl == "flash" and flash_note and "triton package" in flash_note:
        rec.skipped(flash_note)
        return
    B, H, T, D = q.shape
    S = k.shape[2]
    if impl == "reference":
        need = 3 * B * H * T * S * 4  # scores, masked scores, probabilities (float32)
        budget = _memory_budget(dev)
        if need > budget:
            rec.skipped(f"reference would materialize ~{need / 1e9:.1f} GB of [B, H, T, S] float32 scores; {budget / 1e9:.1f} GB free", metric="latency_ms")
            return
    how = f"max|o - o64| / max|o64|, last {min(ERR_ROWS, T)} query rows of batch 0, float64 reference"
    if impl == "flash" and flash_note:  # interpreted: check one KV head's group of batch 0 only (slow)
        G = H // k.shape[1]
        qs, ks, vs = q[:1, :G].contiguous(), k[:1, :1].contiguous(), v[:1, :1].contiguous()
        if cfg.error:
            rec.metric("max_rel_err", max_rel_err(op(qs, ks, vs, causal), qs, ks, vs, causal), "", method=f"{how}; Triton interpreter, KV head 0 and its {G} query heads")
        rec.skipped(flash_note, metric="latency_ms")
        return
    fn = prepare(impl, q, k, v, causal)
    out = fn()  # compiles (and autotunes prefill with LAB_AUTOTUNE=1)
    if cfg.error:
        rec.metric("max_rel_err", max_rel_err(out, q, k, v, causal), "", method=how)
    del out
    if cfg.memory:
        extra, peak = peak_extra(fn, dev)
        out_bytes = q.numel() * q.element_size()
        rec.memory({"inputs": sum(t.numel() * t.element_size() for t in (q, k, v)), "output": out_bytes}, None, method="tensor sizes")
        rec.metric("mem_peak_extra_bytes", extra, "B", method=f"one call, above the allocation before it; {peak['method']}")
        rec.metric("mem_workspace_bytes", max(0, extra - out_bytes), "B", method="peak extra minus the output: scores, softmax and other temporaries")
    rec.time(fn, flops=flops, bytes_moved=nbytes, tokens=tokens)


def _memory_budget(device: torch.device) -> float:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.8 * free
    try:
        import psutil

        return 0.5 * psutil.virtual_memory().available
    except ImportError:
        return 4e9


# ---------------------------------------------------------------------------------------------
# The claim
# ---------------------------------------------------------------------------------------------
CLAIM = ("naive attention at batch 8, 8 heads, 4096 tokens materializes a 4.3 GB float32 score tensor, "
         "while tiled (flash) attention stays under 100 MB")


def check_claim(ctx: RunContext) -> None:
    """Measure, not compute, the claim: the peak memory one call adds above its inputs, for the
    naive reference and for tiled kernels, at B=8, H=8, T=S=4096, D=64, float32, causal.

    Full size (GPU, torch.cuda.max_memory_allocated): held iff naive >= 8·8·4096²·4 B = 4.29 GB
    and tiled < 100 MB. Small size (CPU: T=512, peak RSS, each implementation in a fresh Python
    process with the same shapes, since the RSS is the whole process's): the same shape of claim scaled, since
    scores grow as T² and a tiled kernel's memory as T: naive >= the score tensor at T
    (8·8·512²·4 = 67 MB) and tiled < 100 MB · T/4096 (12.5 MB). The tiled implementation is the
    Triton kernel where it can run compiled, and torch SDPA (its fused CPU / GPU kernels) too."""
    rec, dev = ctx.rec, ctx.device
    full = ctx.size == "full"
    B, H, D, T = 8, 8, 64, 4096 if full else 512
    scores = B * H * T * T * 4
    tiled_limit = 100e6 * T / 4096
    tiled = ["sdpa"] + (["flash"] if dev.type == "cuda" else [])
    if dev.type != "cpu":
        gen = torch.Generator(dev).manual_seed(ctx.seed)
        q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=torch.float32, generator=gen) for _ in range(3))
    peaks: dict[str, int] = {}
    with rec.point(mode="claim", seq_len=T, batch=B, heads=f"{H}/{H}x{D}", dtype="float32"):
        for impl in ["reference"] + tiled:
            with rec.point(impl=impl):
                if dev.type == "cpu":  # the RSS is process-wide: measure where nothing else ran
                    extra, peak = fresh_process_peak(impl, B, H, T, D, ctx.seed)
                else:
                    fn = prepare(impl, q, k, v, True)
                    fn()  # compile / autotune / first-touch outside the measurement
                    extra, peak = peak_extra(fn, dev)
                peaks[impl] = extra
                rec.metric("mem_peak_extra_bytes", extra, "B", method=f"claim check, one call above its inputs; {peak['method']}")
        naive = peaks["reference"]
        best = min(tiled, key=lambda i: peaks[i])
        held = naive >= scores and all(peaks[i] < tiled_limit for i in tiled)
        scale = "" if full else f" (scaled to T={T}: naive >= {scores / 1e6:.0f} MB score tensor, tiled < {tiled_limit / 1e6:.1f} MB)"
        measured = ", ".join(f"{i} {peaks[i] / 1e6:,.1f} MB" for i in tiled)
        rec.metric("claim_held", float(held), "bool",
                   method=f"claim: {CLAIM}{scale}; measured naive {naive / 1e9:.2f} GB, tiled: {measured}",
                   impl="claim", claim=CLAIM, naive_peak_bytes=naive, tiled_peak_bytes=peaks[best], tiled_impl=best)
        rec.metric("claim_score_tensor_bytes", scores, "B", method=f"analytic B·H·T²·4 at T={T}", impl="claim")
