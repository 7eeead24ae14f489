"""The GRPO objective: group advantages, the clipped surrogate, penalty terms, loss aggregation
(the paper's J_GRPO, section 2.2).

    A_i   = (r_i - mean(r_group)) / (std(r_group) + 1e-6)           every token of response i
    rho_t = exp(logp_t - old_logp_t)
    l_t   = -min(rho_t A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) A_t)     `clipped_surrogate`
            and, for A_t < 0, at most -c A_t (dual-clip, c = 3)
            + kl_coef * k3(ref || current)_t                                 `penalty_terms`
            + kl_cov_coef * |logp_t - old_logp_t| on KL-Cov's tokens
            - entropy_coef * H_t                                             (entropy bonus)
    loss  = agg(l)                                                            `aggregate`

Three pieces, each read and tested alone: a per-token (N, T) surrogate, per-token penalties
added by name, and one aggregation, which the trainer calls once per micro-batch with counts
over the whole update, so that the micro-batch losses sum to the full batch's loss. Tokens a
clipping mask removed are absent from `mask`, hence from numerator and denominator alike.

Choices:
* std is unbiased (torch default), as in the authors' release; a group of one response gets
  A = r (mean 0, std 1); scale_std=False drops the division (Dr. GRPO).
* dual-clip c = inf turns the bound off; with one update per batch (ratio 1) it never binds.

The losses and advantages the peers ship close the file: GSPO and CISPO beside the clipped
surrogate, the entropy-shaped advantage, W-REINFORCE's and pass@k's advantages, and the adaptive
entropy coefficient's rule. Where each choice comes from: docs/methods.md, "Faithfulness to the
authors' release and to verl".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from entropy import per_token

ADV_EPS = 1e-6
LOG_RATIO_CLAMP = 20.0   # |log rho| bound before exp: a stale token cannot overflow
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
DUAL_CLIP = 3.0     # verl's clip_ratio_c


def group_advantages(rewards: Tensor, group_size: int, scale_std: bool = True) -> Tensor:
    """GRPO advantages A_i = (r_i - group mean) / (group std + 1e-6), one per response, shared
    by all of its tokens.

    Args:
        rewards: (N,) float, the responses of one prompt contiguous in groups of group_size.
        group_size: G, the responses sampled per prompt.
        scale_std: False drops the division (Dr. GRPO): A_i = r_i - group mean.
    Returns:
        (N,) float32.
    """
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}; "
                         "pass the group size the rollout used.")
    r = rewards.float().view(-1, group_size)
    if group_size == 1:  # the release's convention for a lone response: mean 0, std 1
        mean, std = torch.zeros_like(r), torch.ones_like(r)
    else:
        mean, std = r.mean(-1, keepdim=True), r.std(-1, keepdim=True)
    centred = r - mean
    return (centred / (std + ADV_EPS) if scale_std else centred).view(-1)


def _safe_div(total: Tensor, count) -> Tensor:
    """total / count, or 0 (with a zero gradient) when there is nothing to average."""
    return total / count if float(count) > 0 else total * 0.0


def aggregate(token_loss: Tensor, mask: Tensor, mode: str = "token-mean", num_tokens: int | None = None,
              num_seqs: int | None = None, max_len: int | None = None) -> Tensor:
    """Reduce a per-token loss l to a scalar over the kept tokens m, with verl's agg_loss
    definitions:

    * token-mean:              sum_it m l / num_tokens,        num_tokens = sum_it m
    * seq-mean-token-mean:     sum_i [sum_t m l / sum_t m] / num_seqs,
                               num_seqs = sequences with at least one kept token
    * seq-mean-token-sum-norm: sum_it m l / max_len            (Dr. GRPO; max_len = the response
                               length budget, default T; no division by the sequence count)

    Args:
        token_loss: (N, T) float, l; its values where m is False (padding, removed tokens) are
            ignored, even inf or NaN.
        mask: (N, T) bool, m: the response tokens the method keeps.
        mode: one of LOSS_AGG_MODES (--loss-agg).
        num_tokens, num_seqs, max_len: the denominators, by default this (micro-)batch's; when
            micro-batching, those of the whole update (and a fixed max_len), so that the
            micro-batch losses add up to the full batch's loss.
    Returns:
        () float, differentiable; 0 when no token is kept.
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {', '.join(LOSS_AGG_MODES)}.")
    mask = mask.bool()
    kept = torch.where(mask, token_loss, torch.zeros_like(token_loss))  # padding may hold inf/nan
    if mode == "token-mean":
        return _safe_div(kept.sum(), mask.sum() if num_tokens is None else num_tokens)
    if mode == "seq-mean-token-sum-norm":
        return kept.sum() / (token_loss.shape[-1] if max_len is None else max_len)
    seq_count = mask.sum(-1)
    seq_loss = kept.sum(-1) / seq_count.clamp(min=1)
    return _safe_div(seq_loss.sum(), (seq_count > 0).sum() if num_seqs is None else num_seqs)


