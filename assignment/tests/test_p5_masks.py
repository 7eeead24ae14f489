"""P5: the Clip-B and Clip-V masks as released (clipping.clip_b_mask, clipping.clip_v_mask and
the rule they share). The hand-made batches are the repository's (tests/test_clipping.py), whose
comments work out the kept sets; the random batches are checked against its independent
statements of the authors' released rules."""

import math

import torch
from _support import close, positions, tensor, variant_switches

from clipping import clip_b_mask, clip_v_mask
from tests.test_clipping import (MASK_B, S_B, SIGMA_B, _clip_v_batch, _random_clip_batch, _released_clip_b,
                                 _released_clip_v)

KEEPS_ZERO = 2 in variant_switches()   # this course's variant: Clip-V keeps A = 0 tokens


def _same(keep, expected, what):
    tensor(keep, what + ": keep", shape=expected.shape, dtype=torch.bool)
    got, want = set(positions(keep)), set(positions(expected))
    if got != want:
        raise AssertionError(f"{what}: removed {sorted(want - got) or 'nothing more'} expected too, "
                             f"kept {sorted(got - want) or 'nothing more'} that should go "
                             f"(expected {len(want)} kept, got {len(got)})")


def test_mask_contract():
    adv = torch.tensor([-1.0, 1.0])
    for name, out in (("clip_b_mask", clip_b_mask(S_B, adv, MASK_B, mu=2.0)),
                      ("clip_v_mask", clip_v_mask(S_B, S_B * 0.5, adv, MASK_B, mu=2.0))):
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
            raise AssertionError(f"{name}: expected a (keep, metrics) pair, got {type(out).__name__}")
        keep, metrics = out
        tensor(keep, f"{name} keep", shape=(2, 5), dtype=torch.bool)
        if keep[1, 4]:
            raise AssertionError(f"{name}: the padding position (1, 4) must never be kept, got kept")
        wanted = {"masked_frac", "masked_frac_pos", "masked_frac_neg", "clip_center", "clip_sigma"}
        if not wanted <= set(metrics):
            raise AssertionError(f"{name}: metrics expected keys {sorted(wanted)}, got {sorted(metrics)}")
    constant = torch.full((3, 4), 0.3)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [False] * 4])
    adv = torch.tensor([-1.0, -2.0, 1.0])
    _same(clip_b_mask(constant, adv, mask, mu=0.0, mu_pos=0.0)[0], mask, "clip_b_mask on a constant batch")
    _same(clip_v_mask(constant, constant - 0.1, adv, mask, mu=0.0, mu_pos=0.0)[0], mask,
          "clip_v_mask on a constant batch")


def test_clip_b_by_hand():
    adv = torch.tensor([-1.0, 1.0])
    keep, m = clip_b_mask(S_B, adv, MASK_B, mu=2.0)
    close(m["clip_center"], 1.0, "Clip-B centre (mean S* over the 9 valid tokens)")
    close(m["clip_sigma"], SIGMA_B, "Clip-B sigma (population std of S* over valid tokens)")
    _same(keep, MASK_B & ~torch.tensor([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool),
          "Clip-B at mu = 2 (the A < 0 token at -2.12 sigma goes)")
    close(m["masked_frac"], 1 / 9, "Clip-B masked_frac at mu = 2")
    close(m["masked_frac_neg"], 1 / 5, "Clip-B masked_frac_neg at mu = 2")
    _same(clip_b_mask(S_B, adv, MASK_B, mu=2.5)[0], MASK_B, "Clip-B at mu = 2.5 (nothing beyond 2.5 sigma)")
    _same(clip_b_mask(S_B, torch.tensor([1.0, 1.0]), MASK_B, mu=0.1)[0], MASK_B,
          "Clip-B with A > 0 everywhere and mu_pos off")


def test_clip_v_deviation_is_not_recentred():
    s_star, es, mask = _clip_v_batch()
    adv = torch.tensor([-1.0, -1.0])
    keep, m = clip_v_mask(s_star, es, adv, mask, mu=2.6)
    close(m["clip_sigma"], math.sqrt(128) / 9, "Clip-V sigma (population std of d = S* - E[S])", rtol=1e-5)
    _same(keep, mask, "Clip-V at mu = 2.6: d = -3 is above -2.6 sigma = -3.27")
    removed = torch.zeros_like(mask)
    removed[0, 4] = True
    _same(clip_v_mask(s_star, es, adv, mask, mu=2.3)[0], mask & ~removed, "Clip-V at mu = 2.3: d = -3 goes")


def test_zero_advantage_tokens():
    d = torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, 1, -3, 0], [1, 1, 1, -3, 0]], dtype=torch.float64)
    valid = torch.tensor([[True] * 5, [True] * 4 + [False], [True] * 4 + [False]])
    adv = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    neg_only = valid.clone()
    neg_only[2, 3] = False
    both = neg_only.clone()
    both[1, 3] = False
    _same(clip_b_mask(d, adv, valid, mu=1.0)[0], neg_only, "Clip-B keeps the A = 0 token at d = -3")
    _same(clip_v_mask(d, torch.zeros_like(d), adv, valid, mu=1.0)[0], neg_only if KEEPS_ZERO else both,
          "Clip-V on an A = 0 token at d = -3" + (" (this variant keeps it)" if KEEPS_ZERO else " (released: removed)"))


def test_upper_rule_and_cap():
    d = torch.tensor([[0.0] * 16 + [-5, -6, -7, -8, 9]])
    adv = torch.tensor([[-1.0] * 20 + [1.0]])
    mask = torch.ones_like(d, dtype=torch.bool)
    es = torch.zeros_like(d)

    def without(*cols):
        out = mask.clone()
        out[0, list(cols)] = False
        return out

    _same(clip_v_mask(d, es, adv, mask, mu=1.0)[0], without(16, 17, 18, 19), "Clip-V at mu = 1, mu_pos off")
    _same(clip_v_mask(d, es, adv, mask, mu=1.0, mu_pos=1.0)[0], without(16, 17, 18, 19, 20),
          "Clip-V at mu = mu_pos = 1 (the A > 0 token at +9 goes too)")
    _same(clip_v_mask(d, es, adv, mask, mu=1.0, mu_pos=1.0, max_frac=0.1)[0], without(18, 19, 20),
          "Clip-V with cap max_frac = 0.1 (2 of 21 tokens: the two most negative d)")
    _same(clip_b_mask(d, adv, mask, mu=1.0, max_frac=1e-4)[0], without(19),
          "Clip-B with cap 1e-4 (at least one token: the most negative d)")


def test_masks_equal_the_released_rules():
    for seed in range(12):
        s, es, adv, valid = _random_clip_batch(seed, constant=seed == 0)
        for mu in (0.5, 1.0, 2.5):
            _same(clip_b_mask(s, adv, valid, mu)[0], _released_clip_b(s, adv, valid, mu),
                  f"Clip-B against the released rule (random batch seed {seed}, mu {mu})")
            for max_frac in (1.0, 0.02):
                expected = _released_clip_v(s, es, adv, valid, mu, max_frac)
                if KEEPS_ZERO:
                    expected = expected | (valid & (adv == 0))
                _same(clip_v_mask(s, es, adv, valid, mu, max_frac=max_frac)[0], expected,
                      f"Clip-V against the released rule (random batch seed {seed}, mu {mu}, cap {max_frac})")
