"""P3: the entropy discriminator S_i = pi_i (H + log pi_i), S_* of the sampled token, and
Theorem 1 (entropy.discriminator, entropy.s_star, entropy.theorem1_entropy_change)."""

import torch
from _support import (EPSILONS, POLICIES, close, expected, gen, peaked, policy, quadratic, residual_message,
                      tensor, tokens_to_update)
from worker import student

E = student("entropy")
PROBS = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)


def test_discriminator_contract():
    z = torch.randn(2, 3, 11, generator=gen(0))
    tensor(E.discriminator(z), "discriminator of (2, 3, 11) logits", shape=(2, 3, 11), dtype=torch.float32)
    tensor(E.discriminator(z.bfloat16()), "discriminator of bfloat16 logits", shape=(2, 3, 11), dtype=torch.float32)
    ids = torch.randint(0, 11, (2, 3), generator=gen(1))
    tensor(E.s_star(z, ids), "s_star of (2, 3, 11) logits and (2, 3) ids", shape=(2, 3), dtype=torch.float32)
    tensor(E.s_star(z.double(), ids), "s_star of float64 logits", shape=(2, 3), dtype=torch.float64)


def test_discriminator_three_tokens():
    z = PROBS.log() + torch.rand((), generator=gen(0), dtype=torch.float64)
    want = expected("discriminator", z)
    close(E.discriminator(z), want, "S of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    close(E.s_star(z, torch.tensor(0)), want[0], "S_* of the likely token of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    close(E.s_star(z, torch.tensor(2)), want[2], "S_* of an unlikely token of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    close(E.discriminator(torch.zeros(7)), torch.zeros(7), "S of a uniform policy", atol=1e-7)


def test_s_star_gathers_the_sampled_tokens():
    g = gen(1)
    z = torch.randn(4, 5, 9, generator=g, dtype=torch.float64) * 2
    z[0] *= torch.linspace(0.2, 3.0, 5, dtype=torch.float64)[:, None]    # entropies that differ by position
    ids = torch.randint(0, 9, (4, 5), generator=g)
    close(E.s_star(z, ids), expected("s_star", z, ids), "S_* at the given ids of a (4, 5, 9) batch, each "
          "position with its own entropy H_t", rtol=1e-8, atol=1e-12)


def test_theorem1_by_finite_differences():
    for i, (V, top) in enumerate(POLICIES):
        z = policy(V, top, i)
        h0 = expected("entropy", z)
        for k in tokens_to_update(z):
            e_k = torch.nn.functional.one_hot(torch.tensor(k), V).double()
            changes = [expected("entropy", z + eps * e_k) - h0 for eps in EPSILONS]
            mine = [E.theorem1_entropy_change(z, k, eps) for eps in EPSILONS]
            residuals = [abs(float(c - m)) for c, m in zip(changes, mine, strict=True)]
            if not quadratic(residuals):
                flipped = [abs(float(c + m)) for c, m in zip(changes, mine, strict=True)]
                raise AssertionError(residual_message(f"Theorem 1 on V = {V}, token {k}", residuals, flipped,
                                                     mine[0]))


def test_theorem1_is_the_derivative():
    g = gen(3)
    z = torch.randn(16, 30, generator=g, dtype=torch.float64) * 3
    k = torch.randint(0, 30, (16,), generator=g)
    grad = expected("entropy_gradient", z)
    close(E.theorem1_entropy_change(z, k, 1.0), grad.gather(-1, k[:, None]).squeeze(-1),
          "Theorem 1 with eps = 1 against autograd's dH/dz_k", rtol=1e-8, atol=1e-12)
    close(E.theorem1_entropy_change(z, 3, -0.5), -0.5 * grad[:, 3],
          "Theorem 1 with one int token id and eps = -0.5", rtol=1e-8, atol=1e-12)


def test_discriminator_stable_at_large_logits():
    z = peaked(5, 40, draw=4)
    s = E.discriminator(z)
    tensor(s, "discriminator of logits x 1000", shape=(5, 40))
    if not torch.isfinite(s).all():
        raise AssertionError(f"discriminator of logits x 1000: expected finite values, got {s[~torch.isfinite(s)][:3]}")
    close(s, torch.zeros(5, 40), "discriminator of an almost deterministic policy (logits x 1000)", atol=1e-5)
    close(E.s_star(z, z.argmax(-1)), torch.zeros(5), "S_* of the top token at logits x 1000", atol=1e-5)