def k3_kl(logp_sampler: Tensor, logp_other: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(sampler || other) from tokens the sampler drew (Schulman):
    exp(x) - x - 1 with x = logp_other - logp_sampler. Non-negative, unbiased, low variance."""
    x = (logp_other - logp_sampler).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.exp(x) - x - 1


def _ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    return torch.exp((logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def clipped_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float = 0.2,
                      eps_high: float = 0.2, dual_clip: float = DUAL_CLIP) -> Tensor:
    """Per-token PPO-clip loss l = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A), and for
    A < 0 the dual-clip bound min(l, -dual_clip A) (dual_clip = inf: off).

    Args:
        logp: (N, T) float32, log pi_theta of each response token, differentiable.
        old_logp: (N, T) float32, the same under the policy that sampled the batch.
        advantages: (N,) per response or (N, T) per token.
        eps_low, eps_high: the clip range of the ratio rho = exp(logp - old_logp).
        dual_clip: c, the bound -c A on the loss of an A < 0 token.
    Returns:
        (N, T) float32; values at padding are meaningless (aggregate masks them).
    """
    adv = per_token(advantages, logp)
    ratio = _ratio(logp, old_logp)
    loss = -torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    return torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)


def kl_cov_penalty(logp: Tensor, old_logp: Tensor, penalised: Tensor) -> Tensor:
    """KL-Cov's per-token term |logp - old_logp| on the penalised tokens, 0 elsewhere. (N, T)."""
    return penalised * (logp - old_logp).abs()


def penalty_terms(logp: Tensor, old_logp: Tensor, *, kl_coef: float = 0.0,
                  ref_logp: Tensor | None = None, kl_cov_coef: float = 0.0,
                  kl_cov_mask: Tensor | None = None, entropy_coef: float = 0.0,
                  entropy: Tensor | None = None) -> dict[str, Tensor]:
    """The per-token penalties that are switched on, by name, each scaled by its coefficient:
    "kl" (k3 to the reference policy), "kl_cov" and "entropy_bonus" (-coef x H). All (N, T);
    the policy loss is clipped_surrogate(...) plus their sum.
    """
    terms = {}
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs the reference policy's log-probabilities (ref_logp).")
        terms["kl"] = kl_coef * k3_kl(logp, ref_logp)
    if kl_cov_coef != 0:
        if kl_cov_mask is None:
            raise ValueError("kl_cov_coef != 0 needs the tokens to penalise (clipping.kl_cov_mask).")
        terms["kl_cov"] = kl_cov_coef * kl_cov_penalty(logp, old_logp, kl_cov_mask)
    if entropy_coef != 0:
        if entropy is None:
            raise ValueError("entropy_coef != 0 needs the per-token entropy of the current policy.")
        terms["entropy_bonus"] = -entropy_coef * entropy
    return terms


def _masked_mean(x: Tensor, mask: Tensor) -> float:
    n = int(mask.sum())
    return float(x.detach()[mask].double().sum()) / n if n else 0.0


@torch.no_grad()
def loss_metrics(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                 eps_low: float = 0.2, eps_high: float = 0.2, dual_clip: float = DUAL_CLIP,
                 ref_logp: Tensor | None = None) -> dict[str, float]:
    """The ratio clip's statistics over the kept tokens m.

    Args: logp, old_logp, mask, ref_logp: (N, T); advantages: (N,) or (N, T).
    Returns floats: clip_frac_low (rho < 1 - eps_low and A < 0: the clip zeroes their gradient),
    clip_frac_high (rho > 1 + eps_high and A > 0), dual_clip_frac (A < 0 and rho > dual_clip),
    approx_kl (mean k3 estimate of KL(old || current), rho - 1 - log rho), ratio_mean, and
    kl_ref (mean k3(ref || current)) when ref_logp is given."""
    mask = mask.bool()
    adv = per_token(advantages, logp)
    ratio = _ratio(logp, old_logp)
    metrics = {
        "clip_frac_low": _masked_mean(((ratio < 1 - eps_low) & (adv < 0)).double(), mask),
        "clip_frac_high": _masked_mean(((ratio > 1 + eps_high) & (adv > 0)).double(), mask),
        "dual_clip_frac": _masked_mean(((ratio > dual_clip) & (adv < 0)).double(), mask),
        "approx_kl": _masked_mean(k3_kl(old_logp, logp), mask),
        "ratio_mean": _masked_mean(ratio, mask),
    }
    if ref_logp is not None:
        metrics["kl_ref"] = _masked_mean(k3_kl(logp, ref_logp), mask)
    return metrics


