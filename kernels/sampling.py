"""Sampling from logits with temperature, top-k, top-p and min-p, without sorting the vocabulary.

    tokens = sample(logits, temperature=0.8, top_k=50, top_p=0.9, min_p=0.0, seed=0)   # [B]
    probs  = reference_probs(logits, temperature, top_k, top_p, min_p)                # [B, V]

Every parameter is a Python number (same for all rows) or a tensor [B] (one per row).

The distribution (reference_probs, by sorting): s = logits / T, p = softmax(s), then
  top-k   keep the k most probable tokens                         (k <= 0 or k >= V: off)
  top-p   among those, renormalized, keep the smallest most-probable set with mass >= top_p
          (at least one token)                                    (top_p >= 1: off)
  min-p   keep tokens with p >= min_p · max(p)                     (min_p <= 0: off)
  renormalize what is kept. T <= 0 is greedy: the first index of the max logit.
Ties: a set is always "all tokens with s >= threshold", so tokens tied with the last one kept are
kept too (a sort would keep an arbitrary subset of them). In the kernel, values within a few
float32 ulps of the threshold count as ties (the search stops when its interval cannot be split).

Every kept set is {s >= t} for some threshold t, and the kernel finds t without a sort. One
program owns one row and makes a few passes over it (logits stay in L2 between passes):
  1. max m, min, count of finite logits and Z = Σ exp(s - m)              (online softmax)
  2. top-k: bisection on the value of s with NP pivots per pass: count(s >= P_j) for NP pivots
     in [lo, hi); keep the largest pivot with count >= k as lo and the smallest with count < k
     as hi, until count(s >= lo) == k. Only tiles holding a value in [lo, hi) do the [tile, NP]
     comparisons; the rest are one compare per element, so later passes are nearly free.
  3. top-p: the same search on mass(s >= P_j) = Σ exp(s - m) against top_p · mass(top-k set),
     until exactly one token lies in [lo, hi). It starts at lo = max(t_k, m + log((1 - top_p) ·
     M_k / n)): below that, even n tokens could not hold the missing 1 - top_p of the mass.
     With min-p on, lo also starts at the min-p cut (a lower threshold would not matter).
  4. sample: Gumbel-max over the survivors, argmax(s - log E) with E ~ Exp(1) from Philox
     (tl.randint, keyed by seed + row, counter = sample · V + token). E is computed as
     -log(1 - u) with a series for small u, so the winners (small E) keep full float32
     precision. Tiles without a survivor draw no random numbers.
Exactness: the kept set equals the reference's (up to float32 rounding of masses right at the
top-p boundary), and argmax(log p - log E) over a set is distributed as p renormalized on it.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _load_s(base, idx, V, inv_t):
    s = tl.load(base + idx, mask=idx < V, other=float("-inf")).to(tl.float32) * inv_t
    return tl.where(s == s, s, float("-inf"))  # NaN counts as -inf: never kept


@triton.jit
def _search(
    base, V, inv_t, m, lo, hi, k, top_p, target, mk_base,
    USE_MASS: tl.constexpr, BLOCK_V: tl.constexpr, NP: tl.constexpr, MAX_ITERS: tl.constexpr,
):
    """Bisection with NP pivots a pass. Top-k (USE_MASS off): the largest lo with
    count(s >= lo) >= k. Top-p (on): the largest lo with mass(s >= lo) >= target, where
    target < 0 means top_p · mass(s >= mk_base), summed during the first pass.
    Invariant: the answer lies in [lo, hi) and nothing lies at or above hi at entry (hi > max).
    Returns (lo, dominated): dominated when the predicate already fails at the entry lo, i.e.
    the threshold lies below it and the caller's lower bound (e.g. min-p's cut) decides."""
    offs = tl.arange(0, BLOCK_V)
    j = tl.arange(0, NP)
    zero = tl.program_id(0) * 0  # an int32 scalar tensor: loop-carried values must be tensors
    cnt_hi = zero
    mass_hi = zero.to(tl.float32)
    mk = zero.to(tl.float32)
    dominated = zero
    done = zero
    it = zero
    while (it < MAX_ITERS) & (done == 0):
        piv = lo + j.to(tl.float32) * ((hi - lo) / NP)  # [NP]; piv[0] = lo re-checks the invariant
        cnt = tl.zeros([NP], dtype=tl.int32)
        mass = tl.zeros([NP], dtype=tl.float32)
        if USE_MASS:
            first_mk = (it == 0) & (target < 0)
        else:
            first_mk = it < 0  # never
        for v0 in range(0, V, BLOCK_V):
            s = _load_s(base, v0 + offs, V, inv_t)
            inr = (s >= lo) & (s < hi)
            if first_mk:  # mass of the top-k set, the base of top-p (tiles under t_k skip the exp)
                if tl.max(s, axis=0) >= mk_base:
                    mk += tl.sum(tl.where(s >= mk_base, tl.exp(s - m), 0.0), axis=0)
            if tl.max(inr.to(tl.int32), axis=0) > 0:  # after pass 1 most tiles hold no candidate
                ge = (s[:, None] >= piv[None, :]) & inr[:, None]  # [BLOCK_V, NP]
                cnt += tl.sum(ge.to(tl.int32), axis=0)
                if USE_MASS:
                    e = tl.exp(s - m)
                    mass += tl.sum(tl.where(ge, e[:, None], 0.0), axis=0)
        cnt += cnt_hi
        mass += mass_hi
        if USE_MASS:
            target = tl.where(first_mk, top_p * mk, target)
            pred = mass >= target
        else:
            pred = cnt >= k
        ok0 = tl.max(tl.where(j == 0, pred.to(tl.int32), 0), axis=0) > 0
        any_fail = tl.max((pred == 0).to(tl.int32), axis=0) > 0
        new_lo = tl.max(tl.where(pred, piv, float("-inf")), axis=0)
        cnt_lo = tl.min(tl.where(pred, cnt, 2147483647), axis=0)
        new_hi = tl.where(any_fail, tl.min(tl.where(pred, float("inf"), piv), axis=0), hi)
        cnt_hi = tl.where(any_fail, tl.max(tl.where(pred, -1, cnt), axis=0), cnt_hi)
        mass_hi = tl.where(any_fail, tl.max(tl.where(pred, float("-inf"), mass), axis=0), mass_hi)
        progress = (new_lo != lo) | (new_hi != hi)
        if USE_MASS:
            found = cnt_lo - cnt_hi <= 1  # one token in [lo, hi): it is the last one kept
        else:
            found = cnt_lo == k
        dominated = tl.where((~ok0) & (it == 0), 1, dominated)
        lo = tl.where(ok0, new_lo, lo)  # (a later failure at lo is float noise: keep lo)
        hi = tl.where(ok0, new_hi, hi)
        done = tl.where((~ok0) | found | (~progress), 1, 0)
        it += 1
    return lo, dominated


@triton.jit
def _sample_kernel(
    L, TOK, MASK, TEMP, TOPK, TOPP, MINP,
    temp_val, topk_val, topp_val, minp_val,
    V, stride_l, seed, n_samples,
    T_ROW: tl.constexpr, K_ROW: tl.constexpr, P_ROW: tl.constexpr, MINP_ROW: tl.constexpr,
    BLOCK_V: tl.constexpr, NP: tl.constexpr, NS: tl.constexpr, MAX_ITERS: tl.constexpr,
    WRITE_MASK: tl.constexpr,
):
    row = tl.program_id(0)
    base = L + row.to(tl.int64) * stride_l
    if T_ROW:
        temp = tl.load(TEMP + row).to(tl.float32)
    else:
        temp = temp_val
    if K_ROW:
        k = tl.load(TOPK + row).to(tl.int32)
    else:
        k = topk_val
    if P_ROW:
        top_p = tl.load(TOPP + row).to(tl.float32)
    else:
        top_p = topp_val
    if MINP_ROW:
        min_p = tl.load(MINP + row).to(tl.float32)
    else:
        min_p = minp_val
    greedy = temp <= 0.0
    inv_t = 1.0 / tl.where(greedy, 1.0, temp)
    offs = tl.arange(0, BLOCK_V)

    # ---- pass 1: max, min, finite count and Z = Σ exp(s - m), online ----
    zero = row * 0
    m = zero.to(tl.float32) + float("-inf")
    mn = zero.to(tl.float32) + float("inf")
    z = zero.to(tl.float32)
    nf = zero
    for v0 in range(0, V, BLOCK_V):
        s = _load_s(base, v0 + offs, V, inv_t)
        fin = s > float("-inf")
        m_new = tl.maximum(m, tl.max(s, axis=0))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: exp gives 0, not NaN
        z = z * tl.exp(m - m_sub) + tl.sum(tl.exp(s - m_sub), axis=0)
        m = m_new
        mn = tl.minimum(mn, tl.min(tl.where(fin, s, float("inf")), axis=0))
        nf += tl.sum(fin.to(tl.int32), axis=0)

    k_on = (k > 0) & (k < nf) & (~greedy)
    p_on = (top_p < 1.0) & (~greedy)
    mp_on = (min_p > 0.0) & (~greedy)
    m_up = m + (tl.abs(m) + 1.0) * 1e-6  # strictly above the max: nothing lies at or above it
    # min-p keeps exp(s - m) >= min_p, i.e. s >= m + log(min_p); a little lower to cover rounding
    log_mp = tl.log(tl.maximum(min_p, 1e-30))
    lo_mp = tl.where(mp_on, m + log_mp - 1e-5 * (1.0 + tl.abs(m) + tl.abs(log_mp)), float("-inf"))

    # ---- pass 2+: thresholds ----
    t = zero.to(tl.float32) + float("-inf")  # keep s >= t (and min-p), finite s only
    if k_on:
        lo_k = mn
        if mp_on & (~p_on):  # min-p alone decides below its cut
            lo_k = tl.maximum(mn, lo_mp)
        t, dom_k = _search(base, V, inv_t, m, lo_k, m_up, k, 0.0, 0.0, 0.0,
                           False, BLOCK_V, NP, MAX_ITERS)
    if p_on:
        if k_on:
            lo_p = t
            target = zero.to(tl.float32) - 1.0  # top_p · mass of the top-k set, summed in pass 1
        else:
            # below m + log((1 - p) Z / n) even n tokens hold less than the missing 1 - p of the mass
            bound = m + tl.log(tl.maximum((1.0 - top_p) * z / nf.to(tl.float32), 1e-30)) - 1e-3
            lo_p = tl.maximum(mn, bound)
            target = top_p * z
        lo_p = tl.maximum(lo_p, lo_mp)
        t, dom_p = _search(base, V, inv_t, m, lo_p, m_up, k, top_p, target, t,
                           True, BLOCK_V, NP, MAX_ITERS)

    # ---- last pass: Gumbel-max over the survivors, NS samples at a time ----
    seed_row = seed + row
    for j0 in range(0, n_samples, NS):
        js = j0 + tl.arange(0, NS)  # [NS]
        best = tl.full([NS], float("-inf"), tl.float32)
        best_i = tl.zeros([NS], dtype=tl.int32)
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + offs
            s = _load_s(base, idx, V, inv_t)
            surv = (s >= t) & (s > float("-inf"))
            if mp_on:
                surv = surv & (tl.exp(s - m) >= min_p)
            surv = tl.where(greedy, s == m, surv)
            if tl.max(surv.to(tl.int32), axis=0) > 0:
                r = tl.randint(seed_row, js[:, None] * V + idx[None, :])  # [NS, BLOCK_V] uint32
                u = (r.to(tl.float32) + 0.5) * 2.3283064365386963e-10  # (0, 1)
                u = tl.minimum(u, 0.99999994)
                # E = -log(1 - u) ~ Exp(1); small E (the winners) from the series, full precision
                e1 = tl.where(u < 0.0078125, u * (1.0 + u * (0.5 + u * 0.3333333333)), -tl.log(1.0 - u))
                key = tl.where(greedy, 0.0, s[None, :] - tl.log(e1))  # greedy: first max index
                key = tl.where(surv[None, :], key, float("-inf"))
                tile_best = tl.max(key, axis=1)
                tile_arg = tl.argmax(key, axis=1)
                upd = tile_best > best
                best = tl.where(upd, tile_best, best)
                best_i = tl.where(upd, v0 + tile_arg, best_i)
        tl.store(TOK + row.to(tl.int64) * n_samples + js, best_i.to(tl.int64), mask=js < n_samples)

    if WRITE_MASK:  # the kept set, for tests and for reference_probs' twin
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + offs
            s = _load_s(base, idx, V, inv_t)
            surv = (s >= t) & (s > float("-inf"))
            if mp_on:
                surv = surv & (tl.exp(s - m) >= min_p)
            surv = tl.where(greedy, s == m, surv)
            tl.store(MASK + row.to(tl.int64) * V + idx, surv.to(tl.int8), mask=idx < V)


# ---------------------------------------------------------------------------------------------
# Configs: a heuristic table. One program per row streams BLOCK_V logits a step; NP pivots per
# search pass trade the passes needed (≈ log_NP(range / gap)) against [BLOCK_V, NP] compares.
# ---------------------------------------------------------------------------------------------
MAX_ITERS = 48  # a search never needs more: each pass shrinks the interval NP-fold or stops


def _config(V: int, n_samples: int) -> dict:
    if _interpreting():
        block_v = min(512, triton.next_power_of_2(V))
        return dict(BLOCK_V=block_v, NP=8, NS=max(1, min(triton.next_power_of_2(max(n_samples, 1)), 16384 // block_v)), num_warps=4)
    block_v = min(1024, triton.next_power_of_2(V))
    ns = max(1, min(triton.next_power_of_2(max(n_samples, 1)), 4096 // block_v))
    return dict(BLOCK_V=block_v, NP=16, NS=ns, num_warps=8)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def _fail(fn: str, name: str, msg: str):
    raise ValueError(f"{fn}: {name} {msg}")


def _param(fn: str, name: str, v, B: int, device, dtype, integer: bool):
    """(tensor or None, scalar): a per-row tensor [B] or one Python number for every row."""
    if isinstance(v, torch.Tensor):
        if v.dim() == 0:
            return None, (int(v) if integer else float(v))
        if v.shape != (B,):
            _fail(fn, name, f"must be a number or a tensor of shape ({B},) (one per row), got {tuple(v.shape)}")
        if v.device != device:
            _fail(fn, name, f"is on {v.device}; must be on the logits' device {device}")
        if integer and v.is_floating_point():
            _fail(fn, name, f"must be an integer tensor, got {v.dtype}")
        return v.contiguous(), 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        _fail(fn, name, f"must be {'an int' if integer else 'a number'} or a tensor [B], got {v!r}")
    if not math.isfinite(v):
        _fail(fn, name, f"must be finite, got {v!r}")
    return None, v


def _launch(fn: str, logits, temperature, top_k, top_p, min_p, seed, n_samples: int, write_mask: bool):
    if not isinstance(logits, torch.Tensor):
        _fail(fn, "logits", f"must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in SUPPORTED_DTYPES:
        _fail(fn, "logits", f"has dtype {logits.dtype}; supported: float16, bfloat16, float32")
    if logits.dim() != 2 or logits.shape[1] == 0:
        _fail(fn, "logits", f"must be [B, V] with V >= 1, got shape {tuple(logits.shape)}")
    if logits.stride(1) != 1:
        _fail(fn, "logits", f"must be contiguous along V (stride(1) == 1), got strides {tuple(logits.stride())}; pass logits.contiguous()")
    if logits.device.type != "cuda" and not _interpreting():
        _fail(fn, "logits", f"is on {logits.device}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    B, V = logits.shape
    dev = logits.device
    t_ptr, t_val = _param(fn, "temperature", temperature, B, dev, torch.float32, False)
    k_ptr, k_val = _param(fn, "top_k", top_k, B, dev, torch.int32, True)
    p_ptr, p_val = _param(fn, "top_p", top_p, B, dev, torch.float32, False)
    mp_ptr, mp_val = _param(fn, "min_p", min_p, B, dev, torch.float32, False)
    if n_samples * V >= 2**31:
        _fail(fn, "num_samples", f"× V = {n_samples} × {V} must stay below 2^31 (Philox counters are 32-bit)")
    if not isinstance(seed, int):
        _fail(fn, "seed", f"must be an int, got {seed!r}")
    tokens = torch.empty((B, max(n_samples, 1)), dtype=torch.int64, device=dev)
    mask = torch.empty((B, V), dtype=torch.int8, device=dev) if write_mask else tokens
    if B == 0:
        return tokens, mask
    cfg = _config(V, n_samples)
    dummy = logits
    _sample_kernel[(B,)](
        logits, tokens, mask,
        t_ptr if t_ptr is not None else dummy, k_ptr if k_ptr is not None else dummy,
        p_ptr if p_ptr is not None else dummy, mp_ptr if mp_ptr is not None else dummy,
        float(t_val), int(k_val), float(p_val), float(mp_val),
        V, logits.stride(0), seed & 0x3FFFFFFF, n_samples,
        T_ROW=t_ptr is not None, K_ROW=k_ptr is not None, P_ROW=p_ptr is not None, MINP_ROW=mp_ptr is not None,
        BLOCK_V=cfg["BLOCK_V"], NP=cfg["NP"], NS=cfg["NS"], MAX_ITERS=MAX_ITERS, WRITE_MASK=write_mask,
        num_warps=cfg["num_warps"],
    )
    return tokens, mask


def _seed(seed: int | None, generator: torch.Generator | None) -> int:
    if seed is not None:
        return seed
    device = generator.device if generator is not None else "cpu"
    # one host read of a random int (a sync if the generator is a CUDA one): pass seed= to avoid it
    return int(torch.randint(0, 2**30, (1,), generator=generator, device=device).item())


def sample(
    logits: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    min_p: float | torch.Tensor = 0.0,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` ``(B, V)`` -> ``(B,)`` int64, drawn from
    ``reference_probs(...)``. Same ``seed`` and inputs, same tokens; without a seed one is drawn
    from ``generator`` (or torch's default generator)."""
    tokens, _ = _launch("sample", logits, temperature, top_k, top_p, min_p, _seed(seed, generator), 1, False)
    return tokens[:, 0]


