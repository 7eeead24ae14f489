"""P1: token entropy (entropy.entropy) and masked loss aggregation (grpo.aggregate)."""

import math

import torch
from _support import close, expected, gen, random_batch, tensor, variant_switches
from worker import call_grad, student

E = student("entropy")
G = student("grpo")
MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
BITS = 16 in variant_switches()         # this course's variant: entropy() in bits
UNIT = math.log(2) if BITS else 1.0     # nats per unit of entropy()
ALL_SEQS = 32 in variant_switches()     # this course's variant: seq-mean over every sequence


def test_entropy_contract():
    z = torch.randn(2, 3, 11, generator=gen(0))
    tensor(E.entropy(z), "entropy of (2, 3, 11) float32 logits", shape=(2, 3), dtype=torch.float32)
    tensor(E.entropy(z.bfloat16()), "entropy of bfloat16 logits (computed in float32)", shape=(2, 3),
           dtype=torch.float32)
    tensor(E.entropy(z.double()), "entropy of float64 logits (kept in float64)", shape=(2, 3), dtype=torch.float64)
    tensor(E.entropy(torch.zeros(7)), "entropy of one (V,) vector", shape=())


def test_entropy_three_tokens():
    probs = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    shift = 3.0 + torch.rand((), generator=gen(0)).item()       # logits are defined up to a constant
    close(E.entropy(probs.log() + shift), 1.5 * math.log(2) / UNIT, "H of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    close(E.entropy(torch.zeros(4, 5)), torch.full((4,), math.log(5) / UNIT), "H of a uniform policy over 5 tokens")
    one_hot = torch.tensor([0.0, -1e4, -1e4], dtype=torch.float64)
    close(E.entropy(one_hot), 0.0, "H of a deterministic policy", atol=1e-9)
    z = torch.randn(6, 9, generator=gen(1), dtype=torch.float64) * 2
    close(E.entropy(z), expected("entropy", z) / UNIT, "H of six random float64 policies over 9 tokens", rtol=1e-9)


def test_entropy_stable_at_large_logits():
    z = torch.randn(6, 50, generator=gen(0), dtype=torch.float64)
    for scale in (30.0, 1000.0):
        big = (z * scale).float()
        close(E.entropy(big), expected("entropy", big) / UNIT, f"H of logits x {scale:g} (float32)", rtol=1e-4,
              atol=1e-6)
    masked = torch.tensor([0.0, 0.0, -math.inf])
    close(E.entropy(masked), math.log(2) / UNIT, "H of logits (0, 0, -inf) (a token masked out)", rtol=1e-6)


LOSS = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
KEEP = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])


def test_aggregate_token_mean_by_hand():
    close(G.aggregate(LOSS, KEEP, "token-mean"), (1 + 2 + 4) / 3, "token-mean of kept losses 1, 2, 4 (of 9)")
    padded = torch.where(KEEP, LOSS, torch.tensor(float("nan")))
    close(G.aggregate(padded, KEEP, "token-mean"), (1 + 2 + 4) / 3, "token-mean with NaN where the mask is False "
          "(those losses must leave the sum: 0 x NaN is NaN)")
    close(G.aggregate(LOSS, KEEP, "token-mean", num_tokens=14), 7 / 14, "token-mean with num_tokens=14 given")
    scale = 1.0 + torch.rand((), generator=gen(0)).item()
    empty, (grad,) = call_grad("grpo:aggregate", (LOSS * scale, torch.zeros_like(KEEP), "token-mean"), wrt=[0],
                               cotangents={None: torch.tensor(1.0)})
    close(empty, 0.0, "token-mean with no kept token")
    close(grad, torch.zeros(3, 3), "gradient with no kept token")
    _, logp, _, keep = random_batch(n=5, t=6, draw=1)
    close(G.aggregate(logp, keep, "token-mean"), expected("aggregate", logp, keep, "token-mean", 6),
          "token-mean of a random batch", rtol=1e-5)


def test_aggregate_modes_match_verl():
    if ALL_SEQS:
        close(G.aggregate(LOSS, KEEP, "seq-mean-token-mean"), (1.5 + 4) / 3, "seq-mean-token-mean by hand "
              "(this variant: all 3 rows count, the one with no kept token as 0)")
    else:
        close(G.aggregate(LOSS, KEEP, "seq-mean-token-mean"), (1.5 + 4) / 2, "seq-mean-token-mean by hand "
              "(rows with no kept token do not count)")
    close(G.aggregate(LOSS, KEEP, "seq-mean-token-sum-norm", max_len=10), 0.7, "seq-mean-token-sum-norm, max_len 10")
    for draw in range(6):
        g = gen(draw)
        loss = torch.randn(5, 8, generator=g, dtype=torch.float64)
        mask = torch.rand(5, 8, generator=g) < 0.6
        mask[draw % 5] = False
        loss = torch.where(mask, loss, torch.tensor(float("nan"), dtype=torch.float64))   # NaN in the padding
        for mode in MODES:
            close(G.aggregate(loss, mask, mode, max_len=12), expected("aggregate", loss, mask, mode, 12),
                  f"{mode} on a random batch with NaN where the mask is False (draw {draw})", rtol=1e-10)


def test_aggregate_micro_batches_add_up():
    logp, _, _, keep = random_batch(n=7, t=9, draw=2)
    for mode in MODES:
        seqs = keep.shape[0] if ALL_SEQS else int(keep.any(-1).sum())
        counts = dict(num_tokens=int(keep.sum()), num_seqs=seqs, max_len=9)
        full = expected("aggregate", logp, keep, mode, 9)
        parts = sum(G.aggregate(logp[rows], keep[rows], mode, **counts)
                    for rows in (slice(0, 3), slice(3, 5), slice(5, 7)))
        close(parts, full, f"{mode}: sum of three micro-batch losses against the full batch", rtol=1e-5)
