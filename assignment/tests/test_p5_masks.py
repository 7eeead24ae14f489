"""P5: the Clip-B and Clip-V masks as released (clipping.clip_b_mask, clipping.clip_v_mask and
the rule they share), on hand-made batches whose kept sets are worked out in the comments, moved
by an affine map of S* and E[S] that leaves every mask unchanged, and on random batches against
the authors' released rules."""

import math

import torch
from _support import close, expected, gen, positions, random_clip_batch, tensor, variant_switches
from worker import student

C = student("clipping")
KEEPS_ZERO = 2 in variant_switches()   # this course's variant: Clip-V keeps A = 0 tokens

# Clip-B batch: 2 responses x 5 positions; the last position of response 1 is padding whose
# huge S* (99) would wreck the statistics if it were counted.
# Valid S*: 1 1 1 1 -7 | 1 1 1 9  -> n = 9, mean 1, deviations 0 0 0 0 -8 | 0 0 0 8,
# population sigma = sqrt(128 / 9) = 3.771 (sample sigma 4), so the two outliers sit at -2.12 and
# +2.12 sigma (-2 and +2 with the sample sigma).
S_B = torch.tensor([[1.0, 1, 1, 1, -7], [1, 1, 1, 9, 99]])
MASK_B = torch.tensor([[True] * 5, [True] * 4 + [False]])
SIGMA_B = math.sqrt(128 / 8) if 4 in variant_switches() else math.sqrt(128 / 9)   # sample std in the variant


def _affine(draw: int) -> tuple[float, float]:
    """x -> a x + b with a > 0: the same masks, centre a c + b, sigma a sigma."""
    a, b = (torch.rand(2, generator=gen(draw), dtype=torch.float64) * torch.tensor([1.5, 2.0])
            + torch.tensor([0.5, -1.0])).tolist()
    return a, b


# Clip-V: d = S* - E[S] valid values 1 (x8) and -3 -> mean 5/9, population sigma = sqrt(128)/9
# = 1.2571. The rule uses d itself, not d - mean: at mu = 2.6 the threshold is -3.268, so d = -3
# is kept (re-centred it would be -3.556 and removed); at mu = 2.3 (-2.891) it is removed.
def _clip_v_batch():
    d = torch.tensor([[1.0, 1, 1, 1, -3], [1, 1, 1, 1, -50]])
    es = torch.rand(2, 5, generator=gen(90))
    mask = torch.tensor([[True] * 5, [True] * 4 + [False]])
    return d + es, es, mask


def _same(keep, want, what):
    """keep equals the expected mask, or a message naming the positions each way, in plain words."""
    tensor(keep, what + ": keep", shape=want.shape, dtype=torch.bool)
    got, wanted = set(positions(keep)), set(positions(want))
    if got != wanted:
        parts = []
        if got - wanted:
            parts.append(f"your mask keeps {sorted(got - wanted)[:8]}, which the rule removes")
        if wanted - got:
            parts.append(f"your mask removes {sorted(wanted - got)[:8]}, which the rule keeps")
        raise AssertionError(f"{what}: {'; '.join(parts)} ({len(wanted)} tokens kept expected, {len(got)} kept)")


def test_mask_contract():
    adv = torch.tensor([-1.0, 1.0])
    for name, out in (("clip_b_mask", C.clip_b_mask(S_B, adv, MASK_B, mu=2.0)),
                      ("clip_v_mask", C.clip_v_mask(S_B, S_B * 0.5, adv, MASK_B, mu=2.0))):
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
    _same(C.clip_b_mask(constant, adv, mask, mu=0.0, mu_pos=0.0)[0], mask, "clip_b_mask on a constant batch")
    _same(C.clip_v_mask(constant, constant - 0.1, adv, mask, mu=0.0, mu_pos=0.0)[0], mask,
          "clip_v_mask on a constant batch")
    s, es, adv, valid = random_clip_batch(1)
    for name, keep in (("clip_b_mask", C.clip_b_mask(s, adv, valid, 0.5)[0]),
                       ("clip_v_mask", C.clip_v_mask(s, es, adv, valid, 0.5)[0])):
        outside = positions(tensor(keep, f"{name} keep of a random batch", shape=valid.shape) & ~valid)
        if outside:
            raise AssertionError(f"{name} on a random batch: padding must never be kept, got kept at {outside[:5]}")


