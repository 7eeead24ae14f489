"""Variants of the assignment (make_student.py --variant N), so that a copy of the public
reference does not earn the points: each switch changes one convention in the student version's
docstrings, the graded tests follow it (assignment/tests/_support.py reads assignment/variant.json),
and the reference implementation, unchanged, fails them. Left out of the student version: the
`solution` patches below are lines of the reference.

Variant N switches on the switches whose bit is set in N (1: population-std advantages, 2: Clip-V
keeps A = 0 tokens, 4: Clip-B's sigma is the sample std, 8: dual-clip c = 2, 16: entropy in bits,
32: seq-mean-token-mean over every sequence, 64: pass_at_k(c, n, k); 127: all seven, under which
the public reference earns at most half of P1, P2, P5 and P6). `from_student` derives a variant
from a student id: whole problems' sets of switches (PROBLEM_SETS), at least two problems.
Each switch lists:
  problem:    the problem whose graded tests it changes;
  docs:       (file, old, new) substitutions made in the student version (each must match);
  solution:   (file, old, new) substitutions that turn the reference into the variant's solution
              (tests/test_assignment.py grades it; instructors can do the same);
  tests:      (file, old, new) substitutions, each at every place old occurs, that make the
              repository's own tests follow the variant (optional);
  deselect:   repository tests that assert the released convention, deselected in that version.
"""

from __future__ import annotations

import hashlib
import itertools

# pass_at_k's callers in the code students do not write, under switch 64
PASS_AT_K_CALLERS = [
    ("eval.py", "grpo.pass_at_k(n, c, k) for c in correct", "grpo.pass_at_k(c, n, k) for c in correct"),
    ("grpo.py", "mean = pass_at_k(n, c, k)", "mean = pass_at_k(c, n, k)"),
]

