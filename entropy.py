"""The entropy discriminator and the entropy-change theorems (paper section 2), and the per-token
statistics that the masks and the loss read.

For a softmax policy pi = softmax(z) over V tokens with entropy H(pi) = -sum_i pi_i log pi_i:

* entropy discriminator of token i:  S_i = pi_i (H + log pi_i)            (`discriminator`)
  S_* is S_k of the sampled token a_k                                     (`s_star`);
  sign(S_k) = sign(pi_k - exp(-H)): positive for relatively likely tokens.
* vocabulary baseline:  E_{i~pi}[S_i] = sum_i pi_i^2 (H + log pi_i)     (`expected_discriminator`)
* Theorem 1: a logit update dz = eps e_k changes the entropy by -eps S_* + O(eps^2).
* Theorem 2: a GRPO update of token k, dz = alpha (e_k - pi), changes it by
  -alpha (S_* - E[S]) + O(alpha^2).
* `predicted_entropy_change` is Theorem 2 per response token of a batch, -A_t (S*_t - E[S]_t)
  (alpha_t = lr x ratio x A_t has the sign of A_t): the entropy-direction masks and the probe
  read it.
* `entropy_probe` tests Theorem 2 in a real network, where every token's update moves the
  shared parameters and so every other token's distribution: it compares, token by token, the
  predicted change -A_t (S*_t - E[S]_t) (alpha_t has the sign of A_t) with the change of H_t
  measured by scoring the same batch again after the update (sign agreement, Pearson r).

The functions on full logits accept any leading shape with the vocabulary last and compute in
float32 whatever the input dtype (bf16 logits are promoted; float64 is kept, so the tests can
check the mathematics to machine precision).

`token_stats` computes, per response token, logp of the target, H, S_* and E[S] straight from
the last hidden state and the output embedding, without materialising the (B, T, V) logits: a
Qwen2.5 vocabulary has 151,936 entries, so 8 x 4,096 tokens of float32 logits alone are 20 GB.
It is one custom autograd Function. Forward walks over chunks of tokens, computes each chunk's
float32 logits once and derives all four statistics from them; it saves only the inputs and the
per-token logsumexp and entropy. Backward recomputes each chunk's logits and applies the closed
form gradient of logp and H w.r.t. the logits,
    dL/dz = g_logp (onehot - p) - g_H p (log p + H),
so peak memory is two chunk x V float32 buffers (one in a backward through logp alone) with
or without gradient, plus the weight's gradient. Autocast is switched off inside, so the
statistics are float32 even when the trainer runs under bf16 autocast. S_* and E[S] are
returned detached: the clipping rules only read them. Float64 inputs are computed in float64
(for gradcheck).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _log_probs(logits: Tensor) -> Tensor:
    """log pi in at least float32. logits: (..., V) -> (..., V)."""
    if logits.dtype != torch.float64:
        logits = logits.float()
    return torch.log_softmax(logits, dim=-1)


def _entropy_from_log_probs(logp: Tensor) -> Tensor:
    # a masked-out token (logit -inf) has log pi = -inf and adds 0 log 0 = 0, not NaN
    return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1)


def entropy(logits: Tensor) -> Tensor:
    """Shannon entropy H(pi) = -sum_i pi_i log pi_i of pi = softmax(logits), in nats.

    Args:
        logits: (..., V), any float dtype; a logit of -inf (a masked-out token) adds 0.
    Returns:
        (...) float32 (float64 for float64 logits).
    """
    return _entropy_from_log_probs(_log_probs(logits))


def discriminator(logits: Tensor) -> Tensor:
    """Entropy discriminator S_i = pi_i (H + log pi_i) of every token i of the vocabulary.

    Args:
        logits: (..., V), any float dtype.
    Returns:
        (..., V) float32 (float64 for float64 logits); S_i > 0 exactly where pi_i > exp(-H).
    """
    logp = _log_probs(logits)
    h = _entropy_from_log_probs(logp)
    return logp.exp() * (h.unsqueeze(-1) + logp)


def s_star(logits: Tensor, ids: Tensor) -> Tensor:
    """S_* = S_k = pi_k (H + log pi_k) of the token k = ids at each position.

    Args:
        logits: (..., V), any float dtype.
        ids: (...) long in [0, V), the sampled token at each position.
    Returns:
        (...) float32 (float64 for float64 logits).
    """
    logp = _log_probs(logits)
    h = _entropy_from_log_probs(logp)
    logp_k = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return logp_k.exp() * (h + logp_k)


def expected_discriminator(logits: Tensor) -> Tensor:
    """Vocabulary baseline E_{i~pi}[S_i] = sum_i pi_i^2 (H + log pi_i), the S_* of a token drawn
    from pi on average (Theorem 2's centring term).

    Args:
        logits: (..., V), any float dtype.
    Returns:
        (...) float32 (float64 for float64 logits).
    """
    logp = _log_probs(logits)
    h = _entropy_from_log_probs(logp)
    p = logp.exp()
    return (p * p * (h.unsqueeze(-1) + logp)).sum(-1)


def per_token(advantages: Tensor, like: Tensor) -> Tensor:
    """Per-response advantages (N,) broadcast to the (N, T) shape of `like`; (N, T) passes through."""
    return advantages.unsqueeze(-1).expand_as(like) if advantages.dim() == 1 else advantages


def predicted_entropy_change(s_star: Tensor, es: Tensor, advantages: Tensor) -> Tensor:
    """Theorem 2 per response token, up to the positive step size: -A_t (S*_t - E[S]_t).

    Args:
        s_star, es: (N, T) float, S*_t and E[S]_t of the old policy (TokenStats).
        advantages: (N,) per response or (N, T) per token.
    Returns:
        (N, T) float64 (the masks compare it with 0, so it is kept exact); positive where the
        token's update raises the entropy.
    """
    return -per_token(advantages, s_star).double() * (s_star.double() - es.double())


def _as_ids(logits: Tensor, k: Tensor | int) -> Tensor:
    if isinstance(k, int):
        return torch.full(logits.shape[:-1], k, dtype=torch.long, device=logits.device)
    return k


def theorem1_entropy_change(logits: Tensor, k: Tensor | int, eps: float | Tensor) -> Tensor:
    """First-order entropy change -eps * S_k of the logit update dz = eps e_k (Theorem 1).

    Args:
        logits: (..., V), any float dtype.
        k: (...) long token ids, or one int for every position.
        eps: the step on logit k, a float or a tensor broadcastable to (...).
    Returns:
        (...) float32 (float64 for float64 logits): H(z + eps e_k) - H(z) up to O(eps^2).
    """
    return -eps * s_star(logits, _as_ids(logits, k))


def theorem2_entropy_change(logits: Tensor, k: Tensor | int, alpha: float | Tensor) -> Tensor:
    """First-order entropy change -alpha (S_k - E[S]) of the GRPO update dz = alpha (e_k - pi)
    (Theorem 2; alpha = learning rate x importance ratio x advantage).

    Args:
        logits: (..., V), any float dtype.
        k: (...) long token ids, or one int for every position.
        alpha: the step, a float or a tensor broadcastable to (...).
    Returns:
        (...) float32 (float64 for float64 logits): H(z + alpha (e_k - pi)) - H(z) up to
        O(alpha^2).
    """
    return -alpha * (s_star(logits, _as_ids(logits, k)) - expected_discriminator(logits))


# Tokens per chunk of token_stats: two chunk x V float32 buffers, 0.3 GB at Qwen2.5's V = 151,936,
# an eighth of what the direct path needs for 2,048 tokens (bench.py), and still a large matmul.
CHUNK_SIZE = 256


@dataclass
class TokenStats:
    """Per-token statistics of the policy at each response position: all (B, T), float32
    (float64 only when token_stats was given float64 inputs)."""

    logp: Tensor      # log pi(target), differentiable
    entropy: Tensor   # H(pi), differentiable
    s_star: Tensor    # S_* of the target token, detached
    es: Tensor        # E_{i~pi}[S_i], detached


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (hidden.dtype, weight.dtype) else torch.float32


def _chunk_log_probs(h: Tensor, wf: Tensor, temperature: float, lse: Tensor | None = None):
    """log pi of one chunk in wf's dtype, (C, d) x (V, d) -> (C, V), and its logsumexp (C,).

    The logits buffer is turned into log pi in place, so only one (C, V) buffer survives.
    """
    z = (h.to(wf.dtype) / temperature) @ wf.T
    if lse is None:
        lse = torch.logsumexp(z, dim=-1)
    return z.sub_(lse.unsqueeze(-1)), lse


class _ChunkedTokenStats(torch.autograd.Function):
    """logp, H (differentiable) and S_*, E[S] (not) of hidden @ weight.T / temperature, by chunks.

    hidden (N, d), weight (V, d), ids (N,) -> four (N,) float32 tensors. The arithmetic is
    float32, or float64 when either input is float64 (so gradcheck can test the backward).
    """

    @staticmethod
    def forward(ctx, hidden, weight, ids, temperature, chunk_size):
        n = hidden.shape[0]
        dtype = _compute_dtype(hidden, weight)
        logp_out = torch.empty(n, dtype=dtype, device=hidden.device)
        h_out, s_out, es_out = torch.empty_like(logp_out), torch.empty_like(logp_out), torch.empty_like(logp_out)
        lse_out = torch.empty_like(logp_out)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            wf = weight.to(dtype)  # cast once per call, not per chunk
            for start in range(0, n, chunk_size):
                sl = slice(start, start + chunk_size)
                logp, lse = _chunk_log_probs(hidden[sl], wf, temperature)
                logp_k = logp.gather(1, ids[sl].unsqueeze(1)).squeeze(1)
                # Two (C, V) buffers, reused in place. Row sums use torch.sum (pairwise, accurate
                # to ~1e-7 over 151,936 terms; a bmm row-dot accumulates sequentially and is
                # ~100x less accurate). p is recomputed by one exp instead of a third buffer.
                buf = logp.exp().mul_(logp)                   # p log p
                h = buf.sum(-1).neg_()
                p = torch.exp(logp, out=buf)
                es = logp.add_(h.unsqueeze(1)).mul_(p).mul_(p).sum(-1)   # sum p^2 (H + log p)
                logp_out[sl], h_out[sl], lse_out[sl], es_out[sl] = logp_k, h, lse, es
                s_out[sl] = logp_k.exp() * (h + logp_k)
                del logp, buf, p
        ctx.save_for_backward(hidden, weight, ids, lse_out, h_out)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.mark_non_differentiable(s_out, es_out)
        ctx.set_materialize_grads(False)  # a None gradient (e.g. entropy unused) skips its term
        return logp_out, h_out, s_out, es_out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_logp, g_h, _g_s, _g_es):
        hidden, weight, ids, lse, h_all = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (g_logp is None and g_h is None) or not (need_hidden or need_weight):
            return None, None, None, None, None
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            wf = weight.to(_compute_dtype(hidden, weight))
            grad_wf = torch.zeros_like(wf) if need_weight else None
            for start in range(0, hidden.shape[0], chunk_size):
                sl = slice(start, start + chunk_size)
                logp, _ = _chunk_log_probs(hidden[sl], wf, temperature, lse[sl])
                # dL/dz = g_logp (onehot - p) - g_H p (log p + H), built in place.
                if g_h is None:  # logp only (no entropy bonus): one (C, V) buffer suffices
                    dz = logp.exp_().mul_(-g_logp[sl].unsqueeze(1))
                else:
                    p = logp.exp()
                    coef = logp.add_(h_all[sl].unsqueeze(1)).mul_(-g_h[sl].unsqueeze(1))
                    if g_logp is not None:
                        coef.sub_(g_logp[sl].unsqueeze(1))
                    dz = coef.mul_(p)
                    del p
                del logp
                if g_logp is not None:
                    dz.scatter_add_(1, ids[sl].unsqueeze(1), g_logp[sl].unsqueeze(1))
                # z = hidden @ weight.T / temperature: the 1/temperature goes on the small products.
                if need_hidden:
                    grad_hidden[sl] = (dz @ wf).div_(temperature).to(hidden.dtype)
                if need_weight:
                    grad_wf.addmm_(dz.T, hidden[sl].to(dz.dtype), alpha=1.0 / temperature)
                del dz
        grad_weight = grad_wf.to(weight.dtype) if need_weight else None
        return grad_hidden, grad_weight, None, None, None


def token_stats(hidden: Tensor, weight: Tensor, ids: Tensor, temperature: float = 1.0,
                chunk_size: int = CHUNK_SIZE) -> TokenStats:
    """Per-token logp, H, S_* and E[S] of logits = hidden @ weight.T / temperature, in float32,
    chunk_size tokens at a time (docs/benchmarks.md, "Token statistics").

    hidden: (B, T, d) any float dtype (the decoder's last hidden state at the positions that
    predict ids); weight: (V, d), the output-embedding (lm_head) weight; ids: (B, T) long in
    [0, V), the target token at each position. Returns a TokenStats of (B, T) float32 tensors
    (float64 if an input is float64); logp and entropy carry gradient to hidden and weight
    (returned in their own dtypes). Peak memory beyond the inputs: two chunk_size x V float32
    buffers, plus the (V, d) weight gradient in backward. The default 256 keeps that below 1/8
    of the direct path's at V = 151,936 and 2,048 tokens (0.67 GB against 5.8 GB, measured on CPU);
    larger chunks are a little faster and cost 1.2 MB per token of chunk at that vocabulary.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}; use e.g. 1.0.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of tokens, got {chunk_size}.")
    if hidden.shape[:-1] != ids.shape or hidden.shape[-1] != weight.shape[-1]:
        raise ValueError(f"token_stats expects hidden (B, T, d), weight (V, d), ids (B, T); got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(ids.shape)}.")
    lead = ids.shape
    flat = _ChunkedTokenStats.apply(hidden.reshape(-1, hidden.shape[-1]), weight,
                                    ids.reshape(-1), float(temperature), int(chunk_size))
    return TokenStats(*(t.view(lead) for t in flat))


