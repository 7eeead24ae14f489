"""Token masks that decide which response tokens train: Clip-B and Clip-V (paper section 3),
the entropy-direction filters that test Theorem 2 at model scale, and the other entropy methods
compared side by side (docs/methods.md): forking tokens, Clip-Cov and KL-Cov.

By Theorem 2 a GRPO update of token t changes the entropy by about -alpha_t (S*_t - E[S]_t),
with alpha_t of the sign of the advantage A_t. The paper removes the outlier tokens whose update
lowers entropy the most:

* Clip-B (batch baseline):      d_t = S*_t - mean(S*),  sigma = population std of S*
* Clip-V (vocabulary baseline): d_t = S*_t - E[S]_t,    sigma = population std of d
  (d is not re-centred: Corollary 1 says it already has mean ~0 on-policy)
* remove t if A_t < 0 and d_t < -mu sigma (penalising an unlikely token), or, only when mu_pos
  is finite, if A_t > 0 and d_t > mu_pos sigma (rewarding a likely token).
* A_t = 0 tokens carry no policy gradient but count in the token-mean denominator. As released,
  Clip-B keeps them and Clip-V sends every token that is not A > 0 through the lower rule,
  keep = where(A > 0, True, d >= -mu sigma), so Clip-V removes an A = 0 token far below.

The statistics are over the valid (response_mask) tokens of the whole rollout batch, computed
once from the old policy, in float64; padding never enters them. sigma < 1e-12 keeps every
token. The optional cap max_frac: if more than max(int(max_frac * n_valid), 1) A < 0 tokens
would be removed, only that many are, those with the most negative d (as released, the cap never
limits Clip-V's A = 0 removals, nor the optional upper rule). The comparison methods read the
same batch-wide statistics (forking: the top fraction by H_t; Clip-Cov / KL-Cov: cov_t = (A_t -
mean A)(logp_t - mean logp) of the rollout's old_logp), so every mask is fixed before the batch
is split into micro-batches. How each rule compares with the authors' release and with verl is
in docs/methods.md ("Deviations").

All masks take (N, T) tensors, advantages (N,) or (N, T), response_mask (N, T) bool, and
return (keep (N, T) bool, metrics) with metrics "masked_frac", "masked_frac_pos",
"masked_frac_neg" (removed fraction of all / A > 0 / A < 0 valid tokens), "clip_center" and
"clip_sigma" (the statistic the rule reads: S* or d for Clip-B / V, H for forking, cov for
Clip-Cov / KL-Cov, whose center is the batch covariance). KL-Cov returns the tokens it
penalises instead of a keep mask, and its "masked" fractions count those penalised tokens.
`mismatch_mask` (docs/methods.md) removes the tokens a sampler that differs from the
trainer drew too far from the trainer's probabilities; it is applied on top of any method's mask.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entropy import per_token, predicted_entropy_change

SIGMA_FLOOR = 1e-12


def _frac(removed: Tensor, among: Tensor) -> float:
    n = int(among.sum())
    return int((removed & among).sum()) / n if n else 0.0


def _metrics(keep: Tensor, valid: Tensor, adv: Tensor, center: float, sigma: float) -> dict[str, float]:
    removed = valid & ~keep
    return {"masked_frac": _frac(removed, valid), "masked_frac_pos": _frac(removed, valid & (adv > 0)),
            "masked_frac_neg": _frac(removed, valid & (adv < 0)), "clip_center": center,
            "clip_sigma": sigma}


def _flat_mask(indices: Tensor, like: Tensor) -> Tensor:
    """Bool tensor shaped like `like`, True at the given indices into like.flatten()."""
    flat = torch.zeros(like.numel(), dtype=torch.bool, device=like.device)
    return flat.index_fill_(0, indices, True).view(like.shape)


def _valid_mean_std(x: Tensor, valid: Tensor) -> tuple[float, float]:
    """Mean and population std of x over the valid tokens (0, 0 when there are none)."""
    v = x[valid].double()
    if v.numel() == 0:
        return 0.0, 0.0
    return v.mean().item(), v.std(correction=0).item()


def _discriminator_clip(d: Tensor, sigma: float, advantages: Tensor, response_mask: Tensor, mu: float,
                        mu_pos: float, max_frac: float | None, center: float,
                        zero_advantage_lower: bool) -> tuple[Tensor, dict[str, float]]:
    """The rule shared by Clip-B and Clip-V on the deviation d (N, T) and its scale sigma.
    zero_advantage_lower: A = 0 tokens go through the lower rule too (Clip-V as released)."""
    valid = response_mask.bool()
    adv = per_token(advantages, d)
    if sigma < SIGMA_FLOOR:
        return valid.clone(), _metrics(valid, valid, adv, center, sigma)
    d = d.double()
    lower_side = (adv <= 0) if zero_advantage_lower else (adv < 0)
    lower = valid & lower_side & (d < -mu * sigma)
    negative = lower & (adv < 0)
    if max_frac is not None:   # the cap counts only the A < 0 removals, as released
        cap = max(int(max_frac * int(valid.sum())), 1)
        if int(negative.sum()) > cap:
            top = torch.where(negative, -d, -math.inf).flatten().topk(cap).indices
            lower = (lower & ~negative) | _flat_mask(top, negative)
    upper = valid & (adv > 0) & (d > mu_pos * sigma)
    keep = valid & ~(lower | upper)
    return keep, _metrics(keep, valid, adv, center, sigma)


def clip_b_mask(s_star: Tensor, advantages: Tensor, response_mask: Tensor, mu: float,
                mu_pos: float = math.inf, max_frac: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """Clip-B: d_t = S*_t - mean(S*) over the batch, sigma = population std of S*.

    Args:
        s_star: (N, T) float, S*_t of the old policy (TokenStats.s_star).
        advantages: (N,) per response or (N, T) per token.
        response_mask: (N, T) bool, the valid (non-padding) response tokens.
        mu: the lower threshold, in sigmas (released default 2.5).
        mu_pos: the optional upper threshold for A > 0 tokens (inf: off, as released).
        max_frac: cap on the A < 0 removals as a fraction of the valid tokens (None: no cap).
    Returns:
        (keep, metrics): keep (N, T) bool, the tokens that train; metrics as the module says
        (center: mean S*).
    """
    valid = response_mask.bool()
    center, sigma = _valid_mean_std(s_star, valid)
    return _discriminator_clip(s_star.double() - center, sigma, advantages, valid, mu, mu_pos,
                               max_frac, center, zero_advantage_lower=False)


def clip_v_mask(s_star: Tensor, es: Tensor, advantages: Tensor, response_mask: Tensor, mu: float,
                mu_pos: float = math.inf, max_frac: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """Clip-V: d_t = S*_t - E_{i~pi_t}[S_i] (not re-centred), sigma = population std of d; every
    token that is not A > 0 (A = 0 included) goes through the lower rule.

    Args:
        s_star, es: (N, T) float, S*_t and E[S]_t of the old policy (TokenStats).
        advantages: (N,) per response or (N, T) per token.
        response_mask: (N, T) bool, the valid (non-padding) response tokens.
        mu: the lower threshold, in sigmas (released default 8.5).
        mu_pos: the optional upper threshold for A > 0 tokens (inf: off, as released).
        max_frac: cap on the A < 0 removals as a fraction of the valid tokens (released 1e-4).
    Returns:
        (keep, metrics): keep (N, T) bool, the tokens that train; metrics as the module says
        (center: mean d, reported only).
    """
    valid = response_mask.bool()
    d = s_star.double() - es.double()
    center, sigma = _valid_mean_std(d, valid)
    return _discriminator_clip(d, sigma, advantages, valid, mu, mu_pos, max_frac, center,
                               zero_advantage_lower=True)


def entropy_direction_mask(s_star: Tensor, es: Tensor, advantages: Tensor, response_mask: Tensor,
                           direction: str) -> tuple[Tensor, dict[str, float]]:
    """Keep only tokens whose Theorem-2 entropy change -A_t (S*_t - E[S]_t) is > 0 ("up") or
    < 0 ("down"); tokens with a predicted change of exactly 0 (e.g. A_t = 0) are dropped by both.

    s_star, es, response_mask: (N, T); advantages: (N,) or (N, T). Metrics as for Clip-V
    (center and sigma: mean and population std of S* - E[S] over valid tokens).
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}.")
    valid = response_mask.bool()
    adv = per_token(advantages, s_star)
    predicted = predicted_entropy_change(s_star, es, advantages)
    keep = valid & (predicted > 0 if direction == "up" else predicted < 0)
    center, sigma = _valid_mean_std(s_star.double() - es.double(), valid)
    return keep, _metrics(keep, valid, adv, center, sigma)


