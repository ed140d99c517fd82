"""kernels.sampling: the sort-free sampler against the sort-based reference distribution.

Two kinds of checks:
  * exact: the kernel's kept set (kept_mask) equals the support of reference_probs, for many
    random rows, parameters (also per row), dtypes and -inf logits;
  * statistical: 20k draws per setting, 10k on the general path (sample_many: the same code
    as sample) against reference_probs by a chi-square test at a fixed seed. The same counts
    must REJECT plausible wrong distributions (top-k off by one, top-p without renormalizing
    after top-k, no filtering), so a broken kernel fails.
Every code path is checked. One program per row: the fast path (the candidates above a cheap
lower bound fit in CAP slots: thresholds searched in registers) and the general one (forced here
with CAP = 1: top-k searched streaming the row, top-p by rejection sampling). Split rows (C
programs per row, forced on tiny rows with chunk = 64): each way a row can settle (split_modes
says which one did): by the rounds, a FULL or an INTERVAL candidate list, or the fallback to the
one-program general path. On CPU the kernels run under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import zlib

import torch

import pytest

from kernels.sampling import (
    SPLIT_MODES,
    _split_config,
    bytes_moved,
    chi_square_pvalue,
    flops,
    kept_mask,
    passes,
    reference_probs,
    sample,
    sample_many,
    sample_sorted,
    split_modes,
)
from kernel_env import DEVICE, GPU

N_DRAWS = 20_000
ALPHA = 1e-3  # the right distribution must pass at this level; the wrong ones fail far below it
PATHS = {"fast": {"split": False}, "general": {"split": False, "CAP": 1}}  # CAP = 1: only single-candidate rows stay fast


def seeded(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(parts).encode()))


def logits_for(B, V, *parts, scale=1.5, dtype=torch.float32):
    return (torch.randn(B, V, generator=seeded(*parts)) * scale).to(DEVICE, dtype)


def test_chi_square_helper_is_calibrated():
    """Sanity of the test itself: multinomial draws from p pass, draws from a nearby q fail."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(80, generator=g, dtype=torch.float64), 0)
    draws = torch.multinomial(p, N_DRAWS, replacement=True, generator=g)
    counts = torch.bincount(draws, minlength=80)
    assert chi_square_pvalue(counts, p) > ALPHA
    q = p.clone()
    q[p.argmax()] *= 1.3  # 5.4% -> 6.8% of the mass: ~7 sigma over 20k draws
    assert chi_square_pvalue(counts, q / q.sum()) < 1e-6


