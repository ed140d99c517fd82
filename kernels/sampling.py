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
sort. One program owns one row; every pass streams the row in [BLOCK_V/4, 4] tiles with per-lane
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
Random numbers: Philox4x32 (tl.randint4x) keyed by seed + row (+ round); token v of sample j uses
counter j·ceil(V/4) + v // 4, word v % 4. E = -log(1 - u) with a series for small u, so the
winners (small E) keep full float32 precision.
Exactness: the kept set equals the reference's (up to float32 rounding of masses right at the
top-p boundary), and argmax(log p - log E) over a set is distributed as p renormalized on it.
kept_mask(...) returns the kernel's kept set (on the general path the top-p cut then comes from
the streaming bisection, which sampling itself does not need).
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
def _sample_kernel(
    L, TOK, MASK, CAND_S, CAND_I, TEMP, TOPK, TOPP, MINP,
    temp_val, topk_val, topp_val, minp_val,
    V, stride_l, seed, n_samples,
    T_ROW: tl.constexpr, K_ROW: tl.constexpr, P_ROW: tl.constexpr, MINP_ROW: tl.constexpr,
    BLOCK_V: tl.constexpr, CAP: tl.constexpr, NP: tl.constexpr, NS: tl.constexpr,
    MAX_ITERS: tl.constexpr, WRITE_MASK: tl.constexpr,
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
    V4 = (V + 3) // 4  # Philox counters per sample (4 random words each)
    zero = row * 0
    # Tiles are [Q, 4]: token v0 + 4q + c, so one Philox call (4 words) serves 4 tokens. Every
    # pass keeps per-lane accumulators and reduces once after its loop: no barrier inside a
    # loop, the warps stream independently and keep more loads in flight.
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

    k_on = (k > 0) & (k < nf) & (~greedy)
    p_on = (top_p < 1.0) & (~greedy)
    mp_on = (min_p > 0.0) & (~greedy)
    m_up = m + (tl.abs(m) + 1.0) * 1e-6  # strictly above the max: nothing lies at or above it
    # min-p keeps exp(s - m) >= min_p, i.e. s >= m + log(min_p); a little lower to cover rounding
    log_mp = tl.log(tl.maximum(min_p, 1e-30))
    lo_mp = tl.where(mp_on, m + log_mp - 1e-5 * (1.0 + tl.abs(m) + tl.abs(log_mp)), float("-inf"))

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
    slot = tl.arange(0, CAP)
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
        cs = tl.load(CAND_S + row * CAP + slot, mask=slot < nc, other=float("-inf"))  # [CAP]
        ci = tl.load(CAND_I + row * CAP + slot, mask=slot < nc, other=0)
        e_c = tl.where(cs > float("-inf"), tl.exp(cs - m), 0.0)
        t_k = zero.to(tl.float32) + float("-inf")
        if k_on:
            t_k, dom_k = _search_regs(cs, e_c, lo, m_up, k, 0.0, False, NP, MAX_ITERS)
        if p_on:
            if k_on:  # top-p is relative to the mass of the top-k set
                mass_k = tl.sum(tl.where(cs >= t_k, e_c, 0.0), axis=0)
                lo_p = tl.maximum(t_k, lo_mp)
            else:
                mass_k = z
                lo_p = lo
            t, dom_p = _search_regs(cs, e_c, lo_p, m_up, k, top_p * mass_k, True, NP, MAX_ITERS)
        else:
            t = tl.maximum(t_k, lo)
        surv_c = (cs >= t) & (slot < nc)
        if mp_on:
            surv_c = surv_c & (e_c >= min_p)
        surv_c = tl.where(greedy, (cs == m) & (slot < nc), surv_c)
        for j0 in range(0, n_samples, NS):
            js = j0 + tl.arange(0, NS)  # [NS]
            r = _rand4(seed + row, js[:, None] * V4 + (ci // 4)[None, :], (ci % 4)[None, :])  # [NS, CAP]
            key = tl.where(greedy, 0.0, cs[None, :] - tl.log(_exp1(r)))
            key = tl.where(surv_c[None, :], key, float("-inf"))
            best = tl.max(key, axis=1)
            pick = tl.min(tl.where(key == best[:, None], ci[None, :], 2147483647), axis=1)  # ties: first index
            tl.store(TOK + row.to(tl.int64) * n_samples + js, pick.to(tl.int64), mask=js < n_samples)
    else:
        # ---- general path (many candidates: a flat distribution, a large k) ----
        # top-k: bisection streaming the row. top-p: rejection sampling (exact): propose
        # j ~ p on {s >= t_base, s > pivot, min-p}; keep it if the mass above it (within the
        # top-k set) is < top_p · mass(top-k set), i.e. j is in the top-p set; otherwise no
        # token with s <= s_j can be, so pivot = s_j and propose again. A proposal accepted is
        # distributed as p on the kept set; a round costs two passes and accepts with
        # probability >= top_p at the first, so ~1-2 rounds.
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

    if WRITE_MASK:  # the kept set, for tests
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + flat
            s = _load_s(base, idx, V, inv_t)
            surv = (s >= t) & (s > float("-inf"))
            if mp_on:
                surv = surv & (tl.exp(s - m) >= min_p)
            surv = tl.where(greedy, s == m, surv)
            tl.store(MASK + row.to(tl.int64) * V + idx, surv.to(tl.int8), mask=idx < V)


# ---------------------------------------------------------------------------------------------
# Configs: a heuristic table. One program per row streams BLOCK_V logits a step: at small B a
# row's passes are latency-bound, so a step should keep ~16 KB in flight (BLOCK_V = 4096 float32,
# 8 warps). NP pivots per bisection pass trade passes (≈ log_NP(range / gap)) against
# [tile, NP] compares; in a first H200 sweep (an earlier version of this kernel) NP = 8 beat 16
# and 32, and 2048-wide tiles beat 1024. CAP candidate slots decide when the fast path applies.
# ---------------------------------------------------------------------------------------------
MAX_ITERS = 48  # a search never needs more: each pass shrinks the interval NP-fold or stops


def _config(V: int, n_samples: int, override: dict | None = None) -> dict:
    if _interpreting():
        cfg = dict(BLOCK_V=min(512, max(16, triton.next_power_of_2(V))), NP=8, CAP=256, num_warps=4, ns_elems=16384)
    else:
        cfg = dict(BLOCK_V=min(4096, max(64, triton.next_power_of_2(V))), NP=8, CAP=1024, num_warps=8, ns_elems=4096)
    cfg["CAP"] = min(cfg["CAP"], triton.next_power_of_2(V))  # a short row needs no more slots
    cfg.update(override or {})
    width = max(cfg["BLOCK_V"], cfg["CAP"])
    cfg["NS"] = max(1, min(triton.next_power_of_2(max(n_samples, 1)), cfg.pop("ns_elems") // width))
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


def _launch(fn: str, logits, temperature, top_k, top_p, min_p, seed, n_samples: int, write_mask: bool, config: dict | None = None):
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
    cfg = _config(V, n_samples, config)
    cand_s = torch.empty((B, cfg["CAP"]), dtype=torch.float32, device=dev)  # candidate scratch
    cand_i = torch.empty((B, cfg["CAP"]), dtype=torch.int32, device=dev)
    dummy = logits
    _sample_kernel[(B,)](
        logits, tokens, mask, cand_s, cand_i,
        t_ptr if t_ptr is not None else dummy, k_ptr if k_ptr is not None else dummy,
        p_ptr if p_ptr is not None else dummy, mp_ptr if mp_ptr is not None else dummy,
        float(t_val), int(k_val), float(p_val), float(mp_val),
        V, logits.stride(0), seed & 0x3FFFFFFF, n_samples,
        T_ROW=t_ptr is not None, K_ROW=k_ptr is not None, P_ROW=p_ptr is not None, MINP_ROW=mp_ptr is not None,
        BLOCK_V=cfg["BLOCK_V"], CAP=cfg["CAP"], NP=cfg["NP"], NS=cfg["NS"],
        MAX_ITERS=MAX_ITERS, WRITE_MASK=write_mask,
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
    found once per row, then each sample is one Gumbel-max pass (n-best / parallel sampling)."""
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
def passes(fast: bool = True, top_k_search: bool = False, rounds: float = 1.2) -> float:
    """Full passes over a row, for the roofline (an estimate, not a bound): the fast path makes 3
    (statistics, count, gather); the general path 2, plus ~3 for a streaming top-k search, plus
    2 per rejection round (top-p: ~1-2 rounds at top_p >= 0.5)."""
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