SWITCHES = {
    1: {
        "problem": "P2",
        "name": "population-std advantages",
        "summary": "group_advantages divides by the population std of the group (divide by G, "
                   "torch's correction=0), not the sample std; a group of one still gets A = r.",
        "docs": [
            ("grpo.py", "one per response, shared\n    by all of its tokens.\n",
             "one per response, shared\n    by all of its tokens. THIS COURSE'S VARIANT: std is the POPULATION\n"
             "    std of the group (sum of squared deviations divided by G, not G - 1); a group of one still\n"
             "    gets A = r.\n"),
            ("grpo.py", "* std is unbiased (torch default), as in the authors' release",
             "* std: THIS COURSE'S VARIANT uses the population std (see group_advantages); the authors'\n"
             "  release uses the unbiased one (torch's default)"),
        ],
        "solution": [("grpo.py", "r.mean(-1, keepdim=True), r.std(-1, keepdim=True)",
                      "r.mean(-1, keepdim=True), r.std(-1, keepdim=True, correction=0)")],
        "deselect": ["tests/test_grpo.py::test_group_advantages"],
    },
    2: {
        "problem": "P5",
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
        "problem": "P5",
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
        "problem": "P2",
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
    16: {
        "problem": "P1",
        "name": "entropy in bits",
        "summary": "entropy.entropy returns H in bits (log base 2: the nats divided by ln 2); "
                   "_entropy_from_log_probs, which S_i and the theorems use, stays in nats.",
        "docs": [
            ("entropy.py", "of pi = softmax(logits), in nats.\n",
             "of pi = softmax(logits). THIS COURSE'S VARIANT:\n"
             "    in BITS (log base 2, i.e. the nats of _entropy_from_log_probs divided by ln 2);\n"
             "    _entropy_from_log_probs, which S_i, E[S] and the theorems use, stays in nats.\n"),
        ],
        "solution": [("entropy.py", "    return _entropy_from_log_probs(_log_probs(logits))\n",
                      "    return _entropy_from_log_probs(_log_probs(logits)) / math.log(2)\n")],
        # the repository's entropy tests read entropy.entropy as nats: they convert it back
        "tests": [("tests/test_entropy.py", "E.entropy(", "entropy_nats("),
                  ("tests/test_entropy.py", "import entropy as E\n",
                   "import entropy as E\n\n\ndef entropy_nats(logits):\n"
                   "    \"\"\"THIS COURSE'S VARIANT: entropy.entropy is in bits; these tests check nats.\"\"\"\n"
                   "    return E.entropy(logits) * math.log(2)\n")],
        "deselect": [],
    },
    32: {
        "problem": "P1",
        "name": "seq-mean over every sequence",
        "summary": "aggregate's seq-mean-token-mean divides by every sequence of the batch (N; one "
                   "with no kept token adds 0), not only by those with a kept token.",
        "docs": [
            ("grpo.py", "                               num_seqs = sequences with at least one kept token",
             "                               num_seqs = sequences with at least one kept token;\n"
             "                               THIS COURSE'S VARIANT: num_seqs = EVERY sequence (N), one with\n"
             "                               no kept token adding 0 to the sum"),
        ],
        "solution": [("grpo.py", "(seq_count > 0).sum() if num_seqs is None else num_seqs",
                      "token_loss.shape[0] if num_seqs is None else num_seqs")],
        "deselect": ["tests/test_grpo.py::test_aggregate_modes_by_hand"],
    },
    64: {
        "problem": "P6",
        "name": "pass_at_k(c, n, k)",
        "summary": "pass_at_k takes the number of correct samples first: pass_at_k(c, n, k); its "
                   "callers in eval.py and grpo.passk_advantages follow.",
        "docs": [
            ("grpo.py", "def pass_at_k(n: int, c: int, k: int) -> float:\n"
                        "    \"\"\"Unbiased pass@k of one problem with n samples, c of them correct:",
             "def pass_at_k(c: int, n: int, k: int) -> float:\n"
             "    \"\"\"THIS COURSE'S VARIANT: the arguments are (c, n, k), the number of CORRECT samples\n"
             "    first. Unbiased pass@k of one problem with n samples, c of them correct:"),
            *PASS_AT_K_CALLERS,
            ("methods.py", "grpo.pass_at_k(2, 1, 1)", "grpo.pass_at_k(1, 2, 1)"),
        ],
        "solution": [("grpo.py", "def pass_at_k(n: int, c: int, k: int) -> float:",
                      "def pass_at_k(c: int, n: int, k: int) -> float:"), *PASS_AT_K_CALLERS],
        "deselect": ["tests/test_eval.py::test_pass_at_k_matches_enumeration_of_all_subsets",
                     "tests/test_eval.py::test_pass_at_k_edge_cases"],
    },
}
VARIANTS = range(0, 2 * max(SWITCHES))


def switches(variant: int) -> list[int]:
    """The switches of variant N (its set bits)."""
    if variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {', '.join(map(str, VARIANTS))}, got {variant}.")
    return [bit for bit in SWITCHES if variant & bit]


# Each problem's switches, all on together: measured on the public reference, one switch of P1,
# P2 or P5 alone leaves it 60-80% of that problem's points, all of them at most half
# (INSTRUCTORS.md), so a derived variant varies whole problems, never single switches.
PROBLEM_SETS = {problem: sum(bit for bit, s in SWITCHES.items() if s["problem"] == problem)
                for problem in sorted({s["problem"] for s in SWITCHES.values()})}
# the variants a student id can get: every union of two or more problems' sets
DERIVED = sorted(sum(PROBLEM_SETS[p] for p in chosen) for r in range(2, len(PROBLEM_SETS) + 1)
                 for chosen in itertools.combinations(PROBLEM_SETS, r))


def from_student(student_id: str) -> int:
    """One of DERIVED, the same for the same id on any machine (SHA-256 of the id, stripped): at
    least two problems varied, each with all of its switches, so that the public reference
    earns at most half of every problem the variant changes."""
    digest = hashlib.sha256(student_id.strip().encode()).digest()
    return DERIVED[int.from_bytes(digest[:8], "big") % len(DERIVED)]


def substitute(text: str, old: str, new: str, where: str, every: bool = False) -> str:
    """text with old replaced by new: exactly once, or with every=True at every place it occurs
    (at least one); a clear error otherwise (the reference changed)."""
    if text.count(old) != 1 and not (every and old in text):
        raise RuntimeError(f"variant text not found {'' if every else 'exactly once '}in {where} (the reference "
                           f"changed?): {old[:60]!r}; update assignment/variants.py")
    return text.replace(old, new)
