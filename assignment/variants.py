"""Variants of the assignment (make_student.py --variant N), so that a copy of the public
reference does not earn the points: each switch changes one convention in the student version's
docstrings, the graded tests follow it (assignment/tests/_support.py reads assignment/variant.json),
and the reference implementation, unchanged, fails them. Left out of the student version: the
`solution` patches below are lines of the reference.

Variant N switches on the switches whose bit is set in N (1: population-std advantages, 2: Clip-V
keeps A = 0 tokens, 4: Clip-B's sigma is the sample std, 8: dual-clip c = 2; 15: all four, under
which the public reference earns at most half of P2 and of P5). Each switch lists:
  docs:       (file, old, new) substitutions made in the student version (each must match);
  solution:   (file, old, new) substitutions that turn the reference into the variant's solution
              (tests/test_assignment.py grades it; instructors can do the same);
  deselect:   repository tests that assert the released convention, deselected in that version.
"""

from __future__ import annotations

SWITCHES = {
    1: {
        "name": "population-std advantages",
        "summary": "group_advantages divides by the population std of the group (divide by G, "
                   "torch's correction=0), not the sample std; a group of one still gets A = r.",
        "docs": [
            ("grpo.py", "GRPO advantages. rewards: (N,), responses of one prompt contiguous in groups of\n"
                        "    group_size. Returns (N,) float32: (r - group mean) / (group std + 1e-6), or r - mean\n"
                        "    when scale_std is False.",
             "GRPO advantages. rewards: (N,), responses of one prompt contiguous in groups of\n"
             "    group_size. Returns (N,) float32: (r - group mean) / (group std + 1e-6), or r - mean\n"
             "    when scale_std is False. THIS COURSE'S VARIANT: std is the POPULATION std of the group\n"
             "    (sum of squared deviations divided by G, not G - 1); a group of one still gets A = r."),
            ("grpo.py", "* std is unbiased (torch default), as in the authors' release",
             "* std: THIS COURSE'S VARIANT uses the population std (see group_advantages); the authors'\n"
             "  release uses the unbiased one (torch's default)"),
        ],
        "solution": [("grpo.py", "r.mean(-1, keepdim=True), r.std(-1, keepdim=True)",
                      "r.mean(-1, keepdim=True), r.std(-1, keepdim=True, correction=0)")],
        "deselect": ["tests/test_grpo.py::test_group_advantages"],
    },
    2: {
        "name": "Clip-V keeps A = 0 tokens",
        "summary": "clip_v_mask keeps every token with A = 0, as Clip-B does (the release sends them "
                   "through the lower rule); only A < 0 tokens go through it.",
        "docs": [
            ("clipping.py", "so Clip-V removes an A = 0 token far below.",
             "so Clip-V removes an A = 0 token far below.\n  THIS COURSE'S VARIANT: Clip-V keeps A = 0 tokens "
             "too, like Clip-B (see clip_v_mask)."),
            ("clipping.py", "token that is not A > 0 (A = 0 included) goes through the lower rule.",
             "token that is not A > 0 (A = 0 included) goes through the lower rule. THIS COURSE'S\n"
             "    VARIANT: A = 0 tokens are KEPT, as in Clip-B; only A < 0 tokens go through the lower rule."),
        ],
        "solution": [("clipping.py", "return _discriminator_clip(d, sigma, advantages, valid, mu, mu_pos, "
                                     "max_frac, center,\n                               zero_advantage_lower=True)",
                      "return _discriminator_clip(d, sigma, advantages, valid, mu, mu_pos, max_frac, center,\n"
                      "                               zero_advantage_lower=False)")],
        "deselect": ["tests/test_clipping.py::test_masks_equal_the_released_rules_on_random_batches",
                     "tests/test_clipping.py::test_clip_v_removes_zero_advantage_tokens_and_never_caps_them"],
    },
    4: {
        "name": "Clip-B's sigma is the sample std",
        "summary": "clip_b_mask's sigma is the SAMPLE std of S* over the valid tokens (divide by n - 1; 0 "
                   "for one token), not the population std; Clip-V's stays the population std of d.",
        "docs": [
            ("clipping.py", "    \"\"\"Clip-B: d_t = S*_t - mean(S*) over the batch, sigma = population std of S*.",
             "    \"\"\"Clip-B: d_t = S*_t - mean(S*) over the batch, sigma = population std of S*. THIS COURSE'S\n"
             "    VARIANT: sigma is the SAMPLE std of S* over the valid tokens (divide by n - 1; 0 for one)."),
            ("clipping.py", "* Clip-B (batch baseline):      d_t = S*_t - mean(S*),  sigma = population std of S*",
             "* Clip-B (batch baseline):      d_t = S*_t - mean(S*),  sigma = the SAMPLE std of S* (THIS\n"
             "  COURSE'S VARIANT; the release's is the population std)"),
        ],
        "solution": [("clipping.py",
                      "    center, sigma = _valid_mean_std(s_star, valid)\n    return _discriminator_clip(",
                      "    center, sigma = _valid_mean_std(s_star, valid)\n"
                      "    sigma = s_star[valid].double().std().item() if int(valid.sum()) > 1 else 0.0\n"
                      "    return _discriminator_clip(")],
        "deselect": ["tests/test_clipping.py::test_clip_b_removes_negative_advantage_outlier_below_mu_sigma"],
    },
    8: {
        "name": "dual-clip bound c = 2",
        "summary": "clipped_surrogate's default dual-clip bound is c = 2.0 (DUAL_CLIP), not verl's 3.0.",
        "docs": [("grpo.py", "DUAL_CLIP = 3.0     # verl's clip_ratio_c",
                  "DUAL_CLIP = 2.0     # THIS COURSE'S VARIANT: c = 2 (verl's clip_ratio_c is 3)"),
                 ("grpo.py", "at most -c A_t (dual-clip, c = 3)",
                  "at most -c A_t (dual-clip; c = 2 in THIS COURSE'S VARIANT, 3 in verl)")],
        "solution": [("grpo.py", "DUAL_CLIP = 3.0     # verl's clip_ratio_c",
                      "DUAL_CLIP = 2.0     # THIS COURSE'S VARIANT: c = 2 (verl's clip_ratio_c is 3)")],
        "deselect": [],
    },
}
VARIANTS = range(0, 16)


def switches(variant: int) -> list[int]:
    """The switches of variant N (its set bits)."""
    if variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {', '.join(map(str, VARIANTS))}, got {variant}.")
    return [bit for bit in SWITCHES if variant & bit]


def substitute(text: str, old: str, new: str, where: str) -> str:
    """text with old replaced by new exactly once; a clear error when old is gone (the reference changed)."""
    if text.count(old) != 1:
        raise RuntimeError(f"variant text not found exactly once in {where} (the reference changed?): "
                           f"{old[:60]!r}; update assignment/variants.py")
    return text.replace(old, new)
