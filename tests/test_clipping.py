"""Tests for clipping.py on hand-made batches whose kept sets are worked out in the comments."""

import math

import pytest
import torch

from clipping import (clip_b_mask, clip_cov_mask, clip_v_mask, entropy_direction_mask, forking_mask,
                      kl_cov_mask)

# Clip-B batch: 2 responses x 5 positions; the last position of response 1 is padding whose
# huge S* (99) would wreck the statistics if it were counted.
# Valid S*: 1 1 1 1 -7 | 1 1 1 9  -> n = 9, mean 1, deviations 0 0 0 0 -8 | 0 0 0 8,
# population sigma = sqrt(128 / 9) = 3.771, so the two outliers sit at -2.12 and +2.12 sigma.
S_B = torch.tensor([[1.0, 1, 1, 1, -7], [1, 1, 1, 9, 99]])
MASK_B = torch.tensor([[True] * 5, [True] * 4 + [False]])
SIGMA_B = math.sqrt(128 / 9)


def _kept(keep: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(ix) for ix in keep.nonzero().tolist()}


ALL_VALID_B = _kept(MASK_B)


def test_clip_b_removes_negative_advantage_outlier_below_mu_sigma():
    adv = torch.tensor([-1.0, 1.0])
    keep, m = clip_b_mask(S_B, adv, MASK_B, mu=2.0)  # -8 < -2 sigma = -7.54: removed
    assert _kept(keep) == ALL_VALID_B - {(0, 4)}
    assert m["clip_center"] == pytest.approx(1.0) and m["clip_sigma"] == pytest.approx(SIGMA_B)
    assert m["masked_frac"] == pytest.approx(1 / 9)
    assert m["masked_frac_neg"] == pytest.approx(1 / 5) and m["masked_frac_pos"] == 0.0

    keep, m = clip_b_mask(S_B, adv, MASK_B, mu=2.5)  # -8 > -2.5 sigma = -9.43: kept
    assert _kept(keep) == ALL_VALID_B and m["masked_frac"] == 0.0


def test_clip_b_upper_rule_only_when_mu_pos_is_set():
    adv = torch.tensor([1.0, 1.0])  # the -8 outlier now has A > 0: never removed by the lower rule
    keep, _ = clip_b_mask(S_B, adv, MASK_B, mu=0.1)
    assert _kept(keep) == ALL_VALID_B  # mu_pos off: positive-advantage tokens always kept
    keep, m = clip_b_mask(S_B, adv, MASK_B, mu=0.1, mu_pos=2.0)  # +8 > 2 sigma: removed
    assert _kept(keep) == ALL_VALID_B - {(1, 3)}
    assert m["masked_frac_pos"] == pytest.approx(1 / 9) and m["masked_frac_neg"] == 0.0


def test_zero_advantage_and_padding_never_removed_or_kept():
    keep, _ = clip_b_mask(S_B, torch.tensor([0.0, 0.0]), MASK_B, mu=0.1, mu_pos=0.1)
    assert _kept(keep) == ALL_VALID_B  # A = 0: kept whatever d is
    keep, _ = clip_b_mask(S_B, torch.tensor([-1.0, -1.0]), MASK_B, mu=100.0)
    assert not keep[1, 4]  # padding is not kept even when nothing is removed


def test_per_token_advantages_broadcast_the_same_as_per_response():
    adv = torch.tensor([-1.0, 1.0])
    per_token = adv[:, None].expand(2, 5).clone()
    a, _ = clip_b_mask(S_B, adv, MASK_B, mu=2.0, mu_pos=2.0)
    b, _ = clip_b_mask(S_B, per_token, MASK_B, mu=2.0, mu_pos=2.0)
    assert torch.equal(a, b)


# Clip-V: d = S* - E[S] valid values 1 (x8) and -3 -> mean 5/9, population sigma = sqrt(128)/9
# = 1.2571. The rule uses d itself, not d - mean: at mu = 2.6 the threshold is -3.268, so d = -3
# is kept (re-centred it would be -3.556 and removed); at mu = 2.3 (-2.891) it is removed.
def _clip_v_batch():
    torch.manual_seed(0)
    d = torch.tensor([[1.0, 1, 1, 1, -3], [1, 1, 1, 1, -50]])
    es = torch.rand(2, 5)
    mask = torch.tensor([[True] * 5, [True] * 4 + [False]])
    return d + es, es, mask


