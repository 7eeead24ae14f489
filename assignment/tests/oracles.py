"""The graded tests' expected values (instructor's tree only: make_student.py leaves this file
out and stores its values for the public inputs in expected.pt): naive float64 statements of
the paper's formulas and of the authors' released rules, written independently of the code
under test. Each takes the inputs a test drew and returns a tensor or a number."""

from __future__ import annotations

import itertools
import math
import statistics
from fractions import Fraction

import torch
from _support import variant_switches


def entropy(z: torch.Tensor) -> torch.Tensor:
    """H of softmax(z) in float64 (entr(p) = -p log p)."""
    return torch.special.entr(torch.softmax(z.double(), -1)).sum(-1)


def discriminator(z: torch.Tensor) -> torch.Tensor:
    """S_i = pi_i (H + log pi_i), float64."""
    logp = torch.log_softmax(z.double(), -1)
    return logp.exp() * (entropy(z)[..., None] + logp)


def s_star(z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return discriminator(z).gather(-1, ids[..., None]).squeeze(-1)


def expected_discriminator(z: torch.Tensor) -> torch.Tensor:
    """E_{i~pi}[S_i] = sum_i pi_i S_i, float64."""
    return (torch.softmax(z.double(), -1) * discriminator(z)).sum(-1)


def predicted_entropy_change(s, es, adv) -> torch.Tensor:
    """Theorem 2 per token, -A_t (S*_t - E[S]_t), float64, for per-response advantages (N,)."""
    return torch.tensor([[-a * (x - y) for x, y in zip(sr, er, strict=True)]
                         for a, sr, er in zip(adv.tolist(), s.tolist(), es.tolist(), strict=True)],
                        dtype=torch.float64)


def entropy_gradient(z: torch.Tensor) -> torch.Tensor:
    """dH/dz by autograd, float64."""
    z = z.detach().double().requires_grad_(True)
    (grad,) = torch.autograd.grad(entropy(z).sum(), z)
    return grad


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, budget: int) -> float:
    """verl's agg_loss formulas: token-mean; seq-mean-token-mean over the sequences with a kept
    token (every sequence, as TRL, under switch 32); seq-mean-token-sum-norm = kept sum / the
    length budget."""
    rows = [[x for x, m in zip(lr, mr, strict=True) if m] for lr, mr in zip(loss.tolist(), mask.tolist(), strict=True)]
    kept = [x for r in rows for x in r]
    if mode == "token-mean":
        return sum(kept) / len(kept) if kept else 0.0
    if mode == "seq-mean-token-mean":       # under switch 32 of the variant: over every sequence
        means = [sum(r) / len(r) if r else 0.0 for r in rows if r or 32 in variant_switches()]
        return sum(means) / len(means) if means else 0.0
    return sum(kept) / budget


def advantages(rewards: list[float], group: int) -> torch.Tensor:
    """Group advantages with the variant's std (sample std, or population std under switch 1)."""
    std = statistics.pstdev if 1 in variant_switches() else statistics.stdev
    out = []
    for start in range(0, len(rewards), group):
        r = rewards[start:start + group]
        if group == 1:
            out += r
            continue
        mean, s = statistics.fmean(r), std(r)
        out += [(x - mean) / (s + 1e-6) for x in r]
    return torch.tensor(out, dtype=torch.float64)


def surrogate(ratios: list[float], advs: list[float], eps_low: float, eps_high: float, c: float) -> torch.Tensor:
    """The clipped surrogate with the dual-clip bound on the grid advs x ratios, float64."""
    def one(rho, a):
        loss = -min(rho * a, min(max(rho, 1 - eps_low), 1 + eps_high) * a)
        return min(loss, -c * a) if a < 0 else loss
    return torch.tensor([[one(r, a) for r in ratios] for a in advs], dtype=torch.float64)


def surrogate_gradient(ratios: list[float], advs: list[float], eps_low: float, eps_high: float) -> torch.Tensor:
    """d loss / d logp without dual-clip: -A rho where the unclipped term is the minimum, else 0."""
    return torch.tensor([[0.0 if (a > 0 and r > 1 + eps_high) or (a < 0 and r < 1 - eps_low) else -a * r
                          for r in ratios] for a in advs], dtype=torch.float64)


def clip_b(s, adv, valid, mu) -> torch.Tensor:
    """The released Clip-B rule (Trinity-RFT clipb_advantage), float64; under switch 4 of the
    variant sigma is the sample std."""
    m = valid.double()
    n = m.sum().clamp_min(1.0)
    mean = (s * m).sum() / n
    dof = (n - 1).clamp_min(1.0) if 4 in variant_switches() else n
    std = (((s - mean) ** 2 * m).sum() / dof).sqrt()
    if std < 1e-12:
        return valid.clone()
    keep = torch.where(adv > 0, True, torch.where(adv < 0, s - mean >= -mu * std, True))
    return keep & valid


def clip_v(s, es, adv, valid, mu, max_frac) -> torch.Tensor:
    """The released Clip-V rule (Trinity-RFT clipv_advantage), float64; under switch 2 of the
    variant A = 0 tokens are kept."""
    x = es - s                                  # the release works with E[S] - S* = -d
    m = valid.double()
    n = m.sum().clamp_min(1.0)
    mean = (x * m).sum() / n
    std = (((x - mean) ** 2 * m).sum() / n).sqrt()
    if std < 1e-12:
        return valid.clone()
    keep_neg = x <= mu * std
    keep = torch.where(adv > 0, True, keep_neg)
    if ((valid & ~keep).sum() / n) > max_frac:
        cap = max(int(max_frac * n.item()), 1)
        negative = (adv < 0) & valid & ~keep_neg
        if int(negative.sum()) > cap:
            top = x.masked_fill(~negative, -math.inf).flatten().topk(cap).indices
            limited = torch.zeros(x.numel(), dtype=torch.bool)
            limited[top] = True
            keep = keep.clone()
            keep[negative] = True
            keep[limited.view_as(x)] = False
    keep = keep & valid
    return keep | (valid & (adv == 0)) if 2 in variant_switches() else keep


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n - c, k) / C(n, k) with exact big-integer binomials."""
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def pass_at_k_enumerated(n: int, c: int, k: int) -> float:
    """The fraction of the k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return float(Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets)))


def token_stats(hidden, weight, ids, temperature) -> dict[str, torch.Tensor]:
    """logp, H, S*, E[S] from the full float64 logits."""
    logp_all = torch.log_softmax(hidden.double() @ weight.double().T / temperature, -1)
    p = logp_all.exp()
    h = -(p * logp_all).sum(-1)
    logp = logp_all.gather(-1, ids[..., None]).squeeze(-1)
    return {"logp": logp, "entropy": h, "s_star": logp.exp() * (h + logp),
            "es": (p * p * (h[..., None] + logp_all)).sum(-1)}


def token_stats_gradients(hidden, weight, ids, temperature, coef_logp, coef_h) -> list[torch.Tensor]:
    """d(sum coef_logp logp + coef_h H) / d(hidden, weight), float64 (coef_h None: H unused)."""
    hidden = hidden.detach().double().requires_grad_(True)
    weight = weight.detach().double().requires_grad_(True)
    st = token_stats(hidden, weight, ids, temperature)
    total = (coef_logp * st["logp"]).sum() + (0.0 if coef_h is None else (coef_h * st["entropy"]).sum())
    return list(torch.autograd.grad(total, (hidden, weight)))