def forking_mask(entropy: Tensor, advantages: Tensor, response_mask: Tensor,
                 top_frac: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """Forking tokens: keep the max(int(top_frac * n_valid), 1) valid tokens of highest entropy
    in the whole batch (Wang et al. 2025 keep the top 20%).

    entropy, response_mask: (N, T); advantages: (N,) or (N, T), for the metrics only. Metrics:
    center / sigma: mean and population std of H; "clip_threshold": the lowest kept H.
    """
    if not 0 < top_frac <= 1:
        raise ValueError(f"top_frac must be in (0, 1], got {top_frac}.")
    valid = response_mask.bool()
    adv = per_token(advantages, entropy)
    center, sigma = _valid_mean_std(entropy, valid)
    n_valid = int(valid.sum())
    keep, threshold = torch.zeros_like(valid), 0.0
    if n_valid:
        top = torch.where(valid, entropy.double(), -math.inf).flatten().topk(max(int(top_frac * n_valid), 1))
        keep, threshold = _flat_mask(top.indices, valid), top.values[-1].item()
    return keep, {**_metrics(keep, valid, adv, center, sigma), "clip_threshold": threshold}


def _covariance(logp: Tensor, adv: Tensor, valid: Tensor) -> Tensor:
    """cov_t = (A_t - mean A)(logp_t - mean logp), means over the valid tokens; (N, T) float64."""
    mean_a, _ = _valid_mean_std(adv, valid)
    mean_logp, _ = _valid_mean_std(logp, valid)
    return (adv.double() - mean_a) * (logp.detach().double() - mean_logp)


def _count(ratio: float, n_valid: int) -> int:
    if not 0 < ratio <= 1:
        raise ValueError(f"the covariance ratio must be in (0, 1], got {ratio}.")
    return max(int(ratio * n_valid), 1)


def clip_cov_mask(logp: Tensor, advantages: Tensor, response_mask: Tensor, ratio: float = 2e-4,
                  lb: float = 1.0, ub: float = 5.0,
                  generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """Clip-Cov: remove max(int(ratio * n_valid), 1) tokens drawn uniformly (torch.randperm with
    `generator`, on the CPU) among the valid tokens with lb < cov_t < ub (fewer if fewer qualify).

    logp (the old policy's, i.e. rollout old_logp), response_mask: (N, T); advantages: (N,) or
    (N, T). Metrics: center / sigma: mean (the batch covariance) and population std of cov.
    """
    valid = response_mask.bool()
    adv = per_token(advantages, logp)
    cov = _covariance(logp, adv, valid)
    center, sigma = _valid_mean_std(cov, valid)
    candidates = (valid & (cov > lb) & (cov < ub)).flatten().nonzero().squeeze(-1)
    n_drop = min(_count(ratio, int(valid.sum())), len(candidates))
    drop = candidates[torch.randperm(len(candidates), generator=generator)[:n_drop].to(candidates.device)]
    keep = valid & ~_flat_mask(drop, valid)
    return keep, _metrics(keep, valid, adv, center, sigma)


def kl_cov_mask(logp: Tensor, advantages: Tensor, response_mask: Tensor,
                ratio: float = 2e-3) -> tuple[Tensor, dict[str, float]]:
    """KL-Cov's selection: the max(int(ratio * n_valid), 1) valid tokens of largest cov_t, which
    grpo.kl_cov_penalty prices with kl_cov_coef |logp - old_logp| (every valid token still trains).

    logp (rollout old_logp), response_mask: (N, T); advantages: (N,) or (N, T). Returns
    (penalised (N, T) bool, metrics); the "masked" fractions count penalised tokens.
    """
    valid = response_mask.bool()
    adv = per_token(advantages, logp)
    cov = _covariance(logp, adv, valid)
    center, sigma = _valid_mean_std(cov, valid)
    n_valid = int(valid.sum())
    penalised = torch.zeros_like(valid)
    if n_valid:
        top = torch.where(valid, cov, -math.inf).flatten().topk(_count(ratio, n_valid)).indices
        penalised = _flat_mask(top, valid)
    return penalised, _metrics(~penalised, valid, adv, center, sigma)


MISMATCH_LEVELS = ("none", "token", "sequence")


def mismatch_mask(old_logp: Tensor, sampler_logp: Tensor, response_mask: Tensor, level: str,
                  low: float, high: float) -> tuple[Tensor, dict[str, float]]:
    """Sampler-mismatch rejection (verl's rollout_rs "token_k1" / "seq_sum_k1"; TRL's
    vllm_importance_sampling_mode "token_mask" / "sequence_mask"): remove the tokens, or the
    whole sequences, whose trainer/sampler ratio leaves the band [low, high]:

    * token:    r_t = pi_old(a_t) / pi_sampler(a_t)
    * sequence: r = prod_t r_t over the response tokens (verl's seq_sum_k1 and TRL's sequence
                ratio, not length-normalised)

    Removed tokens leave the loss's numerator and denominator (verl's modified response mask;
    TRL zeroes them in the numerator only). old_logp, sampler_logp, response_mask: (N, T).
    Returns keep (N, T) bool and metrics "mismatch_masked_frac" (removed fraction of the
    response tokens) and "mismatch_masked_seq_frac" (responses with at least one removed)."""
    valid = response_mask.bool()
    gap = old_logp.double() - sampler_logp.double()
    log_ratio = torch.where(valid, gap, torch.zeros_like(gap))
    if level == "sequence":
        log_ratio = log_ratio.sum(-1, keepdim=True).expand_as(log_ratio)
    elif level != "token":
        raise ValueError(f"level must be 'token' or 'sequence', got {level!r}.")
    keep = valid & (log_ratio >= math.log(low)) & (log_ratio <= math.log(high))
    removed = valid & ~keep
    n_seqs = int(valid.any(-1).sum())
    return keep, {"mismatch_masked_frac": _frac(removed, valid),
                  "mismatch_masked_seq_frac": int(removed.any(-1).sum()) / n_seqs if n_seqs else 0.0}