def test_clip_b_by_hand():
    a, b = _affine(0)
    s_b = S_B * a + b
    adv = torch.tensor([-1.0, 1.0])
    keep, m = C.clip_b_mask(s_b, adv, MASK_B, mu=1.9)
    close(m["clip_center"], a + b, f"Clip-B centre (mean S* over the 9 valid tokens; S* = {a:.4g} x + {b:.4g})")
    close(m["clip_sigma"], a * SIGMA_B, "Clip-B sigma (std of S* over valid tokens)")
    _same(keep, MASK_B & ~torch.tensor([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool),
          "Clip-B at mu = 1.9 (the A < 0 token at -8 goes)")
    close(m["masked_frac"], 1 / 9, "Clip-B masked_frac at mu = 1.9")
    close(m["masked_frac_neg"], 1 / 5, "Clip-B masked_frac_neg at mu = 1.9")
    _same(C.clip_b_mask(s_b, adv, MASK_B, mu=2.5)[0], MASK_B, "Clip-B at mu = 2.5 (nothing beyond 2.5 sigma)")
    _same(C.clip_b_mask(s_b, torch.tensor([1.0, 1.0]), MASK_B, mu=0.1)[0], MASK_B,
          "Clip-B with A > 0 everywhere and mu_pos off")


def test_clip_v_deviation_is_not_recentred():
    s_star, es, mask = _clip_v_batch()
    a, b = _affine(1)
    s_star, es = s_star * a + b, es * a + b
    adv = torch.tensor([-1.0, -1.0])
    keep, m = C.clip_v_mask(s_star, es, adv, mask, mu=2.6)
    close(m["clip_sigma"], a * math.sqrt(128) / 9, "Clip-V sigma (population std of d = S* - E[S])", rtol=1e-5)
    _same(keep, mask, "Clip-V at mu = 2.6: d = -3 is above -2.6 sigma = -3.27")
    removed = torch.zeros_like(mask)
    removed[0, 4] = True
    _same(C.clip_v_mask(s_star, es, adv, mask, mu=2.3)[0], mask & ~removed, "Clip-V at mu = 2.3: d = -3 goes")


def test_zero_advantage_tokens():
    a, b = _affine(2)
    d = torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, 1, -3, 0], [1, 1, 1, -3, 0]], dtype=torch.float64) * a + b
    valid = torch.tensor([[True] * 5, [True] * 4 + [False], [True] * 4 + [False]])
    adv = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    neg_only = valid.clone()
    neg_only[2, 3] = False
    both = neg_only.clone()
    both[1, 3] = False
    _same(C.clip_b_mask(d, adv, valid, mu=1.0)[0], neg_only, "Clip-B keeps the A = 0 token at d = -3")
    _same(C.clip_v_mask(d, torch.full_like(d, b), adv, valid, mu=1.0)[0], neg_only if KEEPS_ZERO else both,
          "Clip-V on an A = 0 token at d = -3" + (" (this variant keeps it)" if KEEPS_ZERO else " (released: removed)"))


def test_upper_rule_and_cap():
    a, b = _affine(3)
    d = torch.tensor([[0.0] * 16 + [-5, -6, -7, -8, 9]], dtype=torch.float64) * a + b
    adv = torch.tensor([[-1.0] * 20 + [1.0]])
    mask = torch.ones_like(d, dtype=torch.bool)
    es = torch.full_like(d, b)

    def without(*cols):
        out = mask.clone()
        out[0, list(cols)] = False
        return out

    _same(C.clip_v_mask(d, es, adv, mask, mu=1.0)[0], without(16, 17, 18, 19), "Clip-V at mu = 1, mu_pos off")
    _same(C.clip_v_mask(d, es, adv, mask, mu=1.0, mu_pos=1.0)[0], without(16, 17, 18, 19, 20),
          "Clip-V at mu = mu_pos = 1 (the A > 0 token at +9 goes too)")
    _same(C.clip_v_mask(d, es, adv, mask, mu=1.0, mu_pos=1.0, max_frac=0.1)[0], without(18, 19, 20),
          "Clip-V with cap max_frac = 0.1 (2 of 21 tokens: the two most negative d)")
    _same(C.clip_b_mask(d, adv, mask, mu=1.0, max_frac=1e-4)[0], without(19),
          "Clip-B with cap 1e-4 (at least one token: the most negative d)")


def test_masks_equal_the_released_rules():
    for draw in range(12):
        s, es, adv, valid = random_clip_batch(10 + draw, constant=draw == 0)
        for mu in (0.5, 1.0, 2.5):
            _same(C.clip_b_mask(s, adv, valid, mu)[0], expected("clip_b", s, adv, valid, mu),
                  f"Clip-B against the released rule (random batch {draw}, mu {mu})")
            for max_frac in (1.0, 0.02):
                _same(C.clip_v_mask(s, es, adv, valid, mu, max_frac=max_frac)[0],
                      expected("clip_v", s, es, adv, valid, mu, max_frac),
                      f"Clip-V against the released rule (random batch {draw}, mu {mu}, cap {max_frac})")
