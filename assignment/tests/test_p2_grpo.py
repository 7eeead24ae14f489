"""P2: group advantages (grpo.group_advantages) and the clipped surrogate with dual-clip
(grpo.clipped_surrogate)."""

import math
import statistics

import pytest
import torch
from _support import close, tensor, variant_switches

from grpo import clipped_surrogate, group_advantages


def _naive_advantages(rewards: list[float], group: int) -> list[float]:
    std = statistics.pstdev if 1 in variant_switches() else statistics.stdev   # the variant's convention
    out = []
    for start in range(0, len(rewards), group):
        r = rewards[start:start + group]
        if group == 1:
            out += r
            continue
        mean, s = statistics.fmean(r), std(r)
        out += [(x - mean) / (s + 1e-6) for x in r]
    return out


def test_advantages_by_hand():
    rewards = [1.0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1]
    got = group_advantages(torch.tensor(rewards), group_size=4)
    close(got, torch.tensor(_naive_advantages(rewards, 4)), "advantages of groups (1,0,0,1) (1,1,1,1) (0,0,0,1)",
          rtol=1e-5, atol=1e-6)
    close(group_advantages(torch.tensor([0.0, 1, 3]), 1), torch.tensor([0.0, 1, 3]), "groups of one response")
    close(group_advantages(torch.tensor(rewards), 4, scale_std=False),
          torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, -0.25, -0.25, -0.25, 0.75]),
          "advantages with scale_std=False")


def test_advantages_contract():
    got = group_advantages(torch.tensor([1, 0, 1, 1, 0, 0]), group_size=3)   # integer rewards
    tensor(got, "advantages of 6 integer rewards", shape=(6,), dtype=torch.float32)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), group_size=2)


def _naive_surrogate(rho: float, a: float, eps_low: float, eps_high: float, c: float) -> float:
    loss = -min(rho * a, min(max(rho, 1 - eps_low), 1 + eps_high) * a)
    return min(loss, -c * a) if a < 0 else loss


RATIOS = [0.5, 0.9, 1.0, 1.1, 1.5, 5.0]


def _batch(advantages):
    ratio = torch.tensor([RATIOS] * len(advantages), dtype=torch.float64)
    old = torch.full_like(ratio, -1.3)
    logp = (old + ratio.log()).requires_grad_(True)
    return ratio, old, logp, torch.tensor(advantages, dtype=torch.float64)


def test_surrogate_by_hand():
    ratio, old, logp, adv = _batch([2.0, -2.0, 0.0])
    got = clipped_surrogate(logp, old, adv, 0.2, 0.28, math.inf)
    expected = torch.tensor([[_naive_surrogate(r, a, 0.2, 0.28, math.inf) for r in RATIOS] for a in (2.0, -2.0, 0.0)],
                            dtype=torch.float64)
    close(got, expected, "surrogate at ratios 0.5..5 for A = +2, -2, 0 (eps 0.2 / 0.28, no dual-clip)", rtol=1e-6)
    per_token = clipped_surrogate(logp, old, adv[:, None].expand(3, len(RATIOS)), 0.2, 0.28, math.inf)
    close(per_token, expected, "surrogate with per-token (N, T) advantages", rtol=1e-6)


def test_surrogate_gradient_is_zero_where_the_clip_holds():
    ratio, old, logp, adv = _batch([2.0, -2.0])
    loss = clipped_surrogate(logp, old, adv, 0.2, 0.28, math.inf)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    # d/dlogp of -rho A is -A rho where the unclipped term is the minimum, 0 where the clip holds
    expected = torch.tensor([[0.0 if (a > 0 and r > 1.28) or (a < 0 and r < 0.8) else -a * r for r in RATIOS]
                             for a in (2.0, -2.0)], dtype=torch.float64)
    close(grad, expected, "gradient of the surrogate w.r.t. logp (A = +2 row, then A = -2)", rtol=1e-6, atol=1e-9)


def test_dual_clip_bounds_negative_advantages():
    ratio, old, logp, adv = _batch([-2.0, 2.0])
    got = clipped_surrogate(logp, old, adv, 0.2, 0.2, 3.0)
    expected = torch.tensor([[_naive_surrogate(r, a, 0.2, 0.2, 3.0) for r in RATIOS] for a in (-2.0, 2.0)],
                            dtype=torch.float64)
    close(got, expected, "surrogate with dual_clip c = 3 (A = -2 row, then A = +2)", rtol=1e-6)
    (grad,) = torch.autograd.grad(got[0, -1], logp)
    close(grad[0, -1], 0.0, "gradient at ratio 5 > c for A < 0 (the bound holds)", atol=1e-12)
    default = clipped_surrogate(logp, old, adv)
    close(default, expected, "surrogate with the default eps and dual_clip", rtol=1e-6)
