"""P3: the entropy discriminator S_i = pi_i (H + log pi_i), S_* of the sampled token, and
Theorem 1 (entropy.discriminator, entropy.s_star, entropy.theorem1_entropy_change)."""

import torch
from _support import close, entropy64, naive_discriminator, tensor

import entropy as E
from tests.test_entropy import EPSILONS, POLICIES, _is_quadratic, _policy, _tokens_to_update

PROBS = [0.5, 0.25, 0.25]


def test_discriminator_contract():
    z = torch.randn(2, 3, 11)
    tensor(E.discriminator(z), "discriminator of (2, 3, 11) logits", shape=(2, 3, 11), dtype=torch.float32)
    tensor(E.discriminator(z.bfloat16()), "discriminator of bfloat16 logits", shape=(2, 3, 11), dtype=torch.float32)
    ids = torch.randint(0, 11, (2, 3))
    tensor(E.s_star(z, ids), "s_star of (2, 3, 11) logits and (2, 3) ids", shape=(2, 3), dtype=torch.float32)
    tensor(E.s_star(z.double(), ids), "s_star of float64 logits", shape=(2, 3), dtype=torch.float64)


def test_discriminator_three_tokens():
    z = torch.tensor(PROBS, dtype=torch.float64).log()
    expected = torch.tensor(naive_discriminator(PROBS), dtype=torch.float64)
    close(E.discriminator(z), expected, "S of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    close(E.s_star(z, torch.tensor(0)), expected[0], "S_* of the likely token of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    close(E.s_star(z, torch.tensor(2)), expected[2], "S_* of an unlikely token of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    close(E.discriminator(torch.zeros(7)), torch.zeros(7), "S of a uniform policy", atol=1e-7)


def test_s_star_gathers_the_sampled_tokens():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 5, 9, generator=g, dtype=torch.float64) * 2
    ids = torch.randint(0, 9, (4, 5), generator=g)
    probs = torch.softmax(z, -1)
    expected = torch.tensor([[naive_discriminator(probs[b, t].tolist())[ids[b, t]] for t in range(5)]
                             for b in range(4)], dtype=torch.float64)
    close(E.s_star(z, ids), expected, "S_* at the given ids of a (4, 5, 9) batch", rtol=1e-8, atol=1e-12)


def test_theorem1_by_finite_differences():
    for V, top in POLICIES:
        z = _policy(V, top, seed=2 * V + 7)
        for k in _tokens_to_update(z):
            e_k = torch.nn.functional.one_hot(torch.tensor(k), V).double()
            residuals = [abs((entropy64(z + eps * e_k) - entropy64(z) - E.theorem1_entropy_change(z, k, eps)).item())
                         for eps in EPSILONS]
            try:
                _is_quadratic(residuals)
            except AssertionError:
                raise AssertionError(
                    f"Theorem 1 on V = {V}, token {k}: the error of your first-order change should fall like "
                    f"eps^2 (by 4x per halving of eps); residuals for eps = {EPSILONS}: expected ratios ~4, "
                    f"got {[f'{r:.3g}' for r in residuals]}") from None


def test_theorem1_is_the_derivative():
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(16, 30, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    k = torch.randint(0, 30, (16,), generator=g)
    (grad,) = torch.autograd.grad(entropy64(z).sum(), z)
    close(E.theorem1_entropy_change(z.detach(), k, 1.0), grad.gather(-1, k[:, None]).squeeze(-1),
          "Theorem 1 with eps = 1 against autograd's dH/dz_k", rtol=1e-8, atol=1e-12)
    close(E.theorem1_entropy_change(z.detach(), 3, -0.5), -0.5 * grad[:, 3],
          "Theorem 1 with one int token id and eps = -0.5", rtol=1e-8, atol=1e-12)


def test_discriminator_stable_at_large_logits():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(5, 40, generator=g) * 1000
    s = E.discriminator(z)
    tensor(s, "discriminator of logits x 1000", shape=(5, 40))
    if not torch.isfinite(s).all():
        raise AssertionError(f"discriminator of logits x 1000: expected finite values, got {s[~torch.isfinite(s)][:3]}")
    close(s, torch.zeros(5, 40), "discriminator of an almost deterministic policy (logits x 1000)", atol=1e-5)
    ids = z.argmax(-1)
    close(E.s_star(z, ids), torch.zeros(5), "S_* of the top token at logits x 1000", atol=1e-5)