def test_clip_v_uses_uncentred_deviation():
    s_star, es, mask = _clip_v_batch()
    adv = torch.tensor([-1.0, -1.0])
    keep, m = clip_v_mask(s_star, es, adv, mask, mu=2.6)
    assert _kept(keep) == _kept(mask)
    assert m["clip_sigma"] == pytest.approx(math.sqrt(128) / 9, rel=1e-5)
    assert m["clip_center"] == pytest.approx(5 / 9, rel=1e-5)
    keep, m = clip_v_mask(s_star, es, adv, mask, mu=2.3)
    assert _kept(keep) == _kept(mask) - {(0, 4)}
    assert m["masked_frac"] == pytest.approx(1 / 9) and m["masked_frac_neg"] == pytest.approx(1 / 9)


def test_cap_removes_only_the_most_extreme_negative_advantage_tokens():
    # 21 valid tokens: d = 0 (x16), -5, -6, -7, -8 (A < 0) and +9 (A > 0). mean -17/21,
    # sigma = 3.389, so at mu = mu_pos = 1 the rule removes the five non-zero ones. The cap
    # counts the A < 0 removals only (as released); the optional upper rule is not capped.
    d = torch.tensor([[0.0] * 16 + [-5, -6, -7, -8, 9]])
    adv = torch.tensor([[-1.0] * 20 + [1.0]])
    mask = torch.ones_like(d, dtype=torch.bool)
    es = torch.zeros_like(d)
    removed = lambda keep: {j for (_, j) in _kept(mask) - _kept(keep)}  # noqa: E731
    keep, _ = clip_v_mask(d, es, adv, mask, mu=1.0, mu_pos=1.0)
    assert removed(keep) == {16, 17, 18, 19, 20}
    keep, m = clip_v_mask(d, es, adv, mask, mu=1.0, mu_pos=1.0, max_frac=0.1)  # int(2.1) = 2
    assert removed(keep) == {18, 19, 20}  # -7 and -8, the most negative; +9 by the upper rule
    assert m["masked_frac"] == pytest.approx(3 / 21)
    keep, _ = clip_v_mask(d, es, adv, mask, mu=1.0, mu_pos=1.0, max_frac=1e-4)  # at least 1
    assert removed(keep) == {19, 20}
    keep, _ = clip_b_mask(d, adv, mask, mu=1.0, mu_pos=1.0, max_frac=0.5)  # cap 10 > 5: no effect
    assert removed(keep) == {16, 17, 18, 19, 20}


def test_constant_batch_keeps_everything():
    s_star = torch.full((3, 4), 0.3)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [False] * 4])
    adv = torch.tensor([-1.0, -2.0, 1.0])
    keep, m = clip_b_mask(s_star, adv, mask, mu=0.0, mu_pos=0.0)
    assert torch.equal(keep, mask) and m["clip_sigma"] < 1e-12
    keep, _ = clip_v_mask(s_star, s_star - 0.1, adv, mask, mu=0.0, mu_pos=0.0)
    assert torch.equal(keep, mask)
    keep, m = clip_b_mask(s_star, adv, torch.zeros_like(mask), mu=1.0)  # no valid token at all
    assert not keep.any() and m["masked_frac"] == 0.0


def test_entropy_direction_mask_follows_theorem2_sign():
    torch.manual_seed(0)
    # d = S* - E[S] and A per token; predicted entropy change -A d:
    #   d:  +1  -1  +1  -1   0  (pad)
    #   A:  +1  +1  -1  -1  +1   -1
    #   -Ad: -1  +1  +1  -1   0
    es = torch.rand(1, 6)
    s_star = es + torch.tensor([[1.0, -1, 1, -1, 0, -5]])
    adv = torch.tensor([[1.0, 1, -1, -1, 1, -1]])
    mask = torch.tensor([[True] * 5 + [False]])
    up, m = entropy_direction_mask(s_star, es, adv, mask, "up")
    down, _ = entropy_direction_mask(s_star, es, adv, mask, "down")
    assert {j for _, j in _kept(up)} == {1, 2}
    assert {j for _, j in _kept(down)} == {0, 3}
    assert m["masked_frac"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="direction"):
        entropy_direction_mask(s_star, es, adv, mask, "sideways")


