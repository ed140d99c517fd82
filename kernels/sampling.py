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

Every kept set is {s >= t} for some threshold t (with min-p's cut beside it), found without a
sort. Two schedules, picked on the host from B, V and the parameters' types (no device sync):

ONE PROGRAM PER ROW (B above SPLIT_TABLE's buckets, a row of one chunk, or top_k a Python int
<= SPLIT_FAST_TOP_K). Every pass streams the row in [BLOCK_V/4, 4] tiles with per-lane
accumulators, reduced once after the loop (no barrier inside a loop: the warps stream apart):
  1. pass 1: per lane the max, min, finite count and Σ exp(s - max) (online softmax) -> m, Z.
  2. a lower bound lo of t: top-k: the k-th largest of the BLOCK_V lane maxima (they are
     distinct logits, so at least k logits reach it); top-p alone: m + log((1 - top_p) · Z / n)
     (below it even n tokens hold less than the missing 1 - top_p of the mass); min-p alone: its
     own cut.
  3. pass 2: count the candidates s >= lo.
  4. fast path (at most CAP candidates: top-k, or a peaked distribution): pass 3 gathers them
     into a per-row scratch (lane i at the prefix sum of the lane counts), then the thresholds
     come from a bisection with NP pivots on the candidates in registers (count(s >= P_j) for
     top-k, mass(s >= P_j) = Σ exp(s - m) against top_p · mass(top-k set) for top-p) and the draw
     is Gumbel-max over the kept candidates: argmax(s - log E), E ~ Exp(1).
     General path (more candidates: a flat distribution, a large k): top-k by the same bisection
     streaming the row; top-p by rejection: propose j by Gumbel-max over the tokens above a pivot,
     accept if the mass above j is < top_p · mass(top-k set) (j is then in the top-p set, and an
     accepted proposal is distributed as p on the kept set), else raise the pivot to s_j (no
     token at or below it can be kept) and propose again: ~1-2 rounds of two passes.

SPLIT ROWS (small B: one program per row would leave most SMs idle, each ALU-bound). A row is
cut into C chunks of CHUNK tokens, one program per (chunk, row); sums across chunks happen
between launches: each launch adds up the C partials the previous one wrote, every program of a
row in the same order, so they agree bit for bit (no host sync: CUDA-graph safe).
ROUNDS + 2 launches (+1 writing kept_mask's mask):
  stats     per chunk: max, Σ exp(s - max), min, finite count (online softmax) -> m, Z.
  round ×R  the row's search state: phase K (top-k: count(s >= x) >= k, from [min, max]),
            phase P (top-p alone: mass(s >= x) >= top_p · Z, from step 2's lower bound) or done
            from the start (no top-k or top-p: t = min-p's cut; greedy: t = max).
            NP pivots span [lo, hi], both ends included; each chunk counts and weighs its tokens
            at every pivot ([BLOCK/4, NP] per-lane accumulators); the next launch sums the
            chunks and keeps the sub-interval holding t. A row is done (t = lo) once one token
            is left in [lo, hi), the interval cannot be split, or (top-k alone) count(s >= lo)
            == k. Top-k followed by top-p only narrows t_k here: its top-p cut needs the list.
  gather    what is left goes into a per-row list of CAP slots (chunk c at the prefix sum of the
            earlier chunks' counts): FULL, every token >= lo (thresholds then come as on the
            fast path, top-p after top-k included); else INTERVAL, the tokens in [lo, hi) (those
            above hi are already counted and weighed). Each chunk also writes the kept mass M_τ
            of each BLOCK-token tile τ of the kept tokens not listed (DONE: s >= lo; INTERVAL:
            s >= hi; FULL: none), then bumps the row's arrival counter (one atomic, acq_rel at
            GPU scope, as in attention_decode's fused merge); the program that arrives last
            finishes the row alone, so no finish or pick launch:
    finish  t from the list in registers (FULL, INTERVAL; DONE: lo), then per sample Gumbel-max
            over the tiles and the list's kept tokens as one more "tile", key log M - log E (one
            E per tile, no per-token random numbers): the best is a tile (or the list) with
            probability M / Σ M; inside it the token is drawn by inverse CDF in index order
            (u · M against the running sum: a sampling order need not be sorted). Rows that no
            mode could settle within ROUNDS (top-k > CAP followed by top-p, or too many tokens
            left) run the one-program general path here, from the rounds' lo: exact, as slow
            as before. The counter lives in the workspace, zeroed by round 0.
Random numbers: Philox4x32 (tl.randint4x) keyed by seed + row (+ round); token v of sample j uses
counter j·ceil(V/4) + v // 4, word v % 4 (the one-program Gumbel-max over candidates);
split rows, sample j: key seed + row + 2^29, counter j·ceil(V/BLOCK) + τ, words 0 (E) and 1 (u)
for tile τ, words 2 (E) and 3 (u) of tile 0's counter for the list.
E = -log(1 - u) with a series for small u, so the winners (small E) keep full float32 precision.
Exactness: the kept set equals the reference's (up to float32 rounding of masses right at the
top-p boundary), argmax(log p - log E) over a set is distributed as p renormalized on it, and
the inverse-CDF draw is off only by float32 rounding of the running sums (~1e-7 of M_τ).
kept_mask(...) returns the kernel's kept set (on the one-program general path the top-p cut then
comes from the streaming bisection, which sampling itself does not need).
"""
from __future__ import annotations

import functools
import math
import os
import warnings

import torch
import triton
import triton.language as tl
from triton.runtime import driver

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ---------------------------------------------------------------------------------------------
# Kernels: shared helpers, the one-program-per-row kernel, then the split-row kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _load_s(base, idx, V, inv_t):
    s = tl.load(base + idx, mask=idx < V, other=float("-inf")).to(tl.float32) * inv_t
    return tl.where(s == s, s, float("-inf"))  # NaN counts as -inf: never kept


@triton.jit
def _advance(j, piv, cnt, mass, pred, lo, hi, cnt_hi, mass_hi, k, it, dominated, USE_MASS: tl.constexpr):
    """One bisection step from the counts/masses at NP pivots (piv[0] = lo) and the predicate
    there (count >= k, or mass >= target). Keeps the invariant: the answer is in [lo, hi)."""
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
    return lo, hi, cnt_hi, mass_hi, dominated, done


@triton.jit
def _search(
    base, V, inv_t, m, lo, hi, k, top_p, target, mk_base,
    USE_MASS: tl.constexpr, BLOCK_V: tl.constexpr, NP: tl.constexpr, MAX_ITERS: tl.constexpr,
):
    """Threshold search streaming the row from memory, NP pivots a pass. Top-k (USE_MASS off):
    the largest lo with count(s >= lo) >= k. Top-p (on): the largest lo with
    mass(s >= lo) >= target, where target < 0 means top_p · mass(s >= mk_base), summed during
    the first pass. Needs: the answer in [lo, hi), nothing at or above hi (hi > max).
    Returns (lo, dominated): dominated when the predicate already fails at the entry lo (the
    threshold lies below it, and the caller's lower bound, e.g. min-p's cut, decides)."""
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
            if tl.max(inr.to(tl.int32), axis=0) > 0:  # after one pass most tiles hold no candidate
                ge = (s[:, None] >= piv[None, :]) & inr[:, None]  # [BLOCK_V, NP]
                cnt += tl.sum(ge.to(tl.int32), axis=0)
                if USE_MASS:
                    e = tl.exp(s - m)
                    mass += tl.sum(tl.where(ge, e[:, None], 0.0), axis=0)
        cnt += cnt_hi  # everything at or above hi is above every pivot
        mass += mass_hi
        if USE_MASS:
            target = tl.where(first_mk, top_p * mk, target)
            pred = mass >= target
        else:
            pred = cnt >= k
        lo, hi, cnt_hi, mass_hi, dominated, done = _advance(
            j, piv, cnt, mass, pred, lo, hi, cnt_hi, mass_hi, k, it, dominated, USE_MASS)
        it += 1
    return lo, dominated


@triton.jit
def _search_regs(vals, w, lo, hi, k, target, USE_MASS: tl.constexpr, NP: tl.constexpr, MAX_ITERS: tl.constexpr):
    """The same search over values held in registers (vals [N], weights w [N]; padding -inf)."""
    j = tl.arange(0, NP)
    zero = tl.program_id(0) * 0
    cnt_hi = zero
    mass_hi = zero.to(tl.float32)
    dominated = zero
    done = zero
    it = zero
    while (it < MAX_ITERS) & (done == 0):
        piv = lo + j.to(tl.float32) * ((hi - lo) / NP)
        ge = vals[:, None] >= piv[None, :]  # [N, NP]
        cnt = tl.sum(ge.to(tl.int32), axis=0)
        if USE_MASS:
            mass = tl.sum(tl.where(ge, w[:, None], 0.0), axis=0)
            pred = mass >= target
        else:
            mass = cnt.to(tl.float32)
            pred = cnt >= k
        lo, hi, cnt_hi, mass_hi, dominated, done = _advance(
            j, piv, cnt, mass, pred, lo, hi, cnt_hi, mass_hi, k, it, dominated, USE_MASS)
        it += 1
    return lo, dominated


@triton.jit
def _exp1(r):
    """Exp(1) variates from uint32 randoms: E = -log(1 - u), u in (0, 1); for small u (where the
    Gumbel-max winners come from) the series u + u²/2 + u³/3 keeps full float32 precision."""
    u = (r.to(tl.float32) + 0.5) * 2.3283064365386963e-10
    u = tl.minimum(u, 0.99999994)
    return tl.where(u < 0.0078125, u * (1.0 + u * (0.5 + u * 0.3333333333)), -tl.log(1.0 - u))


@triton.jit
def _rand4(seed, counter, comp):
    """Component comp (0..3) of Philox4x32 at counter: token v of sample j uses counter
    j·ceil(V/4) + v // 4 and component v % 4, whichever code path draws it."""
    r0, r1, r2, r3 = tl.randint4x(seed, counter)
    return tl.where(comp == 0, r0, tl.where(comp == 1, r1, tl.where(comp == 2, r2, r3)))


@triton.jit
def _row_params(row, TEMP, TOPK, TOPP, MINP, temp_val, topk_val, topp_val, minp_val,
                T_ROW: tl.constexpr, K_ROW: tl.constexpr, P_ROW: tl.constexpr, MINP_ROW: tl.constexpr):
    """A row's (temperature, top_k, top_p, min_p): from its tensor [B], or the one number."""
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
    return temp, k, top_p, min_p


@triton.jit
def _filters(m, nf, k, top_p, min_p, greedy):
    """Which filters act on a row, m_up (strictly above the max: nothing lies at or above it) and
    lo_mp, a lower bound of min-p's cut (it keeps exp(s - m) >= min_p, i.e. s >= m + log(min_p);
    a little lower to cover rounding)."""
    k_on = (k > 0) & (k < nf) & (~greedy)
    p_on = (top_p < 1.0) & (~greedy)
    mp_on = (min_p > 0.0) & (~greedy)
    m_up = m + (tl.abs(m) + 1.0) * 1e-6
    log_mp = tl.log(tl.maximum(min_p, 1e-30))
    lo_mp = tl.where(mp_on, m + log_mp - 1e-5 * (1.0 + tl.abs(m) + tl.abs(log_mp)), float("-inf"))
    return k_on, p_on, mp_on, m_up, lo_mp


@triton.jit
def _kept(s, t, m, min_p, mp_on, greedy):
    """The kept set's membership: s >= t, finite, min-p's exact condition; greedy: s == max."""
    keep = (s >= t) & (s > float("-inf"))
    if mp_on:
        keep = keep & (tl.exp(s - m) >= min_p)
    return tl.where(greedy, s == m, keep)


@triton.jit
def _write_mask(MASK_ROW, base, start, end, inv_t, t, m, min_p, mp_on, greedy, BLOCK: tl.constexpr):
    """kept_mask's tokens start..end-1 of one row: the kept set as int8, for tests."""
    offs = tl.arange(0, BLOCK)
    for v0 in range(start, end, BLOCK):
        idx = v0 + offs
        s = _load_s(base, idx, end, inv_t)
        tl.store(MASK_ROW + idx, _kept(s, t, m, min_p, mp_on, greedy).to(tl.int8), mask=idx < end)


@triton.jit
def _cand_threshold(cs, e_c, lo, hi, m_up, k, k_on, p_on, top_p, target, lo_mp,
                    NP: tl.constexpr, MAX_ITERS: tl.constexpr):
    """The final threshold t from candidates in registers that hold every token >= lo (values cs,
    weights e_c = exp(cs - m), padding -inf): top-k by count in [lo, hi), then top-p by mass
    relative to the top-k set (target = top_p · Z when top-k is off) in [lo, hi), or in
    [max(t_k, lo_mp), m_up) after top-k. The kept set is {s >= t} with min-p's condition."""
    t_k = tl.full((), float("-inf"), tl.float32)
    if k_on:
        t_k, dom_k = _search_regs(cs, e_c, lo, hi, k, 0.0, False, NP, MAX_ITERS)
    t = tl.maximum(t_k, lo)
    if p_on:
        lo_p = lo
        hi_p = hi
        tgt = target
        if k_on:  # top-p is relative to the mass of the top-k set
            lo_p = tl.maximum(t_k, lo_mp)
            hi_p = m_up
            tgt = top_p * tl.sum(tl.where(cs >= t_k, e_c, 0.0), axis=0)
        # target > 0: at least the most probable token is kept, even at top_p = 0
        t, dom_p = _search_regs(cs, e_c, lo_p, hi_p, k, tl.maximum(tgt, 1e-30), True, NP, MAX_ITERS)
    return t


@triton.jit
def _cand_draw(TOK, row, cs, ci, surv_c, greedy, seed, V4, n_samples, NS: tl.constexpr):
    """Gumbel-max over the surviving candidates, NS samples at a time: argmax(s - log E),
    E ~ Exp(1) from token ci's Philox word (the same word whichever path draws it)."""
    for j0 in range(0, n_samples, NS):
        js = j0 + tl.arange(0, NS)  # [NS]
        r = _rand4(seed + row, js[:, None] * V4 + (ci // 4)[None, :], (ci % 4)[None, :])  # [NS, CAP]
        key = tl.where(greedy, 0.0, cs[None, :] - tl.log(_exp1(r)))
        key = tl.where(surv_c[None, :], key, float("-inf"))
        best = tl.max(key, axis=1)
        pick = tl.min(tl.where(key == best[:, None], ci[None, :], 2147483647), axis=1)  # ties: first index
        tl.store(TOK + row.to(tl.int64) * n_samples + js, pick.to(tl.int64), mask=js < n_samples)


@triton.jit
def _general_row(
    base, TOK, row, V, inv_t, m, z, lo, m_up, k, top_p, min_p, k_on, p_on, mp_on, greedy, lo_mp,
    seed, n_samples,
    BLOCK_V: tl.constexpr, NP: tl.constexpr, NS: tl.constexpr, MAX_ITERS: tl.constexpr, WRITE_MASK: tl.constexpr,
):
    """One program draws a row's samples streaming it (lo: a lower bound of the threshold).
    top-k: bisection streaming the row. top-p: rejection sampling (exact): propose
    j ~ p on {s >= t_base, s > pivot, min-p}; keep it if the mass above it (within the top-k
    set) is < top_p · mass(top-k set), i.e. j is in the top-p set; otherwise no token with
    s <= s_j can be, so pivot = s_j and propose again. A proposal accepted is distributed as p on
    the kept set; a round costs two passes and accepts with probability >= top_p at the first,
    so ~1-2 rounds. Returns the threshold t of the kept set (the exact top-p cut only when
    WRITE_MASK: sampling does not need it)."""
    Q: tl.constexpr = BLOCK_V // 4
    qq = tl.arange(0, Q)
    flat = qq[:, None] * 4 + tl.arange(0, 4)[None, :]  # [Q, 4]: token v0 + 4q + c
    V4 = (V + 3) // 4
    zero = row * 0
    t_base = lo
    if k_on:
        t_base, dom_k = _search(base, V, inv_t, m, lo, m_up, k, 0.0, 0.0, 0.0,
                                False, BLOCK_V, NP, MAX_ITERS)
    t = t_base
    if WRITE_MASK:  # the exact top-p cut, only for the kept mask
        if p_on:
            if k_on:
                lo_p = tl.maximum(t_base, lo_mp)
                target = zero.to(tl.float32) - 1.0  # top_p · mass of the top-k set, summed in pass 1
            else:
                lo_p = lo
                target = top_p * z
            t, dom_p = _search(base, V, inv_t, m, lo_p, m_up, k, top_p, target, t_base,
                               True, BLOCK_V, NP, MAX_ITERS)
    ns_idx = tl.arange(0, NS)
    for j0 in range(0, n_samples, NS):
        js = j0 + ns_idx  # [NS]
        pivot = tl.full([NS], float("-inf"), tl.float32)
        done = (js >= n_samples).to(tl.int32)
        tok = tl.zeros([NS], dtype=tl.int32)
        rnd = zero
        while (tl.min(done, axis=0) == 0) & (rnd <= V):
            # proposal: Gumbel-max over the base set above each sample's pivot
            bk = tl.full([NS, Q, 4], float("-inf"), tl.float32)
            bi = tl.zeros([NS, Q, 4], dtype=tl.int32)
            for v0 in range(0, V, BLOCK_V):
                idx = v0 + flat
                s = _load_s(base, idx, V, inv_t)
                ok = (s >= t_base) & (s > float("-inf"))
                if mp_on:
                    ok = ok & (tl.exp(s - m) >= min_p)
                ok = tl.where(greedy, s == m, ok)
                r0, r1, r2, r3 = tl.randint4x(seed + row + rnd * 1000003, js[:, None] * V4 + (v0 // 4 + qq)[None, :])
                c4 = tl.arange(0, 4)[None, None, :]
                r = tl.where(c4 == 0, r0[:, :, None], tl.where(c4 == 1, r1[:, :, None],
                             tl.where(c4 == 2, r2[:, :, None], r3[:, :, None])))  # [NS, Q, 4]
                key = tl.where(greedy, 0.0, s[None, :, :] - tl.log(_exp1(r)))
                key = tl.where(ok[None, :, :] & (s[None, :, :] > pivot[:, None, None]), key, float("-inf"))
                upd = key > bk
                bk = tl.where(upd, key, bk)
                bi = tl.where(upd, idx[None, :, :], bi)
            best = tl.max(tl.max(bk, axis=2), axis=1)  # [NS]
            arg = tl.min(tl.min(tl.where(bk == best[:, None, None], bi, 2147483647), axis=2), axis=1)
            s_j = _load_s(base, arg, V, inv_t)  # [NS] the proposals' values
            accept = (done == 0)
            if p_on:  # check: mass above each proposal, and the top-k set's mass
                gt = tl.zeros([NS, Q, 4], dtype=tl.float32)
                mk_vec = tl.zeros([Q, 4], dtype=tl.float32)
                for v0 in range(0, V, BLOCK_V):
                    s = _load_s(base, v0 + flat, V, inv_t)
                    e = tl.where(s > float("-inf"), tl.exp(s - m), 0.0)
                    gt += tl.where(s[None, :, :] > s_j[:, None, None], e[None, :, :], 0.0)
                    mk_vec += tl.where(s >= t_base, e, 0.0)
                mass_gt = tl.sum(tl.sum(gt, axis=2), axis=1)
                mass_k = tl.where(k_on, tl.sum(tl.sum(mk_vec, axis=1), axis=0), z)
                # the most probable token is always kept (top-p keeps at least one)
                accept = accept & ((mass_gt < top_p * mass_k) | (s_j >= m))
            tok = tl.where(accept, arg, tok)
            done = tl.where(accept, 1, done)
            pivot = tl.where(done == 0, s_j, pivot)
            rnd += 1
        tl.store(TOK + row.to(tl.int64) * n_samples + js, tok.to(tl.int64), mask=js < n_samples)
    return t


@triton.jit(do_not_specialize=["topk_val", "seed", "n_samples"], do_not_specialize_on_alignment=["TEMP", "TOPK", "TOPP", "MINP"])
def _sample_kernel(
    L, TOK, MASK, CAND_S, CAND_I, TEMP, TOPK, TOPP, MINP,
    temp_val, topk_val, topp_val, minp_val,
    V, stride_l, seed, n_samples,
    T_ROW: tl.constexpr, K_ROW: tl.constexpr, P_ROW: tl.constexpr, MINP_ROW: tl.constexpr,
    BLOCK_V: tl.constexpr, CAP: tl.constexpr, NP: tl.constexpr, NS: tl.constexpr,
    MAX_ITERS: tl.constexpr, WRITE_MASK: tl.constexpr,
):
    """One program per row: the whole sampler (module docstring, "one program per row")."""
    row = tl.program_id(0)
    base = L + row.to(tl.int64) * stride_l
    temp, k, top_p, min_p = _row_params(row, TEMP, TOPK, TOPP, MINP, temp_val, topk_val, topp_val, minp_val,
                                         T_ROW, K_ROW, P_ROW, MINP_ROW)
    greedy = temp <= 0.0
    inv_t = 1.0 / tl.where(greedy, 1.0, temp)
    V4 = (V + 3) // 4  # Philox counters per sample (4 random words each)
    # Tiles are [Q, 4]: token v0 + 4q + c. Every pass keeps per-lane accumulators and reduces
    # once after its loop: no barrier inside a loop, the warps stream independently and keep
    # more loads in flight.
    Q: tl.constexpr = BLOCK_V // 4
    qq = tl.arange(0, Q)
    flat = qq[:, None] * 4 + tl.arange(0, 4)[None, :]  # [Q, 4]

    # ---- pass 1: per lane: max, min, finite count, Σ exp(s - max) (online softmax) ----
    m_vec = tl.full([Q, 4], float("-inf"), tl.float32)
    mn_vec = tl.full([Q, 4], float("inf"), tl.float32)
    z_vec = tl.zeros([Q, 4], dtype=tl.float32)
    nf_vec = tl.zeros([Q, 4], dtype=tl.int32)
    for v0 in range(0, V, BLOCK_V):
        s = _load_s(base, v0 + flat, V, inv_t)
        fin = s > float("-inf")
        m_new = tl.maximum(m_vec, s)
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)  # a lane with only -inf so far: 0, not NaN
        z_vec = z_vec * tl.exp(m_vec - m_sub) + tl.exp(s - m_sub)
        m_vec = m_new
        mn_vec = tl.minimum(mn_vec, tl.where(fin, s, float("inf")))
        nf_vec += fin.to(tl.int32)
    m = tl.max(tl.max(m_vec, axis=1), axis=0)
    m_sub = tl.where(m == float("-inf"), 0.0, m)
    z = tl.sum(tl.sum(z_vec * tl.exp(m_vec - m_sub), axis=1), axis=0)  # Z = Σ exp(s - m)
    mn = tl.min(tl.min(mn_vec, axis=1), axis=0)
    nf = tl.sum(tl.sum(nf_vec, axis=1), axis=0)
    k_on, p_on, mp_on, m_up, lo_mp = _filters(m, nf, k, top_p, min_p, greedy)

    # ---- a lower bound lo of the final threshold: every kept token has s >= lo ----
    lo = mn
    if k_on:  # the BLOCK_V lane maxima are distinct logits: k of them reach their k-th largest
        lane_max = tl.reshape(m_vec, [BLOCK_V])
        lo, dom_b = _search_regs(lane_max, lane_max, mn, m_up, k, 0.0, False, NP, MAX_ITERS)
        lo = tl.maximum(lo, mn)
        if mp_on & (~p_on):  # min-p alone decides below its cut
            lo = tl.maximum(lo, lo_mp)
    else:
        if p_on:  # below m + log((1 - p) Z / n), even n tokens hold less than the missing 1 - p
            bound = m + tl.log(tl.maximum((1.0 - top_p) * z / nf.to(tl.float32), 1e-30)) - 1e-3
            lo = tl.maximum(mn, bound)
        lo = tl.maximum(lo, lo_mp)

    # ---- pass 2: count the candidates s >= lo per lane ----
    c_vec = tl.zeros([Q, 4], dtype=tl.int32)
    for v0 in range(0, V, BLOCK_V):
        s = _load_s(base, v0 + flat, V, inv_t)
        c_vec += ((s >= lo) & (s > float("-inf"))).to(tl.int32)
    nc = tl.sum(tl.sum(c_vec, axis=1), axis=0)

    t = lo  # the kept set is {s >= t} (and min-p's condition), finite s only
    if nc <= CAP:
        # ---- fast path. Pass 3 gathers the candidates into a per-row scratch, lane by lane
        # (lane i writes at the exclusive prefix sum of the lane counts: no barrier) ----
        c_flat = tl.reshape(c_vec, [BLOCK_V])
        off = tl.reshape(tl.cumsum(c_flat, axis=0) - c_flat, [Q, 4])
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + flat
            s = _load_s(base, idx, V, inv_t)
            sel = (s >= lo) & (s > float("-inf"))
            tl.store(CAND_S + row * CAP + off, s, mask=sel)
            tl.store(CAND_I + row * CAP + off, idx, mask=sel)
            off += sel.to(tl.int32)
        tl.debug_barrier()  # other warps' scratch writes must be visible before the reads below
        # thresholds by bisection on the candidates in registers; no further pass over the row
        slot = tl.arange(0, CAP)
        cs = tl.load(CAND_S + row * CAP + slot, mask=slot < nc, other=float("-inf"))  # [CAP]
        ci = tl.load(CAND_I + row * CAP + slot, mask=slot < nc, other=0)
        e_c = tl.where(cs > float("-inf"), tl.exp(cs - m), 0.0)
        t = _cand_threshold(cs, e_c, lo, m_up, m_up, k, k_on, p_on, top_p, top_p * z, lo_mp, NP, MAX_ITERS)
        surv_c = _kept(cs, t, m, min_p, mp_on, greedy) & (slot < nc)
        _cand_draw(TOK, row, cs, ci, surv_c, greedy, seed, V4, n_samples, NS)
    else:
        # ---- general path (many candidates: a flat distribution, a large k) ----
        t = _general_row(base, TOK, row, V, inv_t, m, z, lo, m_up, k, top_p, min_p, k_on, p_on, mp_on,
                         greedy, lo_mp, seed, n_samples, BLOCK_V, NP, NS, MAX_ITERS, WRITE_MASK)
    if WRITE_MASK:  # the kept set, for tests
        _write_mask(MASK + row.to(tl.int64) * V, base, 0, V, inv_t, t, m, min_p, mp_on, greedy, BLOCK_V)


# ---------------------------------------------------------------------------------------------
# Split rows: C programs per row (small B). Cross-chunk sums happen between launches: each
# launch reduces the C partials the previous one wrote, every program of a row in the same
# order, so a row's programs agree bit for bit (no host sync: graph-capturable); the gather's
# arrival counter only elects the program that finishes a row.
# Workspace: one float32 buffer (token indices < 2^24 are exact as float32), carved by
# _ws_layout. Per row: STATS [C_PAD, 4], ROWC [NF] (row constants, the final threshold, the
# arrival counter), SST [2][NF] (search state, double-buffered: launch r reads r-1's, writes its
# own), PIV [2][NP] (a round's pivots), PART [2][C_PAD, 2, NP] (per chunk count and mass at the
# pivots), CAND [2, CAP] (values, then indices), TILE [NT] (kept mass of each BLOCK-token tile).
# ---------------------------------------------------------------------------------------------
NF_FIELDS = 16
NF = tl.constexpr(NF_FIELDS)  # floats in a ROWC or SST record
ROWC_T = tl.constexpr(9)  # ROWC field: the row's final threshold (for the mask launch)
ROWC_ARRIVED = tl.constexpr(10)  # ROWC field: the gather's arrival counter
PHASE_K = tl.constexpr(0)  # searching t_k: count(s >= x) >= k
PHASE_P = tl.constexpr(1)  # searching t_p: mass(s >= x) >= target
PHASE_DONE = tl.constexpr(2)  # the threshold is lo
SPLIT_MODES = ("done", "full", "interval", "fallback")  # how a split row settled: split_modes' codes
MODE_DONE = tl.constexpr(0)  # after the gather: t = lo, draw by tiles
MODE_FULL = tl.constexpr(1)  # every token >= lo is in CAND: thresholds from it, draw from it
MODE_INTERVAL = tl.constexpr(2)  # the tokens in [lo, hi) are in CAND: t from them, draw from tiles and it
MODE_FALLBACK = tl.constexpr(3)  # too many left: the finishing program runs the one-program general path


@triton.jit
def _ws_layout(WS, B, C_PAD, NP, CAP):
    STATS = WS
    ROWC = STATS + B * C_PAD * 4
    SST = ROWC + B * NF
    PIV = SST + 2 * B * NF
    PART = PIV + 2 * B * NP
    CAND = PART + 2 * B * C_PAD * 2 * NP
    TILE = CAND + B * 2 * CAP
    return STATS, ROWC, SST, PIV, PART, CAND, TILE


def _ws_floats(B: int, C_PAD: int, NP: int, CAP: int, NT: int) -> int:
    """The workspace size _ws_layout carves (float32 elements)."""
    return B * (C_PAD * 4 + NF_FIELDS + 2 * NF_FIELDS + 2 * NP + 2 * C_PAD * 2 * NP + 2 * CAP + NT)


@triton.jit
def _rowc_load(P):
    flags = tl.load(P + 8).to(tl.int32)
    return (tl.load(P + 0), tl.load(P + 1), tl.load(P + 2), tl.load(P + 3), tl.load(P + 4),
            tl.load(P + 5).to(tl.int32), tl.load(P + 6), tl.load(P + 7),
            (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0, (flags & 8) != 0)


@triton.jit
def _sst_load(P):
    return (tl.load(P + 0), tl.load(P + 1), tl.load(P + 2), tl.load(P + 3), tl.load(P + 4), tl.load(P + 5),
            tl.load(P + 6).to(tl.int32), tl.load(P + 7).to(tl.int32), tl.load(P + 8).to(tl.int32),
            tl.load(P + 9).to(tl.int32))


@triton.jit
def _sst_store(P, lo, hi, target, cnt_lo, cnt_hi, mass_hi, phase, jlo, jhi, mode, do):
    tl.store(P + 0, lo, mask=do)
    tl.store(P + 1, hi, mask=do)
    tl.store(P + 2, target, mask=do)
    tl.store(P + 3, cnt_lo, mask=do)
    tl.store(P + 4, cnt_hi, mask=do)
    tl.store(P + 5, mass_hi, mask=do)
    tl.store(P + 6, phase.to(tl.float32), mask=do)
    tl.store(P + 7, jlo.to(tl.float32), mask=do)
    tl.store(P + 8, jhi.to(tl.float32), mask=do)
    tl.store(P + 9, mode.to(tl.float32), mask=do)


@triton.jit
def _pivots(lo, hi, NP: tl.constexpr):
    """NP pivots from lo to hi, both included (non-decreasing in float32 too)."""
    j = tl.arange(0, NP)
    piv = lo + j.to(tl.float32) * ((hi - lo) / (NP - 1))
    return tl.where(j == NP - 1, hi, tl.minimum(piv, hi))


# Every split kernel takes TILES (BLOCK-token tiles a chunk), not the chunk length: a chunk's
# first token c·TILES·BLOCK is then a multiple of BLOCK for the compiler, and with V a multiple
# of 16 (specialized) the masked tile loads stay vectorized. Every other int is unspecialized
# (one compile for any batch, chunking, round, seed; _run_launches relies on it).
@triton.jit(do_not_specialize=["TILES"], do_not_specialize_on_alignment=["TEMP"])
def _split_stats_kernel(L, WS, TEMP, temp_val, V, stride_l, TILES,
                        T_ROW: tl.constexpr, C_PAD: tl.constexpr, BLOCK: tl.constexpr):
    """Per chunk: max, Σ exp(s - max), min and finite count (online softmax, per lane)."""
    c = tl.program_id(0)
    row = tl.program_id(1)
    base = L + row.to(tl.int64) * stride_l
    if T_ROW:
        temp = tl.load(TEMP + row).to(tl.float32)
    else:
        temp = temp_val
    inv_t = 1.0 / tl.where(temp <= 0.0, 1.0, temp)
    offs = tl.arange(0, BLOCK)
    start = c * TILES * BLOCK
    end = tl.minimum(start + TILES * BLOCK, V)
    m_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    mn_vec = tl.full([BLOCK], float("inf"), tl.float32)
    z_vec = tl.zeros([BLOCK], dtype=tl.float32)
    nf_vec = tl.zeros([BLOCK], dtype=tl.float32)
    for v0 in range(start, end, BLOCK):
        s = _load_s(base, v0 + offs, end, inv_t)
        fin = s > float("-inf")
        m_new = tl.maximum(m_vec, s)
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        z_vec = z_vec * tl.exp(m_vec - m_sub) + tl.exp(s - m_sub)
        m_vec = m_new
        mn_vec = tl.minimum(mn_vec, tl.where(fin, s, float("inf")))
        nf_vec += fin.to(tl.float32)
    m = tl.max(m_vec, axis=0)
    m_sub = tl.where(m == float("-inf"), 0.0, m)
    P = WS + (row * C_PAD + c) * 4  # STATS is the workspace's first region
    tl.store(P + 0, m)
    tl.store(P + 1, tl.sum(z_vec * tl.exp(m_vec - m_sub), axis=0))
    tl.store(P + 2, tl.min(mn_vec, axis=0))
    tl.store(P + 3, tl.sum(nf_vec, axis=0))


@triton.jit
def _split_advance(PART_ROW, PIV_ROW, C, lo, hi, target, k, p_on, phase, C_PAD: tl.constexpr, NP: tl.constexpr):
    """One bisection step of a row from the previous round's per-chunk counts and masses at its
    pivots. Keeps the invariant pred(lo), not pred(hi); settles the row (t = lo) once one token
    is left in [lo, hi), the interval cannot be split, or (top-k alone) count(s >= lo) == k."""
    cc = tl.arange(0, C_PAD)
    j = tl.arange(0, NP)
    ptr = PART_ROW + cc[:, None] * (2 * NP) + j[None, :]
    ok = (cc < C)[:, None]
    cnt = tl.sum(tl.load(ptr, mask=ok, other=0.0), axis=0)  # [NP] count(s >= P_j) over the row
    mass = tl.sum(tl.load(ptr + NP, mask=ok, other=0.0), axis=0)  # [NP] Σ exp(s - m) over s >= P_j
    piv = tl.load(PIV_ROW + j)
    is_k = phase == PHASE_K
    pred = tl.where(is_k, cnt >= k.to(tl.float32), mass >= target)  # non-increasing in j
    ok0 = tl.sum(tl.where(j == 0, pred.to(tl.int32), 0), axis=0) > 0
    jlo = tl.max(tl.where(pred, j, 0), axis=0)
    jhi = tl.min(tl.where(pred, NP - 1, j), axis=0)
    new_lo = tl.sum(tl.where(j == jlo, piv, 0.0), axis=0)
    new_hi = tl.sum(tl.where(j == jhi, piv, 0.0), axis=0)
    cnt_lo = tl.sum(tl.where(j == jlo, cnt, 0.0), axis=0)
    cnt_hi = tl.sum(tl.where(j == jhi, cnt, 0.0), axis=0)
    mass_hi = tl.sum(tl.where(j == jhi, mass, 0.0), axis=0)
    progress = (new_lo != lo) | (new_hi != hi)
    # top-k followed by top-p never settles here: its top-p cut needs the gathered top-k set
    settled = tl.where(is_k, (~p_on) & ((cnt_lo == k.to(tl.float32)) | (~progress)),
                       (cnt_lo - cnt_hi <= 1.0) | (~progress))
    # pred fails at lo: in a search's first round t lies below lo and lo decides (min-p's cut);
    # later only float noise could say so. Either way the row is done at lo.
    settled = settled | ((~ok0) & ~(is_k & p_on))
    lo = tl.where(ok0, new_lo, lo)
    hi = tl.where(ok0, new_hi, hi)
    phase = tl.where(settled, PHASE_DONE, phase)
    return lo, hi, cnt_lo, cnt_hi, mass_hi, phase, jlo, jhi


@triton.jit
def _weigh(s, piv, m, acc_n, acc_m):
    """Add a tile's count and mass at each pivot: s [n, 1], [n, NP] per-lane accumulators."""
    ge = s >= piv[None, :]
    e = tl.where(s > float("-inf"), tl.exp(s - m), 0.0)
    return acc_n + ge.to(tl.float32), acc_m + tl.where(ge, e, 0.0)


@triton.jit(do_not_specialize=["topk_val", "B", "TILES", "C", "r"],
            do_not_specialize_on_alignment=["TEMP", "TOPK", "TOPP", "MINP"])
def _split_round_kernel(
    L, WS, TEMP, TOPK, TOPP, MINP, temp_val, topk_val, topp_val, minp_val,
    B, V, stride_l, TILES, C, r,
    T_ROW: tl.constexpr, K_ROW: tl.constexpr, P_ROW: tl.constexpr, MINP_ROW: tl.constexpr,
    FIRST: tl.constexpr, C_PAD: tl.constexpr, NP: tl.constexpr, CAP: tl.constexpr, BLOCK: tl.constexpr,
):
    """Round r of a row's search: take the state (FIRST: from the chunk statistics; else one
    bisection step from round r-1's partials), then count and weigh this chunk's tokens at the
    state's NP pivots."""
    c = tl.program_id(0)
    row = tl.program_id(1)
    base = L + row.to(tl.int64) * stride_l
    STATS, ROWC, SST, PIV, PART, CAND, TILE = _ws_layout(WS, B, C_PAD, NP, CAP)
    par_out = r % 2
    par_in = 1 - par_out
    lead = c == 0  # the program that writes the row's records (all of them compute the same)
    cc = tl.arange(0, C_PAD)
    jj = tl.arange(0, NP)
    start = c * TILES * BLOCK
    end = tl.minimum(start + TILES * BLOCK, V)
    if FIRST:
        temp, k, top_p, min_p = _row_params(row, TEMP, TOPK, TOPP, MINP, temp_val, topk_val, topp_val, minp_val,
                                             T_ROW, K_ROW, P_ROW, MINP_ROW)
        sp = STATS + row * C_PAD * 4 + cc * 4
        m_c = tl.load(sp + 0, mask=cc < C, other=float("-inf"))
        m = tl.max(m_c, axis=0)
        m_sub = tl.where(m == float("-inf"), 0.0, m)
        z = tl.sum(tl.where(m_c > float("-inf"), tl.load(sp + 1, mask=cc < C, other=0.0) * tl.exp(m_c - m_sub), 0.0), axis=0)
        mn = tl.min(tl.load(sp + 2, mask=cc < C, other=float("inf")), axis=0)
        nf = tl.sum(tl.load(sp + 3, mask=cc < C, other=0.0), axis=0)
        greedy = temp <= 0.0
        inv_t = 1.0 / tl.where(greedy, 1.0, temp)
        k_on, p_on, mp_on, m_up, lo_mp = _filters(m, nf, k, top_p, min_p, greedy)
        rp = ROWC + row * NF
        tl.store(rp + 0, m, mask=lead)
        tl.store(rp + 1, z, mask=lead)
        tl.store(rp + 2, m_up, mask=lead)
        tl.store(rp + 3, lo_mp, mask=lead)
        tl.store(rp + 4, inv_t, mask=lead)
        tl.store(rp + 5, tl.where(k_on, k, 0).to(tl.float32), mask=lead)  # < V: exact
        tl.store(rp + 6, top_p, mask=lead)
        tl.store(rp + 7, min_p, mask=lead)
        flags = k_on.to(tl.int32) + 2 * p_on.to(tl.int32) + 4 * mp_on.to(tl.int32) + 8 * greedy.to(tl.int32)
        tl.store(rp + 8, flags.to(tl.float32), mask=lead)
        tl.store(rp + ROWC_ARRIVED, 0.0, mask=lead)  # the gather launch counts arrivals from 0
        # the first interval [lo, hi): top-k by count from the min (min-p's cut when it alone
        # decides below t_k); top-p alone by mass from the lower bound of the one-program path
        bound = m + tl.log(tl.maximum((1.0 - top_p) * z / nf, 1e-30)) - 1e-3
        lo = tl.where(k_on, tl.where(mp_on & (~p_on), tl.maximum(mn, lo_mp), mn),
                      tl.where(p_on, tl.maximum(tl.maximum(mn, bound), lo_mp), lo_mp))
        lo = tl.where(greedy, m, lo)
        hi = m_up
        target = tl.maximum(top_p * z, 1e-30)  # > 0: the most probable token is always kept
        phase = tl.where(k_on, PHASE_K, tl.where(p_on, PHASE_P, PHASE_DONE)).to(tl.int32)
        cnt_lo = z * 0.0
        cnt_hi = cnt_lo
        mass_hi = cnt_lo
        jlo = phase * 0
        jhi = jlo + NP - 1
    else:
        m, z, m_up, lo_mp, inv_t, k, top_p, min_p, k_on, p_on, mp_on, greedy = _rowc_load(ROWC + row * NF)
        lo, hi, target, cnt_lo, cnt_hi, mass_hi, phase, jlo, jhi, mode = _sst_load(SST + (par_in * B + row) * NF)
        if phase != PHASE_DONE:
            lo, hi, cnt_lo, cnt_hi, mass_hi, phase, jlo, jhi = _split_advance(
                PART + (par_in * B + row) * (C_PAD * 2 * NP), PIV + (par_in * B + row) * NP, C,
                lo, hi, target, k, p_on, phase, C_PAD, NP)
    _sst_store(SST + (par_out * B + row) * NF, lo, hi, target, cnt_lo, cnt_hi, mass_hi, phase, jlo, jhi,
               phase * 0 + MODE_DONE, lead)
    if phase != PHASE_DONE:
        piv = _pivots(lo, hi, NP)  # [NP]; stored, so the next launch compares the same floats
        if c == 0:
            tl.store(PIV + (par_out * B + row) * NP + jj, piv)
        # Per-lane accumulators [BLOCK/4, NP] (registers cap BLOCK·NP), reduced once after the
        # loop (no barrier in it). Each step's 4 quarter tiles are loaded as [SUB, 1] (the
        # accumulators' layout: no conversion through shared memory) and issued one step ahead
        # (plain loads are not software-pipelined, and at ~170 registers one CTA fills an SM).
        # H200, graph replay: B = 32 20-25% faster than 1-D loads issued at the top of each
        # step; B = 8 (chunks of 4096) 2-11%; B = 1 the same.
        SUB: tl.constexpr = BLOCK // 4
        acc_n = tl.zeros([SUB, NP], dtype=tl.float32)
        acc_m = tl.zeros([SUB, NP], dtype=tl.float32)
        sub = tl.arange(0, SUB)[:, None]
        s0 = _load_s(base, start + sub, end, inv_t)
        s1 = _load_s(base, start + SUB + sub, end, inv_t)
        s2 = _load_s(base, start + 2 * SUB + sub, end, inv_t)
        s3 = _load_s(base, start + 3 * SUB + sub, end, inv_t)
        for v0 in range(start, end, BLOCK):
            n0 = _load_s(base, v0 + BLOCK + sub, end, inv_t)  # masked off past the chunk
            n1 = _load_s(base, v0 + BLOCK + SUB + sub, end, inv_t)
            n2 = _load_s(base, v0 + BLOCK + 2 * SUB + sub, end, inv_t)
            n3 = _load_s(base, v0 + BLOCK + 3 * SUB + sub, end, inv_t)
            acc_n, acc_m = _weigh(s0, piv, m, acc_n, acc_m)
            acc_n, acc_m = _weigh(s1, piv, m, acc_n, acc_m)
            acc_n, acc_m = _weigh(s2, piv, m, acc_n, acc_m)
            acc_n, acc_m = _weigh(s3, piv, m, acc_n, acc_m)
            s0, s1, s2, s3 = n0, n1, n2, n3
        pp = PART + ((par_out * B + row) * C_PAD + c) * (2 * NP)
        tl.store(pp + jj, tl.sum(acc_n, axis=0))
        tl.store(pp + NP + jj, tl.sum(acc_m, axis=0))


@triton.jit
def _unif(r):
    """A uint32 random word as a uniform in (0, 1) (float32: 1.0 for the top 2^7 words)."""
    return (r.to(tl.float32) + 0.5) * 2.3283064365386963e-10


@triton.jit
def _split_draw(base, TOK, TILE_ROW, row, V, NT, inv_t, a_lo, m, min_p, mp_on, greedy, tiled, ci, w_c,
                seed, n_samples, CAP: tl.constexpr, BLOCK: tl.constexpr, NS: tl.constexpr, TB: tl.constexpr):
    """A row's samples once its kept set is known. The listed kept tokens (weights w_c, CAP
    slots) are one pseudo-tile of mass M_L = Σ w_c; when `tiled`, each BLOCK-token tile τ of the
    kept tokens not listed (s >= a_lo) has its mass M_τ in TILE_ROW. Gumbel-max over them, key
    log M - log E, picks one with probability M / (M_L + Σ M_τ); inside it the token comes by
    inverse CDF (u · M against the running sum, in slot or index order). Greedy: key -τ and
    u = 0, the first max of the first tile holding one. Randoms: Philox keyed seed + row + 2^29,
    counter j·NT + τ: words 0 (E) and 1 (u) for tile τ, words 2 and 3 of tile 0's for the list."""
    BIG: tl.constexpr = 2147483647
    offs = tl.arange(0, BLOCK)
    slot = tl.arange(0, CAP)
    cum_c = tl.cumsum(w_c, axis=0)
    m_l = tl.max(cum_c, axis=0)
    last_l = tl.max(tl.where(w_c > 0.0, slot, -1), axis=0)
    key_seed = seed + row + 0x20000000
    for j0 in range(0, n_samples, NS):
        js = j0 + tl.arange(0, NS)  # [NS]
        q0, q1, q2, q3 = tl.randint4x(key_seed, js * NT)
        best = tl.where(m_l > 0.0, tl.log(tl.maximum(m_l, 1e-37)) - tl.log(_exp1(q2)), float("-inf"))
        goal = _unif(q3) * m_l
        pick = tl.min(tl.where((w_c[None, :] > 0.0) & (cum_c[None, :] > goal[:, None]), slot[None, :], BIG), axis=1)
        pick = tl.where(pick < BIG, pick, last_l)  # u · M rounded up to M: the last kept slot
        tok = tl.sum(tl.where(slot[None, :] == pick[:, None], ci[None, :], 0), axis=1)
        if tiled:
            best_t = tl.full([NS], float("-inf"), tl.float32)
            tile = tl.zeros([NS], dtype=tl.int32)
            for t0 in range(0, NT, TB):
                tau = t0 + tl.arange(0, TB)  # [TB]
                mt = tl.load(TILE_ROW + tau, mask=tau < NT, other=0.0, cache_modifier=".cg")  # other programs wrote them
                r0, r1, r2, r3 = tl.randint4x(key_seed, js[:, None] * NT + tau[None, :])  # [NS, TB]
                key = tl.log(tl.maximum(mt, 1e-37))[None, :] - tl.log(_exp1(r0))
                key = tl.where(greedy, -tau.to(tl.float32)[None, :], key)
                key = tl.where(mt[None, :] > 0.0, key, float("-inf"))
                bk = tl.max(key, axis=1)
                bt = tl.min(tl.where(key == bk[:, None], tau[None, :], BIG), axis=1)
                upd = bk > best_t
                best_t = tl.where(upd, bk, best_t)
                tile = tl.where(upd, bt, tile)
            idx = tile[:, None] * BLOCK + offs[None, :]  # [NS, BLOCK]
            s = _load_s(base, idx, V, inv_t)
            kept = _kept(s, a_lo, m, min_p, mp_on, greedy)
            cum = tl.cumsum(tl.where(kept, tl.exp(s - m), 0.0), axis=1)
            r0, r1, r2, r3 = tl.randint4x(key_seed, js * NT + tile)
            goal_t = tl.where(greedy, 0.0, _unif(r1)) * tl.max(cum, axis=1)
            first = tl.min(tl.where(kept & (cum > goal_t[:, None]), idx, BIG), axis=1)
            last = tl.max(tl.where(kept, idx, -1), axis=1)
            tok = tl.where(best_t > best, tl.where(first < BIG, first, last), tok)
        tok = tl.minimum(tl.maximum(tok, 0), V - 1)  # an all -inf row: token 0
        tl.store(TOK + row.to(tl.int64) * n_samples + js, tok.to(tl.int64), mask=js < n_samples)


@triton.jit
def _split_finish_row(
    base, TOK, ROWC_ROW, CAND_ROW, TILE_ROW, row, V, NT, seed, n_samples,
    m, z, m_up, lo_mp, inv_t, k, top_p, min_p, k_on, p_on, mp_on, greedy,
    lo, hi, target, cnt_lo, cnt_hi, mass_hi, phase, mode,
    CAP: tl.constexpr, BLOCK: tl.constexpr, NPF: tl.constexpr, NS: tl.constexpr, TB: tl.constexpr,
    BLOCK_V: tl.constexpr, NPG: tl.constexpr, NSG: tl.constexpr, MAX_ITERS: tl.constexpr, WRITE_MASK: tl.constexpr,
):
    """The program that arrives last at a row: the final threshold t (FULL, INTERVAL: from the
    candidate list in registers; DONE: lo), the row's samples (_split_draw), t for the mask.
    FALLBACK: the one-program general path, from lo."""
    t = lo
    if mode == MODE_FALLBACK:
        t = _general_row(base, TOK, row, V, inv_t, m, z, lo, m_up, k, top_p, min_p, k_on, p_on, mp_on, greedy,
                         lo_mp, seed, n_samples, BLOCK_V, NPG, NSG, MAX_ITERS, WRITE_MASK)
    else:
        nc = tl.where(mode == MODE_FULL, cnt_lo, tl.where(mode == MODE_INTERVAL, cnt_lo - cnt_hi, 0.0)).to(tl.int32)
        slot = tl.arange(0, CAP)
        cs = tl.load(CAND_ROW + slot, mask=slot < nc, other=float("-inf"), cache_modifier=".cg")  # [CAP]
        ci = tl.load(CAND_ROW + CAP + slot, mask=slot < nc, other=0.0, cache_modifier=".cg").to(tl.int32)
        e_c = tl.where(cs > float("-inf"), tl.exp(cs - m), 0.0)
        if mode == MODE_FULL:
            t = _cand_threshold(cs, e_c, lo, hi, m_up, k, phase == PHASE_K, p_on, top_p, target, lo_mp, NPF, MAX_ITERS)
        if mode == MODE_INTERVAL:  # the tokens above hi are counted and weighed: the search needs only what is left
            if phase == PHASE_K:
                t, dom = _search_regs(cs, e_c, lo, hi, k - cnt_hi.to(tl.int32), 0.0, False, NPF, MAX_ITERS)
            else:
                t, dom = _search_regs(cs, e_c, lo, hi, k, target - mass_hi, True, NPF, MAX_ITERS)
        w_c = tl.where(_kept(cs, t, m, min_p, mp_on, greedy) & (slot < nc), e_c, 0.0)
        _split_draw(base, TOK, TILE_ROW, row, V, NT, inv_t, tl.where(mode == MODE_DONE, lo, hi), m, min_p, mp_on,
                    greedy, mode != MODE_FULL, ci, w_c, seed, n_samples, CAP, BLOCK, NS, TB)
    tl.store(ROWC_ROW + ROWC_T, t)


@triton.jit(do_not_specialize=["B", "TILES", "C", "NT", "seed", "n_samples", "R"])
def _split_gather_kernel(
    L, TOK, WS, B, V, stride_l, TILES, C, NT, seed, n_samples, R,
    C_PAD: tl.constexpr, NP: tl.constexpr, CAP: tl.constexpr, BLOCK: tl.constexpr,
    NPF: tl.constexpr, NS: tl.constexpr, TB: tl.constexpr,
    BLOCK_V: tl.constexpr, NPG: tl.constexpr, NSG: tl.constexpr, MAX_ITERS: tl.constexpr, WRITE_MASK: tl.constexpr,
):
    """After R rounds: one more bisection step, how the row settles (mode), this chunk's share of
    the candidate list and its tiles' kept masses; the last program of a row to arrive finishes
    it (_split_finish_row). Every program of a row decides the same mode."""
    c = tl.program_id(0)
    row = tl.program_id(1)
    base = L + row.to(tl.int64) * stride_l
    STATS, ROWC, SST, PIV, PART, CAND, TILE = _ws_layout(WS, B, C_PAD, NP, CAP)
    par_out = R % 2
    par_in = 1 - par_out
    cc = tl.arange(0, C_PAD)
    offs = tl.arange(0, BLOCK)
    start = c * TILES * BLOCK
    end = tl.minimum(start + TILES * BLOCK, V)
    rp = ROWC + row * NF
    m, z, m_up, lo_mp, inv_t, k, top_p, min_p, k_on, p_on, mp_on, greedy = _rowc_load(rp)
    lo, hi, target, cnt_lo, cnt_hi, mass_hi, phase, jlo, jhi, mode = _sst_load(SST + (par_in * B + row) * NF)
    if phase != PHASE_DONE:
        lo, hi, cnt_lo, cnt_hi, mass_hi, phase, jlo, jhi = _split_advance(
            PART + (par_in * B + row) * (C_PAD * 2 * NP), PIV + (par_in * B + row) * NP, C,
            lo, hi, target, k, p_on, phase, C_PAD, NP)
    # FULL when every token >= lo fits (the search then finishes in registers, as the fast path);
    # INTERVAL when the tokens in [lo, hi) fit (not for top-k followed by top-p); else FALLBACK
    fits_interval = ((phase == PHASE_P) | (~p_on)) & (cnt_lo - cnt_hi <= CAP)
    mode = tl.where(phase == PHASE_DONE, MODE_DONE,
                    tl.where(cnt_lo <= CAP, MODE_FULL, tl.where(fits_interval, MODE_INTERVAL, MODE_FALLBACK)))
    _sst_store(SST + (par_out * B + row) * NF, lo, hi, target, cnt_lo, cnt_hi, mass_hi, phase, jlo, jhi, mode, c == 0)
    listed = (mode == MODE_FULL) | (mode == MODE_INTERVAL)
    tiled = (mode == MODE_DONE) | (mode == MODE_INTERVAL)
    if listed | tiled:
        hi_g = tl.where(mode == MODE_FULL, float("inf"), hi)  # listed: s in [lo, hi_g)
        a_lo = tl.where(mode == MODE_DONE, lo, hi)  # tiled: the kept tokens with s >= a_lo
        off = c * 0
        if listed:  # this chunk's first slot: the candidates of the chunks before it (last round's counts)
            pp = PART + (par_in * B + row) * (C_PAD * 2 * NP) + cc * (2 * NP)
            n_lo = tl.load(pp + jlo, mask=cc < c, other=0.0)
            n_hi = tl.load(pp + jhi, mask=cc < c, other=0.0)
            off = tl.sum(tl.where(mode == MODE_FULL, n_lo, n_lo - n_hi), axis=0).to(tl.int32)
        cand = CAND + row * (2 * CAP)
        for v0 in range(start, end, BLOCK):
            idx = v0 + offs
            s = _load_s(base, idx, end, inv_t)
            if listed:
                sel = (s >= lo) & (s < hi_g)
                si = sel.to(tl.int32)
                pos = off + tl.cumsum(si, axis=0) - si
                tl.store(cand + pos, s, mask=sel & (pos < CAP))
                tl.store(cand + CAP + pos, idx.to(tl.float32), mask=sel & (pos < CAP))
                off += tl.sum(si, axis=0)
            if tiled:
                w = tl.where(_kept(s, a_lo, m, min_p, mp_on, greedy), tl.exp(s - m), 0.0)
                tl.store(TILE + row * NT + v0 // BLOCK, tl.sum(w, axis=0))
    # every thread's stores happen-before the release of the atomic (the barrier orders them at
    # CTA scope, acq_rel at GPU scope carries them to the program that acquires it last)
    tl.debug_barrier()
    arrived = tl.atomic_add(rp + ROWC_ARRIVED, 1.0, sem="acq_rel", scope="gpu")
    if arrived == C - 1:
        _split_finish_row(base, TOK, rp, CAND + row * (2 * CAP), TILE + row * NT, row, V, NT, seed, n_samples,
                          m, z, m_up, lo_mp, inv_t, k, top_p, min_p, k_on, p_on, mp_on, greedy,
                          lo, hi, target, cnt_lo, cnt_hi, mass_hi, phase, mode,
                          CAP, BLOCK, NPF, NS, TB, BLOCK_V, NPG, NSG, MAX_ITERS, WRITE_MASK)


@triton.jit(do_not_specialize=["B", "TILES"])
def _split_mask_kernel(L, MASK, WS, B, V, stride_l, TILES,
                       C_PAD: tl.constexpr, NP: tl.constexpr, CAP: tl.constexpr, BLOCK: tl.constexpr):
    """kept_mask's rows: this chunk's kept set, from the threshold the finishing program wrote."""
    c = tl.program_id(0)
    row = tl.program_id(1)
    STATS, ROWC, SST, PIV, PART, CAND, TILE = _ws_layout(WS, B, C_PAD, NP, CAP)
    m, z, m_up, lo_mp, inv_t, k, top_p, min_p, k_on, p_on, mp_on, greedy = _rowc_load(ROWC + row * NF)
    start = c * TILES * BLOCK
    _write_mask(MASK + row.to(tl.int64) * V, L + row.to(tl.int64) * stride_l, start, tl.minimum(start + TILES * BLOCK, V),
                inv_t, tl.load(ROWC + row * NF + ROWC_T), m, min_p, mp_on, greedy, BLOCK)


# ---------------------------------------------------------------------------------------------
# Configs. One program per row: a heuristic table. It streams BLOCK_V logits a step: at small B
# a row's passes are latency-bound, so a step should keep ~16 KB in flight (BLOCK_V = 4096
# float32, 8 warps). NP pivots per bisection pass trade passes (≈ log_NP(range / gap)) against
# [tile, NP] compares; in a first H200 sweep (an earlier version of this kernel) NP = 8 beat 16
# and 32, and 2048-wide tiles beat 1024. CAP candidate slots decide when the fast path applies.
# ---------------------------------------------------------------------------------------------
MAX_ITERS = 48  # a search never needs more: each pass shrinks the interval NP-fold or stops


def _config(V: int, n_samples: int, override: dict | None, interpreting: bool) -> dict:
    if not override or set(override) <= {"split"}:
        return _config_default(V, n_samples, interpreting)
    return _config_build(V, n_samples, override, interpreting)


@functools.lru_cache(maxsize=1024)
def _config_default(V: int, n_samples: int, interpreting: bool) -> dict:
    """Cached: at small B the launcher's Python is part of the latency (read-only to callers)."""
    return _config_build(V, n_samples, None, interpreting)


def _config_build(V: int, n_samples: int, override: dict | None, interpreting: bool) -> dict:
    if interpreting:
        cfg = dict(BLOCK_V=min(512, max(16, triton.next_power_of_2(V))), NP=8, CAP=256, num_warps=4, ns_elems=16384)
    else:
        cfg = dict(BLOCK_V=min(4096, max(64, triton.next_power_of_2(V))), NP=8, CAP=1024, num_warps=8, ns_elems=4096)
    cfg["CAP"] = min(cfg["CAP"], triton.next_power_of_2(V))  # a short row needs no more slots
    cfg.update({k: v for k, v in (override or {}).items() if k != "split"})
    width = max(cfg["BLOCK_V"], cfg["CAP"])
    cfg["NS"] = max(1, min(triton.next_power_of_2(max(n_samples, 1)), cfg.pop("ns_elems") // width))
    cfg["sig"] = tuple(cfg[k] for k in ("BLOCK_V", "NP", "CAP", "NS", "num_warps"))  # what the kernel is compiled for
    return cfg


# Split rows (small B): C = ceil(V / chunk) programs per row; the first row of SPLIT_TABLE with
# B <= max_b (and V <= max_v, when given) applies; past the last, one program per row (B rows
# already fill the SMs).
#   chunk   tokens per program (whole BLOCK tiles), about one program per SM's slot or fewer:
#           beyond one wave the extra one costs a whole program's time (B = 1, V = 151936:
#           chunk 1024, C = 149 > 132 SMs, was 12 µs slower than 2048)
#   NP      pivots per round: ~4·NP ops a token per round ([BLOCK/4, NP] compare, count, weigh)
#   ROUNDS  rounds before the gather: [lo, hi) shrinks ~(NP-1)^ROUNDS-fold; what is left must fit
#           CAP slots, or the row falls back to the slow one-program path. Flat top-p 0.9 rows
#           (N(0, σ²) logits, interpreter runs): V = 152k, 2 rounds of 32 pivots leave 239 tokens
#           (σ = 2), 390 (σ = 1); 1 round of 64 leaves 3.6k-5.8k (falls back); V = 32k: 652
#   CAP     candidate slots; the finishing program searches them in registers ([CAP, NPF]
#           compares), so its tail grows with CAP: 1024 beat 2048 at every B and V timed
#   BLOCK   tokens a loop step (rounds: 4 quarter tiles in flight), and a tile of the draw;
#           num_warps: all kernels. B = 32, V > 32k: 512 and 4 warps, 3 round CTAs an SM
#           instead of 1 (20% faster at V >= 128k, 5% at 49k, 23% slower at 32k)
#   maxnreg the gather kernel's register cap (None: ptxas decides): its pass gets more CTAs an
#           SM, the finishing program's tail spills; 128 is 4-7% faster at V >= 128k, B = 8, 32
# Set from lab.benchmarks.sampling.compare(variants=...) on an H200 (graph replay), and tune().
SPLIT_TABLE = (
    dict(max_b=1, max_v=131072, chunk=1024, NP=32, ROUNDS=2, CAP=1024, BLOCK=1024, num_warps=8),
    dict(max_b=1, chunk=2048, NP=32, ROUNDS=2, CAP=1024, BLOCK=1024, num_warps=8),
    dict(max_b=8, max_v=32768, chunk=2048, NP=32, ROUNDS=2, CAP=1024, BLOCK=1024, num_warps=8),
    dict(max_b=8, max_v=65536, chunk=4096, NP=32, ROUNDS=2, CAP=1024, BLOCK=1024, num_warps=8),
    dict(max_b=8, chunk=4096, NP=32, ROUNDS=2, CAP=1024, BLOCK=1024, num_warps=8, maxnreg=128),
    dict(max_b=32, max_v=32768, chunk=8192, NP=32, ROUNDS=2, CAP=1024, BLOCK=1024, num_warps=8),
    dict(max_b=32, max_v=65536, chunk=8192, NP=32, ROUNDS=2, CAP=1024, BLOCK=512, num_warps=4),
    dict(max_b=32, chunk=8192, NP=32, ROUNDS=2, CAP=1024, BLOCK=512, num_warps=4, maxnreg=128),
    dict(max_b=64, chunk=16384, NP=32, ROUNDS=2, CAP=1024, BLOCK=1024, num_warps=8),  # not timed since CAP 2048
)
SPLIT_KEYS = ("chunk", "NP", "ROUNDS", "CAP", "BLOCK", "num_warps", "NPF", "maxnreg")
SPLIT_FAST_TOP_K = 256  # top_k a Python int in 1..this: the one-program fast path (~k candidates) is as quick
MAX_CHUNKS = 256  # at most this many chunks a row; longer chunks beyond it
CONFIG_KEYS = ("BLOCK_V", "NP", "CAP", "num_warps", "ns_elems", "split")


def _split_config(fn: str, B: int, V: int, top_k, n_samples: int, override: dict | None,
                  interpreting: bool | None = None) -> dict | None:
    """The split path's settings, or None for one program per row. override["split"]: False
    (never), True (always, defaults), a dict of SPLIT_KEYS (always, these settings); absent:
    SPLIT_TABLE decides (cached: edit it before the first call), and only when a row spans more
    than one chunk. top_k: the Python int every row shares, or None (a tensor)."""
    interpreting = _interpreting() if interpreting is None else interpreting
    want = (override or {}).get("split")
    if want is None:
        if isinstance(top_k, int) and 0 < top_k <= SPLIT_FAST_TOP_K:
            return None
        return _split_default(B, V, n_samples, interpreting)
    if want is False:
        return None
    cfg = dict(_split_row(B, V) or SPLIT_TABLE[-1])
    if interpreting:  # small tiles: the interpreter pays per operation, not per element
        cfg.update(NP=8, CAP=256, BLOCK=64, num_warps=4)
    if isinstance(want, dict):
        bad = sorted(set(want) - set(SPLIT_KEYS))
        if bad:
            _fail(fn, "config['split']", f"has unknown keys {bad}; known: {list(SPLIT_KEYS)}")
        cfg.update(want)
    elif want is not True:
        _fail(fn, "config['split']", f"must be True, False or a dict of {list(SPLIT_KEYS)}, got {want!r}")
    return _split_finish_config(fn, cfg, B, V, n_samples, True, interpreting)


def _split_row(B: int, V: int) -> dict | None:
    return next((r for r in SPLIT_TABLE if B <= r["max_b"] and V <= r.get("max_v", V)), None)


@functools.lru_cache(maxsize=1024)
def _split_default(B: int, V: int, n_samples: int, interpreting: bool) -> dict | None:
    row = _split_row(B, V)
    return None if row is None else _split_finish_config("sample", dict(row), B, V, n_samples, False, interpreting)


def _split_finish_config(fn: str, cfg: dict, B: int, V: int, n_samples: int, forced: bool,
                         interpreting: bool) -> dict | None:
    """Checks the settings and derives the launch's: CHUNK (whole BLOCK tiles), TILES, C, C_PAD,
    NT, NS, TB, the workspace size and `sig` (what the kernels are compiled for)."""
    cfg.pop("max_b", None)
    cfg.pop("max_v", None)
    cfg.setdefault("NPF", 8)
    cfg.setdefault("maxnreg", None)
    if cfg["maxnreg"] is not None and not (isinstance(cfg["maxnreg"], int) and 32 <= cfg["maxnreg"] <= 255):
        _fail(fn, "config['split']['maxnreg']", f"must be None or an int in 32..255, got {cfg['maxnreg']!r}")
    for key in ("NP", "CAP", "BLOCK", "NPF"):
        if not (isinstance(cfg[key], int) and cfg[key] >= 2 and cfg[key] & (cfg[key] - 1) == 0):
            _fail(fn, f"config['split']['{key}']", f"must be a power of two >= 2, got {cfg[key]!r}")
    if not (isinstance(cfg["ROUNDS"], int) and cfg["ROUNDS"] >= 1):
        _fail(fn, "config['split']['ROUNDS']", f"must be an int >= 1, got {cfg['ROUNDS']!r}")
    if not (isinstance(cfg["chunk"], int) and cfg["chunk"] >= 1):
        _fail(fn, "config['split']['chunk']", f"must be an int >= 1 (tokens per program), got {cfg['chunk']!r}")
    BLOCK = cfg["BLOCK"]
    chunk = triton.cdiv(max(cfg["chunk"], triton.cdiv(V, MAX_CHUNKS)), BLOCK) * BLOCK
    C = triton.cdiv(V, chunk)
    if not forced and C < 2:
        return None
    # the chunk slots every cross-chunk reduction spans (masked slots cost issue slots); two
    # sizes, so at most two compiles per setting
    C_PAD = 64 if C <= 64 else MAX_CHUNKS
    NT = triton.cdiv(V, BLOCK)
    ws = _ws_floats(B, C_PAD, cfg["NP"], cfg["CAP"], NT)
    if V >= 2**24 or ws >= 2**31:
        if not forced:
            return None
        _fail(fn, "config['split']", f"cannot split V = {V} (needs V < 2^24 and a workspace < 2^31 floats)")
    TB = 16 if interpreting else 256  # tiles a step of the draw's Gumbel-max over tiles (one step up to V = 256·BLOCK)
    elems = 2**16 if interpreting else 4096  # samples a step: [NS, max(BLOCK, CAP, TB)]
    NS = max(1, min(triton.next_power_of_2(max(n_samples, 1)), elems // max(BLOCK, cfg["CAP"], TB)))
    cfg.update(CHUNK=chunk, TILES=chunk // BLOCK, C=C, C_PAD=C_PAD, NT=NT, NS=NS, TB=TB, ws=ws)
    cfg["sig"] = tuple(cfg[k] for k in ("ROUNDS", "C_PAD", "NP", "CAP", "BLOCK", "num_warps", "NPF", "NS", "TB", "maxnreg"))
    return cfg


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


def _launch(fn: str, logits, temperature, top_k, top_p, min_p, seed, n_samples: int, write_mask: bool,
            config: dict | None = None, debug: dict | None = None):
    if not isinstance(logits, torch.Tensor):
        _fail(fn, "logits", f"must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in SUPPORTED_DTYPES:
        _fail(fn, "logits", f"has dtype {logits.dtype}; supported: float16, bfloat16, float32")
    if logits.dim() != 2 or logits.shape[1] == 0:
        _fail(fn, "logits", f"must be [B, V] with V >= 1, got shape {tuple(logits.shape)}")
    if logits.stride(1) != 1:
        _fail(fn, "logits", f"must be contiguous along V (stride(1) == 1), got strides {tuple(logits.stride())}; pass logits.contiguous()")
    interpreting = _interpreting()
    if not (logits.is_cuda or interpreting):
        _fail(fn, "logits", f"is on {logits.device}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if config is not None:
        if not isinstance(config, dict):
            _fail(fn, "config", f"must be a dict or None, got {type(config).__name__}")
        bad = sorted(set(config) - set(CONFIG_KEYS))
        if bad:
            _fail(fn, "config", f"has unknown keys {bad}; known: {list(CONFIG_KEYS)}")
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
    k_val = max(-1, min(k_val, 2**31 - 1))  # an int32 argument, same meaning (<= 0 or >= V: off)
    cfg = _config(V, n_samples, config, interpreting)
    scfg = _split_config(fn, B, V, k_val if k_ptr is None else None, n_samples, config, interpreting)
    rows = (t_ptr, k_ptr, p_ptr, mp_ptr)
    ptrs = tuple(logits if p is None else p for p in rows)  # an unused pointer: any tensor
    vals = (float(t_val), k_val, float(p_val), float(mp_val))
    flags = tuple(p is not None for p in rows)  # T_ROW, K_ROW, P_ROW, MINP_ROW
    seed = seed & 0x3FFFFFFF
    key = None if interpreting else _spec_key(logits, rows, write_mask)
    if scfg is not None:
        ws = _launch_split(logits, tokens, mask, ptrs, vals, flags, seed, n_samples, write_mask, scfg, cfg, key)
        if debug is not None:  # split_modes reads the rows' records
            debug.update(ws=ws, split=scfg)
        return tokens, mask
    cand_s = torch.empty((B, cfg["CAP"]), dtype=torch.float32, device=dev)  # candidate scratch
    cand_i = torch.empty((B, cfg["CAP"]), dtype=torch.int32, device=dev)
    rest = (*vals, V, logits.stride(0), seed, n_samples, *flags, cfg["BLOCK_V"], cfg["CAP"], cfg["NP"], cfg["NS"],
            MAX_ITERS, write_mask)
    _run_launches(None if key is None else key + cfg["sig"], (logits, tokens, mask, cand_s, cand_i, *ptrs),
                  lambda p: [(_sample_kernel, (B, 1), (*p, *rest), dict(num_warps=cfg["num_warps"]))])
    return tokens, mask


def _launch_split(logits, tokens, mask, ptrs, vals, flags, seed, n_samples, write_mask, s, g, key) -> torch.Tensor:
    """ROUNDS + 2 launches on a (C, B) grid (+1 for the mask): module docstring, "split rows".
    s: the split settings, g: the one-program settings (the fallback's)."""
    B, V = logits.shape
    ws = torch.empty(s["ws"], dtype=torch.float32, device=logits.device)
    grid = (s["C"], B)
    w = dict(num_warps=s["num_warps"])
    # [CAP, NPF] searches: no spills up to 2048; maxnreg: more CTAs an SM, the finishing tail spills
    w_gather = dict(num_warps=max(s["num_warps"], s["CAP"] // 256), maxnreg=s["maxnreg"])
    layout = (s["C_PAD"], s["NP"], s["CAP"], s["BLOCK"])
    pos = (V, logits.stride(0), s["TILES"])
    R = s["ROUNDS"]

    def launches(p):
        L, WS, TOK, MASK, *params = p
        out = [(_split_stats_kernel, grid, (L, WS, params[0], vals[0], *pos, flags[0], s["C_PAD"], s["BLOCK"]), w)]
        for r in range(R):  # round 0 also sets the search up
            out.append((_split_round_kernel, grid, (L, WS, *params, *vals, B, *pos, s["C"], r, *flags, r == 0,
                                                    *layout), w))
        out.append((_split_gather_kernel, grid, (L, TOK, WS, B, *pos, s["C"], s["NT"], seed, n_samples, R, *layout,
                                                 s["NPF"], s["NS"], s["TB"], g["BLOCK_V"], g["NP"], g["NS"], MAX_ITERS,
                                                 write_mask), w_gather))
        if write_mask:
            out.append((_split_mask_kernel, grid, (L, MASK, WS, B, *pos, *layout), w))
        return out

    _run_launches(None if key is None else key + s["sig"] + g["sig"], (logits, ws, tokens, mask, *ptrs), launches)
    return ws


# Host cost. Triton 3.6's JIT path costs ~19 µs a launch (binding ~25 arguments, the
# specialization key, the cache lookup; H200 host), the compiled kernel's launcher ~6 µs: a
# split call at B = 1 (4 launches) took 97-101 µs of host time, 46-48 µs now, of which ~22 µs
# are the launcher's own Python and two allocations; its GPU time is 37-42 µs. So the first
# call of a kind goes through Triton (which compiles and caches) and later calls of that kind
# replay the compiled kernels through their launchers. The kind is _spec_key plus the configs'
# `sig`, everything Triton specializes these kernels on: every int argument but V and stride_l
# is do_not_specialize (theirs: % 16 and == 1, in the key), floats never are, the per-row
# parameter pointers are do_not_specialize_on_alignment, the other pointers are fresh (16-byte
# aligned) allocations or the logits (alignment in the key).
DIRECT_LAUNCH = True  # False: every launch through Triton's JIT path (to compare host costs)
_PLANS: dict[tuple, list] = {}  # kind -> the compiled kernels of its launches, in order


def _spec_key(logits: torch.Tensor, rows: tuple, write_mask: bool) -> tuple | None:
    """The kind of call, or None when it must go through Triton (DIRECT_LAUNCH off, or launch
    hooks, e.g. a profiler's, which only Triton's path calls)."""
    if not DIRECT_LAUNCH or _launch_hooks():
        return None
    V, stride = logits.shape[1], logits.stride(0)
    return (driver.active.get_current_device(), logits.dtype, logits.data_ptr() % 16 == 0,
            V % 16 == 0, V == 1, stride % 16 == 0, stride == 1, stride >= 2**31,
            *(None if p is None else p.dtype for p in rows), write_mask)


def _launch_hooks() -> bool:
    rt = getattr(getattr(triton, "knobs", None), "runtime", None)
    if rt is None:  # a Triton before knobs: its own launch path only
        return True
    return any(h is not None and getattr(h, "calls", True) for h in (rt.launch_enter_hook, rt.launch_exit_hook))


def _run_launches(key: tuple | None, tensors: tuple, launches) -> None:
    """Runs launches(pointers) = [(kernel, grid (2 ints), args, compile options)] in order, the
    pointers being `tensors` or, once the kernels are compiled, their addresses (Triton's
    launchers then skip a driver query per pointer). Every argument is positional, constexprs
    included, in signature order: the compiled launchers take the same tuple."""
    global DIRECT_LAUNCH
    plan = None if key is None else _PLANS.get(key)
    if plan is not None:
        stream = driver.active.get_current_stream(key[0])
        try:
            for ck, (_, grid, args, _) in zip(plan, launches(tuple(t.data_ptr() for t in tensors))):
                ck.run(grid[0], grid[1], 1, stream, ck.function, ck.packed_metadata, None, None, None, *args)
            return
        except TypeError as e:  # a launcher of another form: Triton's path from now on (launches are idempotent)
            warnings.warn(f"kernels.sampling: direct launches off ({e}); every launch goes through Triton's JIT")
            DIRECT_LAUNCH = False
    compiled = [fn[grid](*args, **opts) for fn, grid, args, opts in launches(tensors)]
    if key is not None and DIRECT_LAUNCH:
        _PLANS[key] = compiled


def split_modes(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, config: dict | None = None,
                with_mask: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """How the split path settled each row, and the kept set it found (tests, tuning): (int64
    [B] of indices into SPLIT_MODES (done: t found by the rounds; full, interval: the candidate
    list; fallback: the one-program general path), or -1 everywhere when these rows are not
    split; kept_mask's bool [B, V], or None without with_mask)."""
    debug = {}
    _, mask = _launch("split_modes", logits, temperature, top_k, top_p, min_p, 0, 0, with_mask, config, debug)
    mask = mask.bool() if with_mask else None
    B = logits.shape[0]
    if not debug:
        return torch.full((B,), -1, dtype=torch.int64), mask
    s = debug["split"]
    sst = B * (s["C_PAD"] * 4 + NF_FIELDS)  # _ws_layout's SST region, the gather's parity
    rec = debug["ws"][sst + (s["ROUNDS"] % 2) * B * NF_FIELDS:][: B * NF_FIELDS].view(B, NF_FIELDS)
    return rec[:, 9].long().cpu(), mask


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
    config: dict | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` ``(B, V)`` -> ``(B,)`` int64, drawn from
    ``reference_probs(...)``. Same ``seed`` and inputs, same tokens; without a seed one is drawn
    from ``generator`` (or torch's default generator)."""
    tokens, _ = _launch("sample", logits, temperature, top_k, top_p, min_p, _seed(seed, generator), 1, False, config)
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
    config: dict | None = None,
) -> torch.Tensor:
    """``num_samples`` independent tokens per row -> ``(B, num_samples)``: the thresholds are
    found once per row, then each sample is one draw pass (n-best / parallel sampling)."""
    if not isinstance(num_samples, int) or num_samples < 1:
        _fail("sample_many", "num_samples", f"must be an int >= 1, got {num_samples!r}")
    tokens, _ = _launch("sample_many", logits, temperature, top_k, top_p, min_p, _seed(seed, generator), num_samples, False, config)
    return tokens


def kept_mask(
    logits: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    min_p: float | torch.Tensor = 0.0,
    config: dict | None = None,
) -> torch.Tensor:
    """The kernel's kept set as bool ``(B, V)`` (the support of the distribution it samples)."""
    _, mask = _launch("kept_mask", logits, temperature, top_k, top_p, min_p, 0, 0, True, config)
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


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square goodness of fit of token counts [V] to probabilities [V]: bins with
    an expected count < 5 are pooled into one; p-value = Q(dof/2, stat/2) (the regularized upper
    incomplete gamma, i.e. the chi-square survival function; no scipy needed). A token drawn
    where the probability is 0 gives p = 0."""
    counts, probs = counts.double().cpu(), probs.double().cpu()
    if (counts[probs == 0] > 0).any():
        return 0.0
    expected = probs * counts.sum()
    big = expected >= 5
    small = ~big & (probs > 0)
    obs = torch.cat([counts[big], counts[small].sum()[None]])
    exp = torch.cat([expected[big], expected[small].sum()[None]])
    obs, exp = obs[exp > 0], exp[exp > 0]
    dof = obs.numel() - 1
    if dof < 1:
        return 1.0
    stat = ((obs - exp) ** 2 / exp).sum()
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


# ---------------------------------------------------------------------------------------------
# Cost formulas
# ---------------------------------------------------------------------------------------------
def passes(fast: bool = True, top_k_search: bool = False, rounds: float = 1.2, split_rounds: int | None = None) -> float:
    """Full passes over a row, for the roofline (an estimate, not a bound): the fast path makes 3
    (statistics, count, gather); the general path 2, plus ~3 for a streaming top-k search, plus
    2 per rejection round (top-p: ~1-2 rounds at top_p >= 0.5). Split rows (split_rounds =
    ROUNDS): statistics, each round and the gather (which also weighs the draw's tiles) read it
    once each, ROUNDS + 2 (a row settled by the rounds skips the rest of them; the draw reads one
    tile a sample; one that falls back adds the general path)."""
    if split_rounds is not None:
        return split_rounds + 2.0
    if fast:
        return 3.0
    return 2.0 + 3.0 * top_k_search + 2.0 * rounds


def flops(B: int, V: int) -> float:
    """Per logit: the scale, the exp of the softmax statistics and the compare/add of the
    sampling pass (~5); the searches' compares are counted in bytes, not FLOPs."""
    return 5 * B * V


def bytes_moved(B: int, V: int, dtype_bytes: int = 4, n_passes: int = 1) -> float:
    """Logits read once per pass (a row stays in L2 only at small B), one token written."""
    return B * V * dtype_bytes * n_passes + B * 8
