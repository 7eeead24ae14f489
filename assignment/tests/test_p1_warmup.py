"""P1: token entropy (entropy.entropy) and masked loss aggregation (grpo.aggregate)."""

import math

import torch
from _support import close, naive_entropy, tensor

import entropy as E
from grpo import LOSS_AGG_MODES, aggregate
from tests.test_grpo import _random_batch, _verl_agg


def test_entropy_contract():
    z = torch.randn(2, 3, 11)
    tensor(E.entropy(z), "entropy of (2, 3, 11) float32 logits", shape=(2, 3), dtype=torch.float32)
    tensor(E.entropy(z.bfloat16()), "entropy of bfloat16 logits (computed in float32)", shape=(2, 3),
           dtype=torch.float32)
    tensor(E.entropy(z.double()), "entropy of float64 logits (kept in float64)", shape=(2, 3), dtype=torch.float64)
    tensor(E.entropy(torch.zeros(7)), "entropy of one (V,) vector", shape=())


def test_entropy_three_tokens():
    probs = [0.5, 0.25, 0.25]
    z = torch.tensor(probs, dtype=torch.float64).log() + 3.0      # logits are defined up to a constant
    close(E.entropy(z), naive_entropy(probs), "H of pi = (0.5, 0.25, 0.25)", rtol=1e-9)
    close(E.entropy(torch.zeros(4, 5)), torch.full((4,), math.log(5)), "H of a uniform policy over 5 tokens")
    one_hot = torch.tensor([0.0, -1e4, -1e4], dtype=torch.float64)
    close(E.entropy(one_hot), 0.0, "H of a deterministic policy", atol=1e-12)


def test_entropy_stable_at_large_logits():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 50, generator=g, dtype=torch.float64)
    for scale in (30.0, 1000.0):
        big = (z * scale).float()
        expected = -(torch.log_softmax(big.double(), -1).exp() * torch.log_softmax(big.double(), -1)).sum(-1)
        close(E.entropy(big), expected, f"H of logits x {scale:g} (float32)", rtol=1e-4, atol=1e-6)


LOSS = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
KEEP = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])


def test_aggregate_token_mean_by_hand():
    close(aggregate(LOSS, KEEP, "token-mean"), (1 + 2 + 4) / 3, "token-mean of kept losses 1, 2, 4 (of 9)")
    padded = torch.where(KEEP, LOSS, torch.tensor(float("nan")))
    close(aggregate(padded, KEEP, "token-mean"), (1 + 2 + 4) / 3, "token-mean with NaN in the padding")
    close(aggregate(LOSS, KEEP, "token-mean", num_tokens=14), 7 / 14, "token-mean with num_tokens=14 given")
    loss = LOSS.clone().requires_grad_(True)
    empty = aggregate(loss, torch.zeros_like(KEEP), "token-mean")
    close(empty, 0.0, "token-mean with no kept token")
    (grad,) = torch.autograd.grad(empty, loss)
    close(grad, torch.zeros(3, 3), "gradient with no kept token")


def test_aggregate_modes_match_verl():
    close(aggregate(LOSS, KEEP, "seq-mean-token-mean"), (1.5 + 4) / 2, "seq-mean-token-mean by hand "
          "(rows with no kept token do not count)")
    close(aggregate(LOSS, KEEP, "seq-mean-token-sum-norm", max_len=10), 0.7, "seq-mean-token-sum-norm, max_len 10")
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        loss = torch.randn(5, 8, generator=g, dtype=torch.float64)
        mask = torch.rand(5, 8, generator=g) < 0.6
        mask[seed % 5] = False
        for mode in LOSS_AGG_MODES:
            close(aggregate(loss, mask, mode, max_len=12), _verl_agg(loss, mask, mode, 12).item(),
                  f"{mode} on a random batch (seed {seed})", rtol=1e-10)


def test_aggregate_micro_batches_add_up():
    logp, _, _, keep = _random_batch(n=7, t=9, seed=2)
    for mode in LOSS_AGG_MODES:
        counts = dict(num_tokens=int(keep.sum()), num_seqs=int(keep.any(-1).sum()), max_len=9)
        full = aggregate(logp, keep, mode, **counts)
        parts = sum(aggregate(logp[rows], keep[rows], mode, **counts)
                    for rows in (slice(0, 3), slice(3, 5), slice(5, 7)))
        close(parts, full.item(), f"{mode}: sum of three micro-batch losses against the full batch", rtol=1e-5)
