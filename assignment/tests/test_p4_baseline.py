"""P4: the vocabulary baseline E_{i~pi}[S_i], Theorem 2, and Theorem 2 per token of a batch
(entropy.expected_discriminator, entropy.theorem2_entropy_change, entropy.predicted_entropy_change)."""

import torch
from _support import (EPSILONS, POLICIES, close, expected, gen, peaked, policy, quadratic, residual_message,
                      tensor, tokens_to_update)
from worker import student

E = student("entropy")
PROBS = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)


def test_expected_discriminator_three_tokens():
    z = PROBS.log() + torch.rand((), generator=gen(0), dtype=torch.float64)
    close(E.expected_discriminator(z), expected("expected_discriminator", z), "E[S] of pi = (0.5, 0.25, 0.25)",
          rtol=1e-9)
    tensor(E.expected_discriminator(torch.randn(2, 3, 8).bfloat16()), "E[S] of (2, 3, 8) bfloat16 logits",
           shape=(2, 3), dtype=torch.float32)


def test_expected_discriminator_is_the_on_policy_mean():
    # Corollary 1: E_{k~pi}[S_k] = E[S], so E_{k~pi}[S_k - E[S]] = 0, for any policy.
    g = gen(1)
    for scale in (0.1, 1.0, 5.0, 30.0):
        z = torch.randn(8, 200, generator=g, dtype=torch.float64) * scale
        close(E.expected_discriminator(z), expected("expected_discriminator", z),
              f"E[S] against sum_k pi_k S_k (logit scale {scale:g})", rtol=1e-8, atol=1e-14)


def test_theorem2_by_finite_differences():
    for i, (V, top) in enumerate(POLICIES):
        z = policy(V, top, 100 + i)
        pi = torch.softmax(z, -1)
        h0 = expected("entropy", z)
        for k in tokens_to_update(z):
            e_k = torch.nn.functional.one_hot(torch.tensor(k), V).double()
            for sign in (1.0, -1.0):
                changes = [expected("entropy", z + sign * eps * (e_k - pi)) - h0 for eps in EPSILONS]
                mine = [E.theorem2_entropy_change(z, k, sign * eps) for eps in EPSILONS]
                residuals = [abs(float(c - m)) for c, m in zip(changes, mine, strict=True)]
                if not quadratic(residuals):
                    flipped = [abs(float(c + m)) for c, m in zip(changes, mine, strict=True)]
                    raise AssertionError(residual_message(f"Theorem 2 on V = {V}, token {k}, alpha of sign "
                                                          f"{sign:+.0f}", residuals, flipped, mine[0]))


def test_predicted_entropy_change_per_token():
    s = torch.tensor([[0.3, -0.1, 0.2], [0.05, 0.0, -0.4]])
    es = torch.tensor([[0.1, 0.1, 0.1], [0.0, 0.2, -0.1]])
    adv = torch.tensor([2.0, -1.0]) * (1 + torch.rand((), generator=gen(0)).item())
    want = expected("predicted_entropy_change", s, es, adv)
    got = E.predicted_entropy_change(s, es, adv)
    tensor(got, "predicted_entropy_change of (2, 3) inputs", shape=(2, 3), dtype=torch.float64)
    close(got, want, "-A (S* - E[S]) with advantages (2,)", rtol=1e-6, atol=1e-7)
    close(E.predicted_entropy_change(s, es, adv[:, None].expand(2, 3)), want,
          "-A (S* - E[S]) with per-token advantages (2, 3)", rtol=1e-6, atol=1e-7)


def test_baseline_stable_at_large_logits():
    z = peaked(5, 40, draw=4)
    es = E.expected_discriminator(z)
    tensor(es, "E[S] of logits x 1000", shape=(5,))
    close(es, torch.zeros(5), "E[S] of an almost deterministic policy (logits x 1000)", atol=1e-5)
    change = E.theorem2_entropy_change(z, z.argmin(-1), 0.1)
    close(change, torch.zeros(5), "Theorem 2 for the least likely token at logits x 1000", atol=1e-5)
