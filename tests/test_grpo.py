"""Tests for grpo.py: advantages, aggregation modes, the clipped loss's gradient, KL, entropy
bonus, KL-Cov's penalty, metrics, and that micro-batch accumulation reproduces the full-batch
gradient."""

import math

import pytest
import torch

from grpo import (LOSS_AGG_MODES, aggregate, clipped_surrogate, group_advantages, k3_kl,
                  loss_metrics, penalty_terms)


def policy_loss(logp, old, adv, keep, eps_low=0.2, eps_high=0.2, loss_agg="token-mean",
                num_tokens=None, num_seqs=None, max_len=None, dual_clip=3.0, **penalties):
    """The loss of one (micro-)batch as the trainer composes it: surrogate + penalties, aggregated
    once; and its metrics."""
    token_loss = clipped_surrogate(logp, old, adv, eps_low, eps_high, dual_clip)
    token_loss = token_loss + sum(penalty_terms(logp, old, **penalties).values())
    loss = aggregate(token_loss, keep, loss_agg, num_tokens, num_seqs, max_len)
    return loss, loss_metrics(logp, old, adv, keep, eps_low, eps_high, dual_clip,
                              ref_logp=penalties.get("ref_logp"))


def test_surrogate_and_penalties_are_per_token():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.125]]))
    old = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.125]]))       # ratios 1, 0.5 | 2, 1
    adv = torch.tensor([1.0, -1.0])
    # A = +1: -min(r, clip(r)) = -1, -0.5 (0.5 < 0.8 is below the clip: min takes r);
    # A = -1: -min(-r, -clip(r)) = max(r, clip(r)) = 2, 1.
    torch.testing.assert_close(clipped_surrogate(logp, old, adv), torch.tensor([[-1.0, -0.5], [2.0, 1.0]]))
    entropy = torch.ones(2, 2)
    terms = penalty_terms(logp, old, entropy_coef=0.1, entropy=entropy,
                          kl_cov_coef=2.0, kl_cov_mask=torch.tensor([[False, True], [False, False]]))
    assert set(terms) == {"entropy_bonus", "kl_cov"}
    torch.testing.assert_close(terms["entropy_bonus"], torch.full((2, 2), -0.1))
    torch.testing.assert_close(terms["kl_cov"], torch.tensor([[0.0, 2 * math.log(2)], [0.0, 0.0]]))
    assert penalty_terms(logp, old) == {}


def test_group_advantages():
    r = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1])
    a = group_advantages(r, group_size=4)
    # group 1: mean 0.5, unbiased std sqrt(1/3); group 2 is constant -> 0.
    s = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    torch.testing.assert_close(a, torch.tensor([s, -s, -s, s, 0, 0, 0, 0]))
    torch.testing.assert_close(group_advantages(r, 4, scale_std=False), torch.tensor([.5, -.5, -.5, .5, 0, 0, 0, 0]))
    torch.testing.assert_close(group_advantages(torch.tensor([0.0, 1, 3]), 1), torch.tensor([0.0, 1, 3]))
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(r, 3)


# token_loss and mask shared by the aggregation checks below.
LOSS = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
KEEP = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])


def test_aggregate_modes_by_hand():
    assert aggregate(LOSS, KEEP, "token-mean").item() == pytest.approx((1 + 2 + 4) / 3)
    assert aggregate(LOSS, KEEP, "token-mean", num_tokens=14).item() == pytest.approx(0.5)
    # Sequence 3 has no kept token: it is not counted unless num_seqs says otherwise.
    assert aggregate(LOSS, KEEP, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4) / 2)
    assert aggregate(LOSS, KEEP, "seq-mean-token-mean", num_seqs=4).item() == pytest.approx(5.5 / 4)
    # Dr. GRPO: the kept sum over a constant (the length budget), no division by sequences.
    assert aggregate(LOSS, KEEP, "seq-mean-token-sum-norm").item() == pytest.approx(7 / 3)
    assert aggregate(LOSS, KEEP, "seq-mean-token-sum-norm", max_len=10).item() == pytest.approx(0.7)
    assert aggregate(LOSS, KEEP, "seq-mean-token-sum-norm", num_seqs=4).item() == pytest.approx(7 / 3)
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(LOSS, KEEP, "mean")


def test_aggregate_ignores_padding_values_and_empty_masks():
    loss = LOSS.clone().requires_grad_(True)
    nan_padding = torch.where(KEEP, loss, torch.tensor(float("nan")))
    for mode in LOSS_AGG_MODES:
        assert torch.isfinite(aggregate(nan_padding, KEEP, mode))
        empty = aggregate(loss, torch.zeros_like(KEEP), mode)
        assert empty.item() == 0.0
        (grad,) = torch.autograd.grad(empty, loss)
        assert not grad.any()


def _random_batch(n=6, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g) * 3
    logp = old + 0.3 * torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    response = torch.arange(t)[None, :] < lengths[:, None]
    keep = response & (torch.rand(n, t, generator=g) > 0.2)  # a clipping mask removed some tokens
    return logp, old, adv, keep