def sample_many(
    logits: torch.Tensor,
    num_samples: int,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    min_p: float | torch.Tensor = 0.0,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """``num_samples`` independent tokens per row -> ``(B, num_samples)``: the thresholds are
    found once per row, then each sample is one Gumbel-max pass (n-best / parallel sampling)."""
    if not isinstance(num_samples, int) or num_samples < 1:
        _fail("sample_many", "num_samples", f"must be an int >= 1, got {num_samples!r}")
    tokens, _ = _launch("sample_many", logits, temperature, top_k, top_p, min_p, _seed(seed, generator), num_samples, False)
    return tokens


def kept_mask(
    logits: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    min_p: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """The kernel's kept set as bool ``(B, V)`` (the support of the distribution it samples)."""
    _, mask = _launch("kept_mask", logits, temperature, top_k, top_p, min_p, 0, 0, True)
    return mask.bool()


# ---------------------------------------------------------------------------------------------
# Reference: the sort-based definition, in float64
# ---------------------------------------------------------------------------------------------
def _row_param(v, B: int, device, dtype) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.to(device=device, dtype=dtype).expand(B) if v.dim() == 0 else v.to(device=device, dtype=dtype)
    return torch.full((B,), v, dtype=dtype, device=device)


def reference_probs(
    logits: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    min_p: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """The distribution ``sample`` draws from, by sorting: ``(B, V)`` float64 (module docstring)."""
    x = logits.double()
    B, V = x.shape
    dev = x.device
    T = _row_param(temperature, B, dev, torch.float64)
    k = _row_param(top_k, B, dev, torch.int64)
    top_p = _row_param(top_p, B, dev, torch.float64)
    min_p = _row_param(min_p, B, dev, torch.float64)
    greedy = T <= 0
    s = x / torch.where(greedy, 1.0, T)[:, None]
    s = torch.nan_to_num(s, nan=float("-inf"))
    p = torch.softmax(s, dim=-1)  # [B, V]
    keep = torch.isfinite(s)
    # top-k, tie-inclusive: keep p >= the k-th largest
    sorted_p = p.sort(dim=-1, descending=True).values
    k_on = (k > 0) & (k < keep.sum(-1))
    kth = sorted_p.gather(1, (k - 1).clamp(0, V - 1)[:, None])
    keep &= ~k_on[:, None] | (p >= kth)
    # top-p over the survivors, renormalized: the smallest prefix with mass >= top_p, tie-inclusive
    pk = torch.where(keep, p, 0.0)
    pk = pk / pk.sum(-1, keepdim=True)
    sorted_pk = pk.sort(dim=-1, descending=True).values
    cum = sorted_pk.cumsum(-1)
    last = (cum < top_p[:, None]).sum(-1).clamp(max=V - 1)  # index of the last token kept
    thr = sorted_pk.gather(1, last[:, None])
    keep &= ~(top_p < 1)[:, None] | (pk >= thr)
    # min-p relative to the most probable token
    keep &= ~(min_p > 0)[:, None] | (p >= min_p[:, None] * p.max(-1, keepdim=True).values)
    probs = torch.where(keep, p, 0.0)
    probs = probs / probs.sum(-1, keepdim=True)
    if greedy.any():  # T <= 0: the first index of the max logit
        one_hot = torch.zeros_like(probs).scatter_(1, x.argmax(-1, keepdim=True), 1.0)
        probs = torch.where(greedy[:, None], one_hot, probs)
    return probs


def sample_sorted(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The usual eager sampler (sort the vocabulary, cumsum, mask, renormalize, multinomial), as
    Hugging Face's logits warpers do it: the benchmark's peer. Scalar parameters, float32."""
    s = logits.float() / temperature
    if 0 < top_k < s.shape[-1]:
        kth = torch.topk(s, top_k, dim=-1).values[:, -1:]
        s = s.masked_fill(s < kth, float("-inf"))
    if top_p < 1.0:
        sorted_s, idx = s.sort(dim=-1, descending=True)
        cum = sorted_s.softmax(-1).cumsum(-1)
        drop = cum - sorted_s.softmax(-1) >= top_p  # mass before this token already reaches top_p
        s = s.scatter(1, idx, sorted_s.masked_fill(drop, float("-inf")))
    probs = s.softmax(-1)
    if min_p > 0.0:
        probs = probs.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), 0.0)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# ---------------------------------------------------------------------------------------------
# Cost formulas
# ---------------------------------------------------------------------------------------------
def passes(top_k_on: bool = True, top_p_on: bool = True) -> int:
    """Typical full passes over a row: stats, ~3 per active search (the first is the only heavy
    one), the sampling pass. An estimate for the roofline, not a bound."""
    return 2 + 3 * int(top_k_on) + 3 * int(top_p_on)


def flops(B: int, V: int) -> float:
    """Per logit: the scale, the exp of the softmax statistics and the compare/add of the
    sampling pass (~5); the searches' compares are counted in bytes, not FLOPs."""
    return 5 * B * V


def bytes_moved(B: int, V: int, dtype_bytes: int = 4, n_passes: int = 1) -> float:
    """Logits read once per pass (a row stays in L2 only at small B), one token written."""
    return B * V * dtype_bytes * n_passes + B * 8