def tis_weights(old_logp: Tensor, sampler_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance sampling (verl's rollout correction, Yao et al. 2025): each token's
    policy loss is weighted by min(pi_old(a) / pi_sampler(a), cap), detached, which corrects
    for a sampler that differs from the trainer (bf16 sampling, another engine). (N, T)."""
    return torch.exp(old_logp - sampler_logp).clamp(max=cap).detach()


@torch.no_grad()
def sampler_mismatch(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> dict[str, float]:
    """How far the sampler's log-probs are from the trainer's over the response tokens: mean and
    max |old_logp - sampler_logp| and the k3 estimate of KL(sampler || trainer) from the
    sampler's own tokens. 0 when they are the same distribution."""
    mask = mask.bool()
    gap = (old_logp - sampler_logp)[mask].double()
    if gap.numel() == 0:
        return {"mismatch_logp_abs_mean": 0.0, "mismatch_logp_abs_max": 0.0, "mismatch_kl": 0.0}
    return {"mismatch_logp_abs_mean": gap.abs().mean().item(), "mismatch_logp_abs_max": gap.abs().max().item(),
            "mismatch_kl": k3_kl(sampler_logp[mask].double(), old_logp[mask].double()).mean().item()}


# ----------------------------------------------------------------------------- peer losses
# The losses and advantages the peers ship (docs/methods.md, "Methods added since the paper").
# Each is one function. The per-token policy losses are registered by name in POLICY_LOSSES,
# each with one signature, and --policy-loss picks one (policy_surrogate); the method table
# (methods.py) picks the advantage estimator.

PolicyLoss = Callable[..., Tensor]   # (logp, old_logp, advantages, response_mask, eps_low, eps_high, dual_clip)
POLICY_LOSSES: dict[str, PolicyLoss] = {}
POLICY_LOSS_METRICS: dict[str, Callable[..., dict[str, float]]] = {}


def register_policy_loss(name: str, metrics: Callable[..., dict[str, float]] | None = None):
    """Register a per-token policy loss under `name` (a --policy-loss value), as a decorator.

    Args: the loss takes logp (N, T) float32, differentiable; old_logp (N, T) float32;
    advantages (N,) or (N, T) float32; response_mask (N, T) bool; eps_low, eps_high, dual_clip
    floats, and returns (N, T) float32 (meaningless at padding). metrics (optional) takes
    (logp, old_logp, advantages, keep, response_mask, eps_low, eps_high) and returns the
    floats that say what its clip did over the kept tokens."""
    def add(loss: PolicyLoss) -> PolicyLoss:
        POLICY_LOSSES[name] = loss
        if metrics is not None:
            POLICY_LOSS_METRICS[name] = metrics
        return loss
    return add


@register_policy_loss("ppo-clip")
def _ppo_clip(logp, old_logp, advantages, response_mask, eps_low, eps_high, dual_clip):
    return clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high, dual_clip)


def gspo_metrics(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, response_mask: Tensor,
                 eps_low: float, eps_high: float) -> dict[str, float]:
    """Over the kept tokens mask (N, T) bool: "gspo_clip_frac" = tokens of sequences whose ratio
    s_i lies outside [1 - eps_low, 1 + eps_high] on the side where the clip zeroes the gradient,
    and "gspo_ratio_mean"."""
    mask, valid = mask.bool(), response_mask.bool()
    adv = per_token(advantages, logp)
    gap = torch.where(valid, logp - old_logp, torch.zeros_like(logp))
    seq = torch.exp(gap.sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp(min=1)).expand_as(logp)
    clipped = ((seq < 1 - eps_low) & (adv < 0)) | ((seq > 1 + eps_high) & (adv > 0))
    return {"gspo_clip_frac": _masked_mean(clipped.double(), mask), "gspo_ratio_mean": _masked_mean(seq, mask)}


def cispo_metrics(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, response_mask: Tensor,
                  eps_low: float, eps_high: float) -> dict[str, float]:
    """Over the kept tokens mask (N, T) bool: "cispo_clip_frac" = tokens with rho > 1 + eps_high
    (their weight capped)."""
    return {"cispo_clip_frac": _masked_mean((_ratio(logp, old_logp) > 1 + eps_high).double(), mask.bool())}


def gspo_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, response_mask: Tensor,
                   eps_low: float = 3e-4, eps_high: float = 4e-4) -> Tensor:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071): one length-normalised ratio per sequence,
    s_i = exp(mean_t (logp - old_logp)) over the response tokens, carried by every token as
    s_i,t = sg[s_i] exp(logp_t - sg[logp_t]) (value s_i, gradient s_i grad logp_t), and
    l = -min(s A, clip(s, 1 - eps_low, 1 + eps_high) A), no dual-clip; a mask that removes some
    tokens removes only their gradient.

    logp (differentiable), old_logp, response_mask: (N, T); advantages: (N,) or (N, T).
    Returns (N, T); values at padding are meaningless (aggregate masks them)."""
    adv = per_token(advantages, logp)
    valid = response_mask.bool()
    gap = torch.where(valid, logp.detach() - old_logp, torch.zeros_like(logp))
    seq_log_ratio = gap.sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp(min=1)
    # the PPO-clip loss of the sequence ratio carried per token, without the dual-clip bound
    return clipped_surrogate(logp - logp.detach() + seq_log_ratio, torch.zeros_like(logp), adv, eps_low, eps_high,
                             math.inf)


@register_policy_loss("gspo", metrics=gspo_metrics)
def _gspo(logp, old_logp, advantages, response_mask, eps_low, eps_high, dual_clip):
    return gspo_surrogate(logp, old_logp, advantages, response_mask, eps_low, eps_high)


def cispo_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_high: float = 4.0) -> Tensor:
    """CISPO (MiniMax-M1, arXiv 2506.13585): l = -sg[min(rho, 1 + eps_high)] A logp. The
    importance weight is clipped and detached, so every token keeps a gradient (none is zeroed
    by a clip); no lower bound, as in the paper.

    logp (differentiable), old_logp: (N, T); advantages: (N,) or (N, T). Returns (N, T)."""
    adv = per_token(advantages, logp)
    weight = _ratio(logp, old_logp).clamp(max=1 + eps_high).detach()
    return -weight * adv * logp


@register_policy_loss("cispo", metrics=cispo_metrics)
def _cispo(logp, old_logp, advantages, response_mask, eps_low, eps_high, dual_clip):
    return cispo_surrogate(logp, old_logp, advantages, eps_high)


def policy_surrogate(kind: str, logp: Tensor, old_logp: Tensor, advantages: Tensor,
                     response_mask: Tensor, eps_low: float = 0.2, eps_high: float = 0.2,
                     dual_clip: float = DUAL_CLIP) -> Tensor:
    """The per-token policy loss registered as `kind` (--policy-loss: "ppo-clip", the
    clipped_surrogate, "gspo" or "cispo").

    Args: logp (N, T) float32, differentiable; old_logp (N, T) float32; advantages (N,) or
    (N, T) float32; response_mask (N, T) bool. Returns (N, T) float32."""
    if kind not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {kind!r}; choose one of {', '.join(POLICY_LOSSES)}.")
    return POLICY_LOSSES[kind](logp, old_logp, advantages, response_mask, eps_low, eps_high, dual_clip)


@torch.no_grad()
def policy_loss_metrics(kind: str, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                        response_mask: Tensor, eps_low: float, eps_high: float) -> dict[str, float]:
    """What the clip of the policy loss `kind` did over the kept tokens mask (N, T) bool: its
    registered metrics (gspo_metrics, cispo_metrics), or {} (ppo-clip: loss_metrics reports its
    clip fractions)."""
    metrics = POLICY_LOSS_METRICS.get(kind)
    return metrics(logp, old_logp, advantages, mask, response_mask, eps_low, eps_high) if metrics else {}


def entropy_advantage(advantages: Tensor, entropy: Tensor, alpha: float, kappa: float) -> Tensor:
    """Entropy-based advantage shaping (Cheng et al. 2025, arXiv 2506.14758):
    A'_t = A_t + min(alpha H_t, |A_t| / kappa), H_t detached (a shaping term, not an entropy
    gradient). The cap keeps the term below |A| / kappa, so it never flips the sign of A (for
    kappa > 1) and is 0 where A = 0.

    advantages: (N,) or (N, T); entropy: (N, T), the current policy's. Returns (N, T)."""
    adv = per_token(advantages, entropy)
    return adv + torch.minimum(alpha * entropy.detach(), adv.abs() / kappa)


