"""P4: the vocabulary baseline E_{i~pi}[S_i], Theorem 2, and Theorem 2 per token of a batch
(entropy.expected_discriminator, entropy.theorem2_entropy_change, entropy.predicted_entropy_change)."""

import torch
from _support import close, entropy64, naive_discriminator, tensor

import entropy as E
from tests.test_entropy import EPSILONS, POLICIES, _is_quadratic, _policy, _tokens_to_update

PROBS = [0.5, 0.25, 0.25]


def test_expected_discriminator_three_tokens():
    z = torch.tensor(PROBS, dtype=torch.float64).log()
    s = naive_discriminator(PROBS)
    close(E.expected_discriminator(z), sum(p * si for p, si in zip(PROBS, s, strict=True)),
          "E[S] of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    tensor(E.expected_discriminator(torch.randn(2, 3, 8).bfloat16()), "E[S] of (2, 3, 8) bfloat16 logits",
           shape=(2, 3), dtype=torch.float32)


def test_expected_discriminator_is_the_on_policy_mean():
    # Corollary 1: E_{k~pi}[S_k] = E[S], so E_{k~pi}[S_k - E[S]] = 0, for any policy.
    g = torch.Generator().manual_seed(5)
    for scale in (0.1, 1.0, 5.0, 30.0):
        z = torch.randn(8, 200, generator=g, dtype=torch.float64) * scale
        probs = torch.softmax(z, -1)
        on_policy = torch.tensor([sum(p * s for p, s in zip(row, naive_discriminator(row), strict=True))
                                  for row in probs.tolist()], dtype=torch.float64)
        close(E.expected_discriminator(z), on_policy, f"E[S] against sum_k pi_k S_k (logit scale {scale:g})",
              rtol=1e-8, atol=1e-14)


def test_theorem2_by_finite_differences():
    for V, top in POLICIES:
        z = _policy(V, top, seed=3 * V + 7)
        pi = torch.softmax(z, -1)
        for k in _tokens_to_update(z):
            e_k = torch.nn.functional.one_hot(torch.tensor(k), V).double()
            for sign in (1.0, -1.0):
                residuals = [abs((entropy64(z + sign * eps * (e_k - pi)) - entropy64(z)
                                  - E.theorem2_entropy_change(z, k, sign * eps)).item()) for eps in EPSILONS]
                try:
                    _is_quadratic(residuals)
                except AssertionError:
                    raise AssertionError(
                        f"Theorem 2 on V = {V}, token {k}, alpha of sign {sign:+.0f}: the error of your "
                        f"first-order change should fall like alpha^2 (4x per halving); residuals for "
                        f"|alpha| = {EPSILONS}: expected ratios ~4, got {[f'{r:.3g}' for r in residuals]}") from None


def test_predicted_entropy_change_per_token():
    s = torch.tensor([[0.3, -0.1, 0.2], [0.05, 0.0, -0.4]])
    es = torch.tensor([[0.1, 0.1, 0.1], [0.0, 0.2, -0.1]])
    adv = torch.tensor([2.0, -1.0])
    expected = torch.tensor([[-2 * 0.2, -2 * -0.2, -2 * 0.1], [0.05, -0.2, -0.3]], dtype=torch.float64)
    got = E.predicted_entropy_change(s, es, adv)
    tensor(got, "predicted_entropy_change of (2, 3) inputs", shape=(2, 3), dtype=torch.float64)
    close(got, expected, "-A (S* - E[S]) with advantages (2,)", rtol=1e-6, atol=1e-7)
    close(E.predicted_entropy_change(s, es, adv[:, None].expand(2, 3)), expected,
          "-A (S* - E[S]) with per-token advantages (2, 3)", rtol=1e-6, atol=1e-7)


def test_baseline_stable_at_large_logits():
    g = torch.Generator().manual_seed(6)
    z = torch.randn(5, 40, generator=g) * 1000
    es = E.expected_discriminator(z)
    tensor(es, "E[S] of logits x 1000", shape=(5,))
    close(es, torch.zeros(5), "E[S] of an almost deterministic policy (logits x 1000)", atol=1e-5)
    ids = z.argmin(-1)
    change = E.theorem2_entropy_change(z, ids, 0.1)
    close(change, torch.zeros(5), "Theorem 2 for the least likely token at logits x 1000", atol=1e-5)
