"""P6: unbiased pass@k (grpo.pass_at_k), against an enumeration of every k-subset of the samples
and exact big-integer binomials, and without binomials in the code (the handout forbids them)."""

import pytest
import torch
from _support import calls_in, close, expected, gen, variant_switches
from worker import call

FORBIDDEN = {"comb", "factorial", "binom", "lgamma", "gammaln", "gamma", "perm"}
C_FIRST = 64 in variant_switches()      # this course's variant: pass_at_k(c, n, k)


def pass_at_k(n: int, c: int, k: int):
    """The student's pass_at_k of n samples, c correct, in the argument order of the tree's variant."""
    return call("grpo:pass_at_k", *((c, n, k) if C_FIRST else (n, c, k)))


def _draw(draw: int, n_min: int, n_max: int) -> tuple[int, int, int]:
    """A case (n, c, k) with n_min <= n <= n_max, 0 <= c <= n, 1 <= k <= n."""
    g = gen(draw)
    n = int(torch.randint(n_min, n_max + 1, (), generator=g))
    return n, int(torch.randint(0, n + 1, (), generator=g)), int(torch.randint(1, n + 1, (), generator=g))


def test_pass_at_k_by_hand():
    # 4 samples, 1 correct: 3 of the 6 pairs hold it.
    close(pass_at_k(4, 1, 2), 0.5, "pass@2 with n = 4 samples, c = 1 correct", rtol=1e-12)
    close(pass_at_k(16, 5, 1), 5 / 16, "pass@1 with n = 16, c = 5", rtol=1e-12)
    close(pass_at_k(16, 0, 4), 0.0, "pass@4 with no correct sample", atol=1e-15)
    close(pass_at_k(16, 13, 4), 1.0, "pass@4 with n - c = 3 < k", rtol=1e-12)
    n, c, k = _draw(0, 8, 60)      # beyond the enumerated cases
    close(pass_at_k(n, c, k), expected("pass_at_k", n, c, k), f"pass@{k} with n = {n}, c = {c}", rtol=1e-12)


def test_pass_at_k_matches_enumeration():
    cases = [(n, c, k) for n in range(1, 8) for c in range(n + 1) for k in range(1, n + 1)]
    cases += [_draw(10 + i, 8, 14) for i in range(6)]
    for n, c, k in cases:
        close(pass_at_k(n, c, k), expected("pass_at_k_enumerated", n, c, k),
              f"pass@{k} with n = {n}, c = {c} (all k-subsets enumerated)", rtol=1e-12, atol=1e-12)


def test_pass_at_k_large_n_and_errors():
    cases = [(500, 3, 100), (1000, 1, 500), (300, 150, 32)] + [_draw(20 + i, 100, 2000) for i in range(3)]
    for n, c, k in cases:
        close(pass_at_k(n, c, k), expected("pass_at_k", n, c, k), f"pass@{k} with n = {n}, c = {c}", rtol=1e-10)
    for n, c, k in ((4, 2, 5), (4, 2, 0), (4, 5, 1)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
    used = calls_in("grpo", "pass_at_k") & FORBIDDEN
    if used:
        raise AssertionError(f"pass_at_k calls {sorted(used)}: the handout asks for pass@k without forming "
                             "binomials (a product of ratios, term by term)")