@torch.no_grad()
def entropy_advantage_metrics(advantages: Tensor, entropy: Tensor, mask: Tensor, alpha: float,
                              kappa: float) -> dict[str, float]:
    """Over the kept tokens: "entropy_adv_bonus" = mean added term, "entropy_adv_capped_frac" =
    fraction where |A| / kappa < alpha H (the cap binds; A = 0 tokens included)."""
    adv = per_token(advantages, entropy)
    bonus = torch.minimum(alpha * entropy, adv.abs() / kappa)
    return {"entropy_adv_bonus": _masked_mean(bonus, mask.bool()),
            "entropy_adv_capped_frac": _masked_mean((adv.abs() / kappa < alpha * entropy).double(), mask.bool())}


def w_reinforce_advantages(rewards: Tensor, positive_weight: float = 0.1) -> Tensor:
    """Weighted REINFORCE (Zhu et al. 2025, arXiv 2506.01347), as the authors' release
    computes it (compute_psr_nsr_outcome_advantage, advantage="weighted"): no group baseline
    and no std; a correct response (r > 0.5) gets lambda r, an incorrect one r - 1. With binary
    rewards: +lambda and -1. lambda = 0 leaves only the negative samples (NSR). rewards: (N,)."""
    r = rewards.float()
    return torch.where(r > 0.5, positive_weight * r, r - 1)