def test_forking_keeps_the_top_entropy_fraction_of_the_batch():
    # 9 valid tokens; the padding's H = 99 would be the top token if it were counted.
    h = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [0.2, 0.8, 0.4, 0.6, 99]])
    adv = torch.tensor([1.0, -1.0])
    keep, m = forking_mask(h, adv, MASK_B, top_frac=0.5)   # int(4.5) = 4 tokens: 0.9 0.8 0.7 0.6
    assert _kept(keep) == {(0, 1), (1, 1), (0, 4), (1, 3)}
    assert m["clip_threshold"] == pytest.approx(0.6) and m["clip_center"] == pytest.approx(0.5)
    assert m["masked_frac"] == pytest.approx(5 / 9)
    assert m["masked_frac_pos"] == pytest.approx(3 / 5) and m["masked_frac_neg"] == pytest.approx(2 / 4)
    keep, _ = forking_mask(h, adv, MASK_B)                  # default 20%: int(1.8) -> at least 1
    assert _kept(keep) == {(0, 1)}
    keep, _ = forking_mask(h, adv, torch.zeros_like(MASK_B))
    assert not keep.any()
    with pytest.raises(ValueError, match="top_frac"):
        forking_mask(h, adv, MASK_B, top_frac=0.0)


# Covariance batch: 2 responses x 6 positions, the last of each padding (logp 100 would wreck
# both means). A = +2 | -2 (mean 0); logp = -1 + x with x summing to 0 (mean -1), so
# cov = A x:   x = 1, 2, 0.25, 3, -0.5       | -1,  1, -0.25, -2.75, -2.75
#            cov = 2, 4, 0.5,  6, -1         |  2, -2,  0.5,   5.5,   5.5    mean 23 / 10.
# Clip-Cov candidates, 1 < cov < 5: (0, 0), (0, 1), (1, 0).
X_COV = torch.tensor([[1.0, 2, 0.25, 3, -0.5, 101], [-1, 1, -0.25, -2.75, -2.75, 101]])
LOGP_COV = X_COV - 1
ADV_COV = torch.tensor([2.0, -2.0])
MASK_COV = torch.tensor([[True] * 5 + [False]] * 2)
CANDIDATES = {(0, 0), (0, 1), (1, 0)}


def test_clip_cov_drops_a_random_ratio_of_the_tokens_inside_the_bounds():
    removed = lambda keep: _kept(MASK_COV) - _kept(keep)  # noqa: E731
    seen = set()
    for seed in range(60):
        keep, m = clip_cov_mask(LOGP_COV, ADV_COV, MASK_COV, generator=torch.Generator().manual_seed(seed))
        assert len(removed(keep)) == 1 and removed(keep) <= CANDIDATES   # int(2e-4 * 10) -> 1
        assert not keep[:, 5].any()
        seen |= removed(keep)
    assert seen == CANDIDATES  # every candidate can be drawn
    assert m["clip_center"] == pytest.approx(2.3) and m["masked_frac"] == pytest.approx(1 / 10)
    again, _ = clip_cov_mask(LOGP_COV, ADV_COV, MASK_COV, generator=torch.Generator().manual_seed(59))
    assert torch.equal(again, keep)

    seeded = torch.Generator().manual_seed(0)
    keep, _ = clip_cov_mask(LOGP_COV, ADV_COV, MASK_COV, ratio=0.2, generator=seeded)
    assert len(removed(keep)) == 2 and removed(keep) <= CANDIDATES
    keep, m = clip_cov_mask(LOGP_COV, ADV_COV, MASK_COV, ratio=1.0)  # 10 asked, only 3 qualify
    assert removed(keep) == CANDIDATES
    assert m["masked_frac_pos"] == pytest.approx(2 / 5) and m["masked_frac_neg"] == pytest.approx(1 / 5)
    keep, _ = clip_cov_mask(LOGP_COV, ADV_COV, MASK_COV, ratio=1.0, lb=5.0, ub=6.0)  # 5.5 twice
    assert removed(keep) == {(1, 3), (1, 4)}
    with pytest.raises(ValueError, match="ratio"):
        clip_cov_mask(LOGP_COV, ADV_COV, MASK_COV, ratio=0.0)