def test_on_policy_gradient_is_minus_advantage_over_kept_count():
    _, old, adv, keep = _random_batch()
    logp = old.clone().requires_grad_(True)  # ratio = 1
    loss, m = policy_loss(logp, old, adv, keep)
    (grad,) = torch.autograd.grad(loss, logp)
    expected = torch.where(keep, -adv[:, None].expand_as(old) / keep.sum(), torch.zeros_like(old))
    torch.testing.assert_close(grad, expected)
    assert m["ratio_mean"] == pytest.approx(1.0) and m["approx_kl"] == pytest.approx(0.0, abs=1e-12)
    assert m["clip_frac_low"] == 0.0 and m["clip_frac_high"] == 0.0


def test_clip_zeroes_gradient_outside_trust_region_on_the_right_side():
    # Ratios 0.5, 1.1, 1.5 against eps_low = 0.2, eps_high = 0.28, for A = +2 and A = -2.
    ratio = torch.tensor([[0.5, 1.1, 1.5], [0.5, 1.1, 1.5]], dtype=torch.float64)
    old = torch.full_like(ratio, -1.0)
    logp = (old + ratio.log()).requires_grad_(True)
    adv = torch.tensor([2.0, -2.0], dtype=torch.float64)
    mask = torch.ones_like(ratio, dtype=torch.bool)
    loss, m = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    (grad,) = torch.autograd.grad(loss, logp)
    # d l / d logp = -A rho / 6 where the unclipped term is active, 0 where the clip holds:
    # A > 0 is cut above 1.28 (ratio 1.5), A < 0 below 0.8 (ratio 0.5).
    expected = torch.tensor([[-2 * 0.5, -2 * 1.1, 0.0], [0.0, 2 * 1.1, 2 * 1.5]], dtype=torch.float64) / 6
    torch.testing.assert_close(grad, expected)
    assert m["clip_frac_high"] == pytest.approx(1 / 6) and m["clip_frac_low"] == pytest.approx(1 / 6)
    assert m["ratio_mean"] == pytest.approx((0.5 + 1.1 + 1.5) / 3)
    k3 = [r - 1 - math.log(r) for r in (0.5, 1.1, 1.5)]  # KL(old || new) from old's samples
    assert m["approx_kl"] == pytest.approx(sum(k3) / 3)


def test_kl_to_reference_and_entropy_bonus():
    logp, old, adv, keep = _random_batch(seed=1)
    ref = old - 0.2
    entropy = torch.rand_like(logp)
    base, _ = policy_loss(logp, old, adv, keep)
    with_kl, m = policy_loss(logp, old, adv, keep, ref_logp=ref, kl_coef=0.1)
    x = ref - logp  # k3: exp(ref - logp) - (ref - logp) - 1
    kl = (torch.exp(x) - x - 1)[keep].mean()
    assert (with_kl - base).item() == pytest.approx(0.1 * kl.item(), rel=1e-5)
    assert m["kl_ref"] == pytest.approx(kl.item(), rel=1e-5)
    torch.testing.assert_close(k3_kl(logp, ref), torch.exp(x) - x - 1)
    with_bonus, _ = policy_loss(logp, old, adv, keep, entropy=entropy, entropy_coef=0.01)
    assert (base - with_bonus).item() == pytest.approx(0.01 * entropy[keep].mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old, adv, keep, kl_coef=0.1)
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, old, adv, keep, entropy_coef=0.1)