def _comb(a: int, b: int) -> int:
    """C(a, b), 0 when b > a or a < 0 (scipy's comb, which the release uses)."""
    return math.comb(a, b) if a >= 0 else 0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c of them correct: 1 - C(n-c, k) / C(n, k),
    the chance that k of the n drawn without replacement hold a correct one. eval.py reports it;
    passk_advantages trains on it.

    Args:
        n: samples of the problem; c: how many of them are correct (0 <= c <= n);
        k: 1 <= k <= n.
    Returns:
        pass@k in [0, 1], a Python float.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms a binomial (stable for any n).
    """
    if not 0 <= c <= n:
        raise ValueError(f"the number of correct samples c={c} must lie between 0 and n={n}.")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs at least k samples per problem but n={n}; "
                         f"choose k between 1 and n or sample more (--n).")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def passk_advantages(rewards: Tensor, group_size: int, k: int) -> Tensor:
    """Pass@k training advantages in closed form (Chen et al. 2025, arXiv 2508.10751: the
    "analytical derivation"; the release's code/passk_adv.py calc_adv) for binary rewards, per
    group of n = group_size responses with c correct:

        R = 1 - C(n - c, k) / C(n, k)            the group's mean pass@k reward (pass_at_k)
        sigma = sqrt(R (1 - R))
        A_pos = (1 - R) / (sigma + 1e-6)
        A_neg = (1 - R - C(n - c - 1, k - 1) / C(n - 1, k - 1)) / (sigma + 1e-6)

    with C(a, b) = 0 for b > a. k = 1 gives GRPO's advantages with the population std.
    rewards: (N,), correct means r > 0.5. Returns (N,) float32."""
    if not 1 <= k <= group_size:
        raise ValueError(f"pass@k training needs 1 <= k <= the group size {group_size}, got k={k}.")
    correct = rewards.float().view(-1, group_size) > 0.5
    n, pos, neg = group_size, [], []
    for c in correct.sum(-1).tolist():
        mean = pass_at_k(n, c, k)
        sigma = math.sqrt(mean * (1 - mean))
        pos.append((1 - mean) / (sigma + ADV_EPS))
        neg.append((1 - mean - _comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1)) / (sigma + ADV_EPS))
    pos_adv, neg_adv = (torch.tensor(a, device=rewards.device)[:, None] for a in (pos, neg))
    return torch.where(correct, pos_adv, neg_adv).view(-1).float()


def adaptive_entropy_coef(state: dict, target: float) -> float:
    """The entropy-bonus coefficient a step applies under adaptive entropy control (Skywork-OR1,
    arXiv 2505.22312; TRL's use_adaptive_entropy): the controller's coefficient
    when the entropy measured at the previous step was at or below the target, else 0.
    state: {"entropy_coef", "entropy_last"} (entropy_last = inf before the first step)."""
    return state["entropy_coef"] if state["entropy_last"] <= target else 0.0


def adaptive_entropy_update(state: dict, entropy: float, target: float, delta: float,
                            low: float, high: float) -> dict:
    """One controller step, after the update (TRL's rule): coef + delta if the batch's mean
    token entropy is at or below the target, else coef - delta, kept in [low, high]; the entropy
    is remembered for the next step's gate. Updates state in place and returns it."""
    coef = state["entropy_coef"] + (delta if entropy <= target else -delta)
    state.update(entropy_coef=min(max(coef, low), high), entropy_last=entropy)
    return state