def test_kl_cov_selects_the_largest_covariance_tokens():
    penalised, m = kl_cov_mask(LOGP_COV, ADV_COV, MASK_COV, ratio=0.1)   # 1 token: cov 6
    assert _kept(penalised) == {(0, 3)}
    penalised, m = kl_cov_mask(LOGP_COV, ADV_COV, MASK_COV, ratio=0.3)   # then the two 5.5
    assert _kept(penalised) == {(0, 3), (1, 3), (1, 4)}
    assert m["masked_frac"] == pytest.approx(3 / 10) and m["clip_center"] == pytest.approx(2.3)
    assert m["masked_frac_pos"] == pytest.approx(1 / 5) and m["masked_frac_neg"] == pytest.approx(2 / 5)
    penalised, _ = kl_cov_mask(LOGP_COV, ADV_COV, MASK_COV)              # released 2e-3: at least 1
    assert _kept(penalised) == {(0, 3)}
    assert not kl_cov_mask(LOGP_COV, ADV_COV, torch.zeros_like(MASK_COV))[0].any()


# ----- against the authors' released rules (Trinity-RFT clipb_advantage / clipv_advantage) -----
# An independent statement of each released rule, in float64 (assignment/tests/oracles.py, their
# one home, which the course's graded tests use too), compared on random batches with A = 0 rows,
# padding, the cap, and a degenerate (constant) batch.

def _released_rules():
    """oracles.clip_b and oracles.clip_v, the released rules (never the course variant's)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "assignment" / "tests"))
    try:
        import oracles
    finally:
        sys.path.pop(0)
    return oracles.clip_b, oracles.clip_v


def _random_clip_batch(seed, n=12, t=20, constant=False):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, t, generator=g, dtype=torch.float64) * 0.1
    es = torch.randn(n, t, generator=g, dtype=torch.float64) * 0.02
    if constant:
        s, es = torch.full_like(s, 0.3), torch.full_like(es, 0.1)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    adv[: n // 3] = 0.0                            # groups whose rewards were all equal
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    valid = torch.arange(t)[None, :] < lengths[:, None]
    return s, es, adv[:, None].expand(n, t), valid


@pytest.mark.parametrize("seed", range(40))
def test_masks_equal_the_released_rules_on_random_batches(seed, monkeypatch):
    monkeypatch.delenv("ASSIGNMENT_VARIANT", raising=False)
    _released_clip_b, _released_clip_v = _released_rules()
    constant = seed == 0
    s, es, adv, valid = _random_clip_batch(seed, constant=constant)
    for mu in (0.5, 1.0, 2.5):
        keep_b, _ = clip_b_mask(s, adv, valid, mu)
        assert torch.equal(keep_b, _released_clip_b(s, adv, valid, mu))
        for max_frac in (1.0, 0.02, 1e-4):         # no cap in effect, a cap, the released cap
            keep_v, _ = clip_v_mask(s, es, adv, valid, mu, max_frac=max_frac)
            assert torch.equal(keep_v, _released_clip_v(s, es, adv, valid, mu, max_frac)), (mu, max_frac)


def test_clip_v_removes_zero_advantage_tokens_and_never_caps_them():
    # d = S* - E[S]: valid values 1 (x8), -3 (A = 0 row) and -3 (A < 0 row) -> the two -3 are the
    # outliers. Clip-B keeps A = 0 tokens; Clip-V removes the A = 0 one too, and a cap of one
    # token limits only the A < 0 removals.
    d = torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, 1, -3, 0], [1, 1, 1, -3, 0]], dtype=torch.float64)
    valid = torch.tensor([[True] * 5, [True] * 4 + [False], [True] * 4 + [False]])
    es = torch.zeros_like(d)
    adv = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    keep, m = clip_v_mask(d, es, adv, valid, mu=1.0)
    assert _kept(keep) == _kept(valid) - {(1, 3), (2, 3)}
    assert m["masked_frac"] == pytest.approx(2 / 13) and m["masked_frac_neg"] == pytest.approx(1 / 4)
    keep_b, _ = clip_b_mask(d, adv, valid, mu=1.0)
    assert _kept(keep_b) == _kept(valid) - {(2, 3)}
    # a second A < 0 outlier: the cap of one keeps only the most negative removed
    d[2, 2] = -2.5
    keep, _ = clip_v_mask(d, es, adv, valid, mu=0.9, max_frac=0.01)
    assert _kept(keep) == _kept(valid) - {(1, 3), (2, 3)}
    keep, _ = clip_v_mask(d, es, adv, valid, mu=0.9)
    assert _kept(keep) == _kept(valid) - {(1, 3), (2, 3), (2, 2)}