def test_kl_cov_penalises_only_the_selected_tokens_by_abs_log_ratio():
    # A = 0, so the surrogate has no gradient and the loss is the penalty alone:
    # coef * (|0.1| + |-0.2|) / 3 kept tokens, gradient coef * sign(logp - old) / 3 where selected.
    old = torch.full((1, 4), -1.0, dtype=torch.float64)
    logp = (old + torch.tensor([[0.1, -0.2, 0.05, 7.0]], dtype=torch.float64)).requires_grad_(True)
    keep = torch.tensor([[True, True, True, False]])        # the last token is padding
    selected = torch.tensor([[True, True, False, True]])     # padding selected: still ignored
    loss, _ = policy_loss(logp, old, torch.zeros(1, dtype=torch.float64), keep,
                          kl_cov_mask=selected, kl_cov_coef=2.0)
    assert loss.item() == pytest.approx(2.0 * 0.3 / 3)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, torch.tensor([[2 / 3, -2 / 3, 0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="kl_cov_mask"):
        policy_loss(logp, old, torch.zeros(1), keep, kl_cov_coef=1.0)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_micro_batches_accumulate_to_the_full_batch_gradient(mode):
    logp, old, adv, keep = _random_batch(n=7, t=9, seed=2)
    ref, entropy = old - 0.1, torch.rand_like(old)
    penalised = keep & (torch.rand(old.shape, generator=torch.Generator().manual_seed(3)) < 0.3)
    extra = dict(ref_logp=ref, kl_coef=0.05, entropy_coef=0.01, eps_low=0.2, eps_high=0.28, loss_agg=mode,
                 kl_cov_mask=penalised, kl_cov_coef=0.5)
    counts = dict(num_tokens=int(keep.sum()), num_seqs=int(keep.any(-1).sum()), max_len=9)

    full_logp = logp.clone().requires_grad_(True)
    full, _ = policy_loss(full_logp, old, adv, keep, entropy=entropy, **extra, **counts)
    full.backward()

    micro_logp = logp.clone().requires_grad_(True)
    total = 0.0
    for rows in (slice(0, 3), slice(3, 5), slice(5, 7)):
        t = int(keep[rows].any(0).nonzero().max()) + 1  # trim to the micro-batch's longest, as select does
        loss, _ = policy_loss(micro_logp[rows, :t], old[rows, :t], adv[rows], keep[rows, :t],
                              entropy=entropy[rows, :t], **{**extra, "ref_logp": ref[rows, :t],
                                                            "kl_cov_mask": penalised[rows, :t]}, **counts)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(full.item(), rel=1e-6)
    torch.testing.assert_close(micro_logp.grad, full_logp.grad)


def _verl_agg(loss, mask, mode, budget):
    """verl's agg_loss formulas, written out: token-mean; seq-mean-token-mean over the sequences
    with a kept token; seq-mean-token-sum-norm = kept sum / the length budget."""
    m = mask.double()
    if mode == "token-mean":
        return (loss * m).sum() / m.sum()
    if mode == "seq-mean-token-mean":
        has = m.sum(-1) > 0
        return ((loss * m).sum(-1)[has] / m.sum(-1)[has]).mean()
    return (loss * m).sum() / budget


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_equals_verl_formulas_on_random_batches(mode, seed):
    g = torch.Generator().manual_seed(seed)
    loss = torch.randn(6, 9, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 9, generator=g) < 0.6
    mask[seed % 6] = False                      # a sequence with no kept token
    got = aggregate(loss, mask, mode, max_len=16)
    assert got.item() == pytest.approx(_verl_agg(loss, mask, mode, 16).item(), rel=1e-12)


def test_dual_clip_bounds_the_negative_advantage_loss_by_hand():
    # A = -2, eps 0.2, c = 3: ratio 0.5 -> the clip holds at 0.8: loss max(1, 1.6) = 1.6;
    # ratio 2 -> loss 4 (< 6: the bound does not bind); ratio 5 -> min(10, 6) = 6, no gradient.
    # A = +2 is never bounded: ratio 5 -> -min(10, 2.4) = -2.4.
    ratio = torch.tensor([[0.5, 2.0, 5.0], [0.5, 2.0, 5.0]], dtype=torch.float64)
    old = torch.zeros_like(ratio)
    logp = ratio.log().requires_grad_(True)
    adv = torch.tensor([-2.0, 2.0], dtype=torch.float64)
    loss = clipped_surrogate(logp, old, adv, 0.2, 0.2, dual_clip=3.0)
    torch.testing.assert_close(loss, torch.tensor([[1.6, 4.0, 6.0], [-1.0, -2.4, -2.4]], dtype=torch.float64))
    (grad,) = torch.autograd.grad(loss[0].sum(), logp)
    torch.testing.assert_close(grad[0], torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64))
    off = clipped_surrogate(logp, old, adv, 0.2, 0.2, dual_clip=math.inf)
    assert off[0, 2].item() == pytest.approx(10.0) and torch.isfinite(off).all()
    m = loss_metrics(logp, old, adv, torch.ones_like(ratio, dtype=torch.bool), 0.2, 0.2, 3.0)
    assert m["dual_clip_frac"] == pytest.approx(1 / 6)


def test_truncated_importance_weights_and_the_mismatch_by_hand():
    from grpo import sampler_mismatch, tis_weights
    old = torch.log(torch.tensor([[0.5, 0.2, 0.9]]))
    sampler = torch.log(torch.tensor([[0.25, 0.4, 0.1]]))    # ratios 2, 0.5, 9
    torch.testing.assert_close(tis_weights(old, sampler, cap=3.0), torch.tensor([[2.0, 0.5, 3.0]]))
    mask = torch.tensor([[True, True, False]])
    m = sampler_mismatch(old, sampler, mask)
    assert m["mismatch_logp_abs_mean"] == pytest.approx(math.log(2))
    assert m["mismatch_logp_abs_max"] == pytest.approx(math.log(2))
    k3 = [(2 - 1 - math.log(2)), (0.5 - 1 - math.log(0.5))]     # exp(x) - x - 1, x = old - sampler
    assert m["mismatch_kl"] == pytest.approx(sum(k3) / 2)
    assert sampler_mismatch(old, old, mask) == {"mismatch_logp_abs_mean": 0.0,
                                                "mismatch_logp_abs_max": 0.0, "mismatch_kl": 0.0}
