"""P2: group advantages (grpo.group_advantages) and the clipped surrogate with dual-clip
(grpo.clipped_surrogate)."""

import math

import pytest
import torch
from _support import close, expected, gen, tensor, variant_switches
from worker import call_grad, student

G = student("grpo")
C_DEFAULT = 2.0 if 8 in variant_switches() else 3.0     # the default dual-clip bound (the variant's, or verl's)


def test_advantages_by_hand():
    rewards = [1.0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1]
    close(G.group_advantages(torch.tensor(rewards), group_size=4), expected("advantages", rewards, 4),
          "advantages of groups (1,0,0,1) (1,1,1,1) (0,0,0,1)", rtol=1e-5, atol=1e-6)
    close(G.group_advantages(torch.tensor([0.0, 1, 3]), 1), torch.tensor([0.0, 1, 3]), "groups of one response")
    close(G.group_advantages(torch.tensor(rewards), 4, scale_std=False),
          torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, -0.25, -0.25, -0.25, 0.75]),
          "advantages with scale_std=False")
    drawn = torch.rand(15, generator=gen(0)).tolist()
    close(G.group_advantages(torch.tensor(drawn), 5), expected("advantages", drawn, 5),
          "advantages of three groups of 5 random rewards", rtol=1e-5, atol=1e-6)


def test_advantages_contract():
    got = G.group_advantages(torch.tensor([1, 0, 1, 1, 0, 0]), group_size=3)   # integer rewards
    tensor(got, "advantages of 6 integer rewards", shape=(6,), dtype=torch.float32)
    drawn = torch.randint(0, 2, (8,), generator=gen(0))
    tensor(G.group_advantages(drawn, 4), "advantages of 8 random integer rewards", shape=(8,), dtype=torch.float32)
    with pytest.raises(ValueError):
        G.group_advantages(torch.zeros(5), group_size=2)


def _ratios(draw: int) -> list[float]:
    """Ratios on both sides of the trust region and beyond the dual-clip bound, some drawn."""
    drawn = (torch.rand(4, generator=gen(draw), dtype=torch.float64) * 4 + 0.25).tolist()
    return [0.5, 0.9, 1.0, 1.1, 1.5, 5.0] + drawn


def _batch(ratios, advantages):
    ratio = torch.tensor([ratios] * len(advantages), dtype=torch.float64)
    old = torch.full_like(ratio, -1.3)
    return old + ratio.log(), old, torch.tensor(advantages, dtype=torch.float64)


def test_surrogate_by_hand():
    ratios, advs = _ratios(0), [2.0, -2.0, 0.0]
    logp, old, adv = _batch(ratios, advs)
    want = expected("surrogate", ratios, advs, 0.2, 0.28, math.inf)
    close(G.clipped_surrogate(logp, old, adv, 0.2, 0.28, math.inf), want,
          "surrogate at ratios 0.5..5 for A = +2, -2, 0 (eps 0.2 / 0.28, no dual-clip)", rtol=1e-6)
    close(G.clipped_surrogate(logp, old, adv[:, None].expand(3, len(ratios)), 0.2, 0.28, math.inf), want,
          "surrogate with per-token (N, T) advantages", rtol=1e-6)


def test_surrogate_gradient_is_zero_where_the_clip_holds():
    ratios, advs = _ratios(1), [2.0, -2.0]
    logp, old, adv = _batch(ratios, advs)
    _, (grad,) = call_grad("grpo:clipped_surrogate", (logp, old, adv, 0.2, 0.28, math.inf), wrt=[0],
                           cotangents={None: torch.ones_like(logp)})
    close(grad, expected("surrogate_gradient", ratios, advs, 0.2, 0.28),
          "gradient of the surrogate w.r.t. logp (A = +2 row, then A = -2)", rtol=1e-6, atol=1e-9)
    far = torch.full((2, 3), 100.0)     # the policy moved far: exp(100) overflows float32
    value, (grad,) = call_grad("grpo:clipped_surrogate", (far, torch.zeros(2, 3), torch.tensor([2.0, -2.0])),
                               wrt=[0], cotangents={None: torch.ones(2, 3)})
    close(value[0], torch.full((3,), -2.4), "surrogate at log-ratio 100 for A = +2 (the clip holds)")
    close(value[1], torch.full((3,), 2 * C_DEFAULT),
          f"surrogate at log-ratio 100 for A = -2 (the default dual-clip bound c = {C_DEFAULT:g} holds)")
    close(grad, torch.zeros(2, 3), "gradient at log-ratio 100 (both bounds hold; it must be 0, not NaN)")


def test_dual_clip_bounds_negative_advantages():
    ratios, advs = _ratios(2), [-2.0, 2.0]
    logp, old, adv = _batch(ratios, advs)
    want = expected("surrogate", ratios, advs, 0.2, 0.2, 3.0)
    got, (grad,) = call_grad("grpo:clipped_surrogate", (logp, old, adv, 0.2, 0.2, 3.0), wrt=[0],
                             cotangents={None: torch.zeros_like(logp).index_put_((torch.tensor(0), torch.tensor(5)),
                                                                               torch.tensor(1.0, dtype=torch.float64))})
    close(got, want, "surrogate with dual_clip c = 3 (A = -2 row, then A = +2)", rtol=1e-6)
    close(grad[0, 5], 0.0, "gradient at ratio 5 > c for A < 0 (the bound holds)", atol=1e-12)
    close(G.clipped_surrogate(logp, old, adv), expected("surrogate", ratios, advs, 0.2, 0.2, C_DEFAULT),
          f"surrogate with the default eps and dual_clip (c = {C_DEFAULT:g})", rtol=1e-6)