def test_reference_probs_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    lg = p.log()
    torch.testing.assert_close(reference_probs(lg), p)
    torch.testing.assert_close(reference_probs(lg, top_k=2), torch.tensor([[0.625, 0.375, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(reference_probs(lg, top_p=0.7), torch.tensor([[0.625, 0.375, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(reference_probs(lg, top_p=0.79), torch.tensor([[0.625, 0.375, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(reference_probs(lg, top_p=0.81), torch.tensor([[0.5, 0.3, 0.15, 0]], dtype=torch.float64) / 0.95)
    # top-p after top-k, renormalized: top-3 mass 0.95; top_p=0.8 of it = 0.76 -> the first two
    torch.testing.assert_close(reference_probs(lg, top_k=3, top_p=0.8), torch.tensor([[0.625, 0.375, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(reference_probs(lg, min_p=0.5), torch.tensor([[0.625, 0.375, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(reference_probs(lg, top_p=0.0), torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(reference_probs(lg, temperature=0.0), torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64))
    sharp = torch.softmax(lg / 0.5, -1)
    torch.testing.assert_close(reference_probs(lg, temperature=0.5), sharp)


# ---- exact: the kept set --------------------------------------------------------------------
SETS = [  # temperature, top_k, top_p, min_p
    (1.0, 1, 1.0, 0.0),
    (0.8, 17, 1.0, 0.0),
    (1.0, 0, 0.5, 0.0),
    (1.2, 0, 0.95, 0.0),
    (0.7, 40, 0.9, 0.0),
    (1.0, 0, 1.0, 0.1),
    (1.0, 60, 1.0, 0.02),  # min-p decides below the top-k cut on some rows
    (0.9, 0, 0.97, 0.3),  # min-p cut above the top-p cut on some rows
    (1.5, 200, 0.6, 0.01),
    (0.0, 5, 0.5, 0.0),  # greedy ignores the rest
]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("params", SETS, ids=lambda p: "T{}-k{}-p{}-minp{}".format(*p))
def test_kept_set_equals_reference_support(params, path):
    T, k, p, mp = params
    lg = logits_for(6, 333, "kept", params, scale=2.0)
    mask = kept_mask(lg, T, k, p, mp, config=PATHS[path])
    ref = reference_probs(lg, T, k, p, mp) > 0
    assert torch.equal(mask, ref), f"rows differ: {(mask != ref).sum(-1).tolist()}, kept {ref.sum(-1).tolist()}"


@pytest.mark.parametrize("path", list(PATHS))
def test_kept_set_per_row_parameters_and_neg_inf(path):
    B, V = 8, 1000
    lg = logits_for(B, V, "rows", scale=3.0)
    lg[0, :900] = float("-inf")  # a masked vocabulary: 100 finite logits
    lg[1, 5::7] = float("-inf")
    g = seeded("row-params")
    T = (torch.rand(B, generator=g) * 1.5 + 0.3).to(DEVICE)
    k = torch.tensor([0, 1, 5, 50, 999, 1000, 0, 300], dtype=torch.int32).to(DEVICE)
    p = torch.tensor([0.9, 1.0, 0.5, 0.99, 0.3, 0.8, 1.0, 0.7]).to(DEVICE)
    mp = torch.tensor([0.0, 0.0, 0.1, 0.0, 0.0, 0.05, 0.2, 0.0]).to(DEVICE)
    mask = kept_mask(lg, T, k, p, mp, config=PATHS[path])
    ref = reference_probs(lg, T, k, p, mp) > 0
    assert torch.equal(mask, ref), f"rows differ: {(mask != ref).sum(-1).tolist()}"
    assert not mask[0, :900].any()


def test_kept_set_half_logits():
    lg = logits_for(3, 129, "half", dtype=torch.float16)
    mask = kept_mask(lg, 0.9, 10, 0.8, 0.0)
    assert torch.equal(mask, reference_probs(lg.float(), 0.9, 10, 0.8, 0.0) > 0)


# ---- statistical ----------------------------------------------------------------------------
STAT_SETS = [  # V, temperature, top_k, top_p, min_p, path
    (100, 0.8, 20, 1.0, 0.0, "fast"),
    (100, 1.0, 0, 0.8, 0.0, "fast"),
    (64, 0.7, 30, 0.9, 0.0, "fast"),
    (64, 1.3, 0, 0.95, 0.05, "fast"),
    (80, 1.0, 0, 0.8, 0.02, "general"),  # top-p by rejection, min-p in the proposals
    (64, 0.7, 30, 0.9, 0.0, "general"),  # top-k by the streaming search, then top-p by rejection
]


def wrong_distributions(lg, T, k, p, mp):
    """What plausible bugs would sample from instead."""
    out = {"unfiltered": reference_probs(lg, T)}
    if k:
        out["top_k - 1"] = reference_probs(lg, T, k - 1, p, mp)
        out["top_k + 1"] = reference_probs(lg, T, k + 1, p, mp)
    if p < 1:
        if k:  # top-p measured against all the mass instead of the top-k survivors'
            probs = torch.softmax(lg.double() / T, -1)
            srt = probs.sort(-1, descending=True).values
            n_keep = int((srt.cumsum(-1) < p).sum()) + 1
            out["top-p not renormalized after top-k"] = reference_probs(lg, T, min(k, n_keep), 1.0, mp)
        out["top_p - 0.05"] = reference_probs(lg, T, k, p - 0.05, mp)
    if mp:
        out["min-p ignored"] = reference_probs(lg, T, k, p, 0.0)
    return out


def assert_follows_reference(tokens, lg, T, k, p, mp):
    """Draws `tokens` from row 0 of `lg` lie in the reference support, pass the chi-square test
    against reference_probs, and fail it against every plausible bug that changes the law."""
    probs = reference_probs(lg, T, k, p, mp)[0]
    assert (probs[tokens] > 0).all(), "drew a token outside the reference support"
    counts = torch.bincount(tokens.cpu(), minlength=lg.shape[-1])
    pval = chi_square_pvalue(counts, probs)
    assert pval > ALPHA, f"chi-square p = {pval:.2e} against the reference"
    for name, wrong in wrong_distributions(lg, T, k, p, mp).items():
        if torch.allclose(wrong[0], probs, atol=1e-3):
            continue  # this bug would not change this distribution
        assert chi_square_pvalue(counts, wrong[0]) < 1e-6, f"a sampler drawing from '{name}' would pass"


def assert_rows_follow(tokens, probs):
    """Every row's draws lie in its reference support and pass the chi-square test against it."""
    for b in range(probs.shape[0]):
        assert (probs[b][tokens[b]] > 0).all()
        pval = chi_square_pvalue(torch.bincount(tokens[b].cpu(), minlength=probs.shape[-1]), probs[b])
        assert pval > ALPHA, f"row {b}: p = {pval:.2e}"


@pytest.mark.parametrize("params", STAT_SETS, ids=lambda p: "V{}-T{}-k{}-p{}-minp{}-{}".format(*p))
def test_samples_follow_reference(params):
    V, T, k, p, mp, path = params
    lg = logits_for(1, V, "stat", params[:5])
    n = N_DRAWS if path == "fast" else N_DRAWS // 2  # rejection rounds are slow in the interpreter
    tokens = sample_many(lg, n, T, k, p, mp, seed=1234, config=PATHS[path])[0]
    assert_follows_reference(tokens, lg, T, k, p, mp)


def test_per_row_parameters_statistically():
    V, n = 80, 5000
    lg = logits_for(3, V, "stat-rows")
    T = torch.tensor([0.6, 1.0, 1.4]).to(DEVICE)
    k = torch.tensor([10, 0, 40], dtype=torch.int32).to(DEVICE)
    p = torch.tensor([1.0, 0.7, 0.9]).to(DEVICE)
    mp = torch.tensor([0.0, 0.0, 0.02]).to(DEVICE)
    tokens = sample_many(lg, n, T, k, p, mp, seed=99)
    probs = reference_probs(lg, T, k, p, mp)
    assert_rows_follow(tokens, probs)
    # the rows must not have been drawn with one another's parameters
    assert chi_square_pvalue(torch.bincount(tokens[0].cpu(), minlength=V), probs[2]) < 1e-6


def test_sample_one_per_row_in_support_and_reproducible():
    B, V = 4, 150
    lg = logits_for(B, V, "one")
    a = sample(lg, 0.9, 25, 0.85, 0.0, seed=7)
    assert a.shape == (B,) and a.dtype == torch.int64
    probs = reference_probs(lg, 0.9, 25, 0.85, 0.0)
    assert (probs.gather(1, a[:, None]) > 0).all()
    assert torch.equal(a, sample(lg, 0.9, 25, 0.85, 0.0, seed=7))  # same seed, same tokens
    assert torch.equal(a, sample_many(lg, 1, 0.9, 25, 0.85, 0.0, seed=7)[:, 0])
    b = sample(lg, 0.9, 25, 0.85, 0.0, seed=7, config=PATHS["general"])
    assert (probs.gather(1, b[:, None]) > 0).all() and torch.equal(b, sample(lg, 0.9, 25, 0.85, 0.0, seed=7, config=PATHS["general"]))
    draws = torch.stack([sample(lg, 1.0, seed=s) for s in range(4)])  # no filter: a flat-ish row
    assert (draws != draws[0]).any()  # other seeds, other tokens
    g = torch.Generator().manual_seed(3)
    assert torch.equal(sample(lg, 1.0, generator=g), sample(lg, 1.0, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("path", list(PATHS))
def test_greedy_is_first_argmax(path):
    lg = logits_for(4, 97, "greedy")
    lg[2, 10] = lg[2, 50] = lg[2].max() + 1.0  # a tie: the first index wins
    tokens = sample(lg, 0.0, 0, 1.0, 0.0, seed=0, config=PATHS[path])
    assert torch.equal(tokens, lg.argmax(-1))
    assert tokens[2].item() == 10


# ---- split rows: C programs per row -----------------------------------------------------------
# chunk = 64 forces C = ceil(V / 64) > 1 on tiny rows (tiles of 64 or 32 tokens, 8 pivots, on the
# GPU as in the interpreter); the other settings steer how rows settle
TINY = {"NP": 8, "BLOCK": 64, "num_warps": 4}
SPLIT = {
    "full": {**TINY, "chunk": 64, "CAP": 256},  # 2 rounds: everything >= lo usually fits the list
    "interval": {**TINY, "chunk": 64, "CAP": 16},  # only [lo, hi) fits 16 slots
    "rounds": {**TINY, "chunk": 64, "CAP": 16, "ROUNDS": 4, "BLOCK": 32},  # most rows settle in the rounds; 2 tiles a chunk
    "fallback": {**TINY, "chunk": 64, "CAP": 2, "ROUNDS": 1},  # nothing fits: the one-program general path
}
ROW_SETS = SETS + [(1.0, 0, 1.0, 0.0), (1.1, 500, 0.9, 0.0)]  # no filter; top-k > CAP with top-p


def split_rows(B, V, *parts, scale=2.0):
    """B rows, each with its own (T, k, top_p, min_p) from ROW_SETS, as tensors [B]."""
    lg = logits_for(B, V, *parts, scale=scale)
    rows = [ROW_SETS[i % len(ROW_SETS)] for i in range(B)]
    T, k, p, mp = (torch.tensor([r[i] for r in rows], dtype=dt).to(DEVICE)
                   for i, dt in enumerate((torch.float32, torch.int32, torch.float32, torch.float32)))
    return lg, T, k, p, mp


@pytest.mark.parametrize("how", list(SPLIT))
def test_split_kept_set_equals_reference_support(how):
    """Every setting of ROW_SETS at once (one row each, fresh logits), -inf logits included."""
    B, V = len(ROW_SETS), 200
    lg, T, k, p, mp = split_rows(B, V, "split-kept", how)
    lg[0, :150] = float("-inf")  # a masked vocabulary
    lg[3, 5::7] = float("-inf")
    modes, mask = split_modes(lg, T, k, p, mp, config={"split": SPLIT[how]})
    ref = reference_probs(lg, T, k, p, mp) > 0
    assert torch.equal(mask, ref), f"rows differ: {(mask != ref).sum(-1).tolist()}, modes {modes.tolist()}"
    settled, want = modes.tolist(), SPLIT_MODES.index(how if how != "rounds" else "done")
    # compiled (H200), one row settled by the exact fallback where the interpreter takes the
    # interval path (float rounding of the chunk masses); the kept set above is what must agree
    assert want in settled or (GPU and SPLIT_MODES.index("fallback") in settled), f"no row settled as {how}: {settled}"


def test_split_kept_set_half_logits():
    lg = logits_for(3, 129, "split-half", dtype=torch.float16)
    mask = kept_mask(lg, 0.9, 0, 0.8, 0.0, config={"split": {**TINY, "chunk": 32, "BLOCK": 32}})
    assert torch.equal(mask, reference_probs(lg.float(), 0.9, 0, 0.8, 0.0) > 0)


SPLIT_STAT_SETS = [  # V, temperature, top_k, top_p, min_p, split settings, how the row settles
    (100, 1.0, 0, 0.8, 0.0, "interval", "interval"),  # top-p alone: tile draw after the list
    (100, 1.0, 0, 0.8, 0.02, "rounds", "done"),  # settled by the rounds, min-p in the tile draw
    (100, 1.2, 0, 1.0, 0.0, "full", "done"),  # no filter: tile draw over every token
    (64, 0.7, 30, 0.9, 0.0, "full", "full"),  # top-k then top-p on the full list, inverse CDF over it
    (100, 2.0, 40, 1.0, 0.0, {**TINY, "chunk": 64, "CAP": 32, "ROUNDS": 1}, "interval"),  # top-k alone from the list
]


@pytest.mark.parametrize("params", SPLIT_STAT_SETS, ids=lambda p: "V{}-T{}-k{}-p{}-minp{}-{}".format(*p[:5], p[6]))
def test_split_samples_follow_reference(params):
    V, T, k, p, mp, how, settles = params
    lg = logits_for(1, V, "split-stat", params[:5])
    cfg = {"split": SPLIT[how] if isinstance(how, str) else how}
    modes, _ = split_modes(lg, T, k, p, mp, config=cfg)
    assert SPLIT_MODES[int(modes[0])] == settles
    tokens = sample_many(lg, N_DRAWS // 2, T, k, p, mp, seed=4321, config=cfg)[0]
    assert_follows_reference(tokens, lg, T, k, p, mp)


def test_split_per_row_parameters_statistically():
    """Rows with their own parameters and ways to settle, in one launch: no row drawn with another's."""
    V, n = 90, 4000
    lg = logits_for(3, V, "split-stat-rows")
    T = torch.tensor([0.6, 1.0, 1.4]).to(DEVICE)
    k = torch.tensor([10, 0, 0], dtype=torch.int32).to(DEVICE)
    p = torch.tensor([1.0, 0.7, 1.0]).to(DEVICE)
    mp = torch.tensor([0.0, 0.0, 0.05]).to(DEVICE)
    cfg = {"split": SPLIT["interval"]}
    tokens = sample_many(lg, n, T, k, p, mp, seed=5, config=cfg)
    probs = reference_probs(lg, T, k, p, mp)
    assert_rows_follow(tokens, probs)
    assert chi_square_pvalue(torch.bincount(tokens[2].cpu(), minlength=V), probs[1]) < 1e-6


def test_split_fallback_samples_in_support():
    V = 80
    lg = logits_for(2, V, "split-fallback")
    cfg = {"split": SPLIT["fallback"]}
    modes, _ = split_modes(lg, 1.0, 0, 0.8, 0.0, config=cfg)
    assert modes.tolist() == [SPLIT_MODES.index("fallback")] * 2
    tokens = sample_many(lg, 2000, 1.0, 0, 0.8, 0.0, seed=3, config=cfg)
    probs = reference_probs(lg, 1.0, 0, 0.8, 0.0)
    assert_rows_follow(tokens, probs)


def test_split_sample_reproducible_and_greedy():
    B, V = 3, 150
    lg = logits_for(B, V, "split-one")
    lg[1, 20] = lg[1, 130] = lg[1].max() + 1.0  # a tie across chunks: the first index wins
    cfg = {"split": SPLIT["full"]}
    a = sample(lg, 0.9, 0, 0.85, 0.0, seed=7, config=cfg)
    assert a.shape == (B,) and a.dtype == torch.int64
    assert (reference_probs(lg, 0.9, 0, 0.85, 0.0).gather(1, a[:, None]) > 0).all()
    assert torch.equal(a, sample(lg, 0.9, 0, 0.85, 0.0, seed=7, config=cfg))
    assert torch.equal(a, sample_many(lg, 1, 0.9, 0, 0.85, 0.0, seed=7, config=cfg)[:, 0])
    draws = torch.stack([sample(lg, 1.0, seed=s, config=cfg) for s in range(3)])
    assert (draws != draws[0]).any()
    greedy = sample(lg, 0.0, 0, 1.0, 0.0, seed=0, config=cfg)
    assert torch.equal(greedy, lg.argmax(-1)) and greedy[1].item() == 20


def test_split_routing():
    """SPLIT_TABLE splits small batches of long rows; large batches and small top-k stay one a row."""
    assert _split_config("t", 1, 151936, 0, 1, None) is not None
    assert _split_config("t", 32, 32000, 0, 1, None) is not None
    assert _split_config("t", 256, 151936, 0, 1, None) is None  # B rows fill the SMs
    assert _split_config("t", 1, 151936, 50, 1, None) is None  # top-k 50: the fast path
    assert _split_config("t", 1, 1000, 0, 1, None) is None  # one chunk
    assert _split_config("t", 1, 151936, 0, 1, {"split": False}) is None
    cfg = _split_config("t", 1, 151936, 0, 1, None)
    assert cfg["C"] * cfg["CHUNK"] >= 151936 and cfg["CHUNK"] % cfg["BLOCK"] == 0 and cfg["C"] <= cfg["C_PAD"]


def test_sorted_peer_matches_reference():
    """The benchmark's eager peer (sort + cumsum + multinomial) samples the same distribution."""
    V = 64
    lg = logits_for(1, V, "peer").expand(N_DRAWS, V).contiguous()
    tokens = sample_sorted(lg, 0.7, 30, 0.9, 0.0, generator=torch.Generator(device=DEVICE).manual_seed(0))
    probs = reference_probs(lg[:1], 0.7, 30, 0.9, 0.0)[0]
    assert chi_square_pvalue(torch.bincount(tokens.cpu(), minlength=V), probs) > ALPHA


def test_cost_formulas():
    assert flops(2, 100) == 1000 and bytes_moved(2, 100, 4, 3) == 2 * 100 * 4 * 3 + 16
    assert passes() == 3 and passes(split_rounds=2) == 4


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda lg: sample(lg[0], seed=0), r"logits must be \[B, V\]"),
        (lambda lg: sample(lg.long(), seed=0), r"logits has dtype torch.int64"),
        (lambda lg: sample(lg.t().contiguous().t(), seed=0), r"logits must be contiguous along V"),
        (lambda lg: sample(lg, top_k=2.5, seed=0), r"top_k must be an int"),
        (lambda lg: sample(lg, top_p=torch.ones(3, device=lg.device), seed=0), r"top_p must be a number or a tensor of shape \(2,\)"),
        (lambda lg: sample(lg, top_k=torch.ones(2, device=lg.device), seed=0), r"top_k must be an integer tensor"),
        (lambda lg: sample(lg, temperature=float("nan"), seed=0), r"temperature must be finite"),
        (lambda lg: sample_many(lg, 0, seed=0), r"num_samples must be an int >= 1"),
        (lambda lg: sample(lg, seed=0, config={"BLOCK": 64}), r"config has unknown keys \['BLOCK'\]"),
        (lambda lg: sample(lg, seed=0, config={"split": {"chunks": 4}}), r"config\['split'\] has unknown keys \['chunks'\]"),
        (lambda lg: sample(lg, seed=0, config={"split": {"NP": 12}}), r"config\['split'\]\['NP'\] must be a power of two"),
        (lambda lg: sample(lg, seed=0, config={"split": {"ROUNDS": 0}}), r"config\['split'\]\['ROUNDS'\] must be an int >= 1"),
        (lambda lg: sample(lg, seed=0, config={"split": {"maxnreg": 16}}), r"config\['split'\]\['maxnreg'\] must be None or an int"),
    ],
)
def test_launcher_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(2, 10, device=DEVICE))