def entropy_probe(predicted: Tensor, measured: Tensor, mask: Tensor,
                  prefix: str = "probe/", top_frac: float = 0.1) -> dict[str, float]:
    """How well the Theorem-2 prediction matches the measured entropy change, token by token.

    predicted: (N, T), -A_t (S*_t - E[S]_t) from the policy before the update; measured: (N, T),
    H_t after the update minus H_t before; mask: (N, T) bool, the tokens to compare. Returns
    {prefix + "sign_agreement": fraction of masked tokens with a nonzero prediction whose
    measured change has the same sign, prefix + "sign_agreement_top": the same over the
    `top_frac` of those tokens (at least one) with the largest |prediction|, prefix + "corr":
    Pearson correlation over the masked tokens}; NaN when there is nothing to compare (no such
    token, or a constant side).
    """
    mask = mask.bool()
    p, m = predicted.detach()[mask].double(), measured.detach()[mask].double()
    nonzero = p != 0
    agree, agree_top, corr = math.nan, math.nan, math.nan
    if nonzero.any():
        same = torch.sign(p[nonzero]) == torch.sign(m[nonzero])
        agree = same.double().mean().item()
        top = p[nonzero].abs().topk(max(int(top_frac * same.numel()), 1)).indices
        agree_top = same[top].double().mean().item()
    if p.numel() > 1:
        pc, mc = p - p.mean(), m - m.mean()
        denom = (pc.square().sum() * mc.square().sum()).sqrt()
        corr = (pc * mc).sum().div(denom).item() if denom > 0 else math.nan
    return {prefix + "sign_agreement": agree, prefix + "sign_agreement_top": agree_top,
            prefix + "corr": corr}
