"""The method registry: what each `--method` value does to a rollout batch.

A method is a token mask from clipping.py (which response tokens train) plus the flag values it
implies when the user gives none, such as its released mu. GRPO keeps every token; Clip-B and
Clip-V are the paper's masks (section 3); the rest are the entropy methods compared side by side
in docs/methods.md. KL-Cov keeps every token and instead marks the tokens that
grpo.kl_cov_penalty prices. Adding a method is adding a row to METHODS.

Every mask reads the batch-wide statistics of one rollout batch (rollout.RolloutBatch: s_star,
es, entropy, old_logp, advantages, response_mask) and the run's configuration (config.Config),
and returns (keep (N, R) bool, metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

import clipping

Mask = Callable[[object, object], tuple[Tensor, dict[str, float]]]   # (batch, cfg) -> (keep, metrics)


@dataclass(frozen=True)
class Method:
    """mask: (batch, cfg) -> (keep (N, R) bool, metrics). defaults: flag values the method implies.
    takes_mu: the method reads --mu (it is part of the run's label). penalty: (batch, cfg) ->
    (tokens priced by --kl-cov-coef |logp - old_logp| (N, R) bool, metrics), for KL-Cov; its
    metrics replace the mask's."""
    mask: Mask
    defaults: dict
    takes_mu: bool = False
    penalty: Mask | None = None


def _keep_all(batch, cfg):
    keep = batch.response_mask.clone()
    return keep, {"masked_frac": 0.0, "masked_frac_pos": 0.0, "masked_frac_neg": 0.0}


def _clip_b(batch, cfg):
    return clipping.clip_b_mask(batch.s_star, batch.advantages, batch.response_mask, cfg.mu,
                                cfg.mu_pos, cfg.clip_max_frac)


def _clip_v(batch, cfg):
    return clipping.clip_v_mask(batch.s_star, batch.es, batch.advantages, batch.response_mask,
                                cfg.mu, cfg.mu_pos, cfg.clip_max_frac)


def _forking(batch, cfg):
    return clipping.forking_mask(batch.entropy, batch.advantages, batch.response_mask, cfg.forking_frac)


def _clip_cov(batch, cfg):
    # The random draw uses the global torch RNG: seeded by --seed and saved in checkpoints.
    return clipping.clip_cov_mask(batch.old_logp, batch.advantages, batch.response_mask,
                                  cfg.clip_cov_ratio, cfg.clip_cov_lb, cfg.clip_cov_ub)


def _kl_cov(batch, cfg):
    return clipping.kl_cov_mask(batch.old_logp, batch.advantages, batch.response_mask, cfg.kl_cov_ratio)


def _entropy_direction(direction: str) -> Mask:
    def mask(batch, cfg):
        return clipping.entropy_direction_mask(batch.s_star, batch.es, batch.advantages,
                                               batch.response_mask, direction)
    return mask


METHODS = {
    "grpo": Method(_keep_all, {}),
    "clipb": Method(_clip_b, {"mu": 2.5}, takes_mu=True),    # released default (swept 2.0 to 3.0)
    "clipv": Method(_clip_v, {"mu": 8.5}, takes_mu=True),    # released default (swept 7.5 to 8.5)
    # for comparison; their parameters are flags with the released defaults
    "clip-higher": Method(_keep_all, {"eps_high": 0.28}),          # DAPO
    "entropy-bonus": Method(_keep_all, {"entropy_coef": 1e-3}),    # verl's long-time default
    "forking": Method(_forking, {}),
    "clip-cov": Method(_clip_cov, {}),
    "kl-cov": Method(_keep_all, {}, penalty=_kl_cov),
    "entropy-up": Method(_entropy_direction("up"), {}),
    "entropy-down": Method(_entropy_direction("down"), {}),
}


def label(method: str, mu: float | None) -> str:
    """How runs of a setting are named in tables and legends: "clipv mu=1.0", "grpo"."""
    return f"{method} mu={mu}" if METHODS[method].takes_mu and mu is not None else method
