"""P6: unbiased pass@k (grpo.pass_at_k), against an enumeration of every k-subset of the samples
(tests/test_eval.py) and exact binomials."""

from fractions import Fraction
from math import comb

import pytest
from _support import close

from grpo import pass_at_k
from tests.test_eval import enumerated_pass_at_k


def test_pass_at_k_by_hand():
    # 4 samples, 1 correct: 3 of the 6 pairs hold it.
    close(pass_at_k(4, 1, 2), 0.5, "pass@2 with n = 4 samples, c = 1 correct", rtol=1e-12)
    close(pass_at_k(16, 5, 1), 5 / 16, "pass@1 with n = 16, c = 5", rtol=1e-12)
    close(pass_at_k(16, 0, 4), 0.0, "pass@4 with no correct sample", atol=1e-15)
    close(pass_at_k(16, 13, 4), 1.0, "pass@4 with n - c = 3 < k", rtol=1e-12)


def test_pass_at_k_matches_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                close(pass_at_k(n, c, k), float(enumerated_pass_at_k(n, c, k)),
                      f"pass@{k} with n = {n}, c = {c} (all k-subsets enumerated)", rtol=1e-12, atol=1e-12)


def test_pass_at_k_large_n_and_errors():
    for n, c, k in ((500, 3, 100), (1000, 1, 500), (300, 150, 32)):
        exact = 1 - Fraction(comb(n - c, k), comb(n, k))
        close(pass_at_k(n, c, k), float(exact), f"pass@{k} with n = {n}, c = {c}", rtol=1e-10)
    for n, c, k in ((4, 2, 5), (4, 2, 0), (4, 5, 1)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
