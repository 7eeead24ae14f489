"""Tests for the methods added since the paper (docs/methods.md): each against its source's formula,
written out here from the source's code (TRL's GRPOTrainer, verl's core_algos and rollout
correction, the authors' releases), on hand-computed cases and random batches; GSPO and CISPO
micro-batched against the full batch; the adaptive entropy coefficient through a run and its
resume; the method table's rows and flags."""

import dataclasses
import itertools
import json
import math
import random

import pytest
import torch

import clipping
import config
import grpo
import methods
import rollout
import train

# ----- reference formulas, written from the sources' code -----


def trl_sequence_loss(logp, old, adv, mask, eps_low, eps_high, mode):
    """TRL GRPOTrainer._compute_loss with importance_sampling_level="sequence" (GSPO):
    coef_1 = exp(sum_t m (logp - old) / sum_t m), one per sequence; loss_type "grpo" is
    seq-mean-token-mean, "bnpo" token-mean."""
    m = mask.double()
    coef_1 = torch.exp(((logp - old) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1))
    coef_2 = coef_1.clamp(1 - eps_low, 1 + eps_high)
    per_token = -torch.minimum(coef_1 * adv[:, None], coef_2 * adv[:, None]).expand_as(logp)
    if mode == "seq-mean-token-mean":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    return (per_token * m).sum() / m.sum()


def trl_cispo_loss(logp, old, adv, mask, epsilon_high):
    """TRL loss_type="cispo": -clamp(exp(logp - old), max=epsilon_high).detach() A logp, over
    the batch's tokens."""
    weight = torch.exp(logp - old).clamp(max=epsilon_high).detach()
    return (-weight * adv[:, None] * logp * mask).sum() / mask.sum()


def random_batch(seed, n=6, t=9, spread=0.02):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    scale = spread * torch.rand(n, 1, generator=g, dtype=torch.float64)   # some sequences far, some near
    logp = old + scale * torch.randn(n, t, generator=g, dtype=torch.float64)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return logp, old, adv, mask


# ----- GSPO and CISPO -----

@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean"])
@pytest.mark.parametrize("seed", range(10))
def test_gspo_equals_trls_sequence_level_loss_and_gradient(mode, seed):
    logp, old, adv, mask = random_batch(seed)
    ours_logp, trl_logp = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    ours = grpo.aggregate(grpo.gspo_surrogate(ours_logp, old, adv, mask, 3e-4, 4e-4), mask, mode)
    theirs = trl_sequence_loss(trl_logp, old, adv, mask, 3e-4, 4e-4, mode)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12, abs=1e-15)
    torch.testing.assert_close(ours_logp.grad, trl_logp.grad, rtol=1e-10, atol=1e-14)


def test_gspo_by_hand_one_ratio_per_sequence_clipped_per_sequence():
    # sequence 1: log-ratios 0.001, -0.001, 0.003 -> s = exp(0.001) inside [1 - 3e-4, 1 + 4e-4]? no:
    # 1.0010005 > 1.0004, so for A = +1 the clip holds and the gradient is 0.
    # sequence 2: log-ratios 2e-4, 0 (third token padding) -> s = exp(1e-4), inside: gradient
    # -A s / 2 per token under seq-mean-token-mean over 2 sequences -> -A s / 4.
    old = torch.zeros(2, 3, dtype=torch.float64)
    logp = torch.tensor([[0.001, -0.001, 0.003], [2e-4, 0.0, 5.0]], dtype=torch.float64).requires_grad_(True)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    loss = grpo.aggregate(grpo.gspo_surrogate(logp, old, adv, mask), mask, "seq-mean-token-mean")
    loss.backward()
    s1, s2 = math.exp(0.001), math.exp(1e-4)
    assert loss.item() == pytest.approx((-(1 + 4e-4) * 1.0 + 2.0 * s2) / 2)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, 0.0], [2 * s2 / 4, 2 * s2 / 4, 0.0]],
                                                       dtype=torch.float64))
    m = grpo.policy_loss_metrics("gspo", logp, old, adv, mask, mask, 3e-4, 4e-4)
    assert m["gspo_clip_frac"] == pytest.approx(3 / 5)          # sequence 1's three tokens
    assert m["gspo_ratio_mean"] == pytest.approx((3 * s1 + 2 * s2) / 5)


@pytest.mark.parametrize("seed", range(10))
def test_cispo_equals_trls_loss_and_gradient(seed):
    logp, old, adv, mask = random_batch(seed, spread=2.0)        # ratios far from 1: the cap binds
    ours_logp, trl_logp = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    ours = grpo.aggregate(grpo.cispo_surrogate(ours_logp, old, adv, eps_high=1.0), mask, "token-mean")
    theirs = trl_cispo_loss(trl_logp, old, adv, mask, epsilon_high=2.0)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    torch.testing.assert_close(ours_logp.grad, trl_logp.grad)
    capped = (torch.exp(logp - old) > 2.0) & mask
    m = grpo.policy_loss_metrics("cispo", logp, old, adv, mask, mask, 0.2, 1.0)
    assert capped.any() and m["cispo_clip_frac"] == pytest.approx(int(capped.sum()) / int(mask.sum()))


def test_cispo_keeps_the_gradient_of_clipped_tokens():
    # rho = 5 with A = +1: PPO's clip zeroes the gradient, CISPO weighs it by the cap 1.28
    logp = torch.tensor([[math.log(5.0)]], dtype=torch.float64).requires_grad_(True)
    old, adv = torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    (ppo,) = torch.autograd.grad(grpo.clipped_surrogate(logp, old, adv, 0.2, 0.28).sum(), logp)
    (cispo,) = torch.autograd.grad(grpo.cispo_surrogate(logp, old, adv, eps_high=0.28).sum(), logp)
    assert ppo.item() == 0.0 and cispo.item() == pytest.approx(-1.28)


@pytest.mark.parametrize("mode", grpo.LOSS_AGG_MODES)
@pytest.mark.parametrize("kind", ["gspo", "cispo", "ppo-clip"])
def test_micro_batches_accumulate_to_the_full_batch_gradient(kind, mode):
    """As the trainer does it: counts of the whole batch, rows split into micro-batches trimmed to
    their longest response, entropy-shaped advantages on top."""
    logp, old, adv, mask = random_batch(3, n=7, t=9, spread=0.5)
    keep = mask & (torch.rand(mask.shape, generator=torch.Generator().manual_seed(4)) > 0.2)
    entropy = torch.rand(mask.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    counts = dict(num_tokens=int(keep.sum()), num_seqs=int(keep.any(-1).sum()), max_len=9)

    def loss(lp, rows, t):
        shaped = grpo.entropy_advantage(adv[rows], entropy[rows, :t], 0.4, 2.0)
        token = grpo.policy_surrogate(kind, lp[rows, :t], old[rows, :t], shaped, mask[rows, :t], 0.2, 0.28)
        return grpo.aggregate(token, keep[rows, :t], mode, **counts)

    full_logp = logp.clone().requires_grad_(True)
    full = loss(full_logp, slice(0, 7), 9)
    full.backward()
    micro_logp, total = logp.clone().requires_grad_(True), 0.0
    for rows in (slice(0, 3), slice(3, 5), slice(5, 7)):
        part = loss(micro_logp, rows, int(mask[rows].sum(-1).max()))
        part.backward()
        total += part.item()
    assert total == pytest.approx(full.item(), rel=1e-10)
    torch.testing.assert_close(micro_logp.grad, full_logp.grad)


# ----- advantages -----

def test_entropy_advantage_by_hand_and_on_random_batches():
    adv = torch.tensor([1.0, -1.0, 0.0])
    entropy = torch.tensor([[0.5, 2.0], [0.5, 2.0], [3.0, 3.0]])
    shaped = grpo.entropy_advantage(adv, entropy, alpha=0.4, kappa=2.0)
    # min(0.4 H, |A| / 2): 0.2 | 0.5 (capped) for |A| = 1; 0 for A = 0
    torch.testing.assert_close(shaped, torch.tensor([[1.2, 1.5], [-0.8, -0.5], [0.0, 0.0]]))
    m = grpo.entropy_advantage_metrics(adv, entropy, torch.ones(3, 2, dtype=torch.bool), 0.4, 2.0)
    assert m["entropy_adv_bonus"] == pytest.approx((0.2 + 0.5) * 2 / 6)
    assert m["entropy_adv_capped_frac"] == pytest.approx(4 / 6)   # 2.0 nats (x2) and A = 0 (x2)
    g = torch.Generator().manual_seed(0)
    a, h = torch.randn(50, generator=g), torch.rand(50, 7, generator=g) * 3
    h.requires_grad_(True)
    shaped = grpo.entropy_advantage(a, h, 0.4, 2.0)
    expected = a[:, None] + torch.minimum(0.4 * h.detach(), a.abs()[:, None] / 2.0)
    torch.testing.assert_close(shaped, expected)
    assert (torch.sign(shaped) == torch.sign(a)[:, None]).all()   # kappa > 1 keeps the sign
    assert not shaped.requires_grad                               # H is detached


def release_w_reinforce(scores, weight):
    """RLVR-Decomposed's compute_psr_nsr_outcome_advantage(advantage="weighted")."""
    advantages = scores.clone()
    correct, incorrect = scores == 1, scores == 0
    advantages[correct] *= weight
    advantages[incorrect] -= 1
    return advantages


def test_w_reinforce_advantages_are_the_releases():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(grpo.w_reinforce_advantages(r, 0.1), torch.tensor([0.1, -1.0, -1.0, 0.1]))
    torch.testing.assert_close(grpo.w_reinforce_advantages(r, 0.0), torch.tensor([0.0, -1.0, -1.0, 0.0]))
    scores = (torch.rand(64, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    for weight in (0.0, 0.1, 0.5):
        torch.testing.assert_close(grpo.w_reinforce_advantages(scores, weight), release_w_reinforce(scores, weight))


def enumerated_passk_advantages(correct: list[int], k: int) -> list[float]:
    """Pass@k training by full enumeration (the paper's full-sampling view): each k-subset of the
    group scores max(r); an advantage is the mean over the subsets that hold the response of
    (score - mean score) / (population std of the scores + 1e-6)."""
    n = len(correct)
    subsets = list(itertools.combinations(range(n), k))
    score = {s: max(correct[i] for i in s) for s in subsets}
    mean = sum(score.values()) / len(subsets)
    std = math.sqrt(mean * (1 - mean))
    return [sum((score[s] - mean) / (std + 1e-6) for s in subsets if i in s) / math.comb(n - 1, k - 1)
            for i in range(n)]


def test_passk_closed_form_by_hand_and_against_enumeration():
    # n = 4, c = 1, k = 2: R = 1 - C(3,2)/C(4,2) = 0.5, sigma = 0.5; A_pos = 1, A_neg = (0.5 - 2/3) / 0.5
    got = grpo.passk_advantages(torch.tensor([1.0, 0, 0, 0]), 4, 2)
    torch.testing.assert_close(got, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]), atol=1e-5, rtol=0)
    rng = random.Random(0)
    for _ in range(40):
        n = rng.randint(2, 8)
        k = rng.randint(1, n)
        correct = [rng.random() < 0.4 for _ in range(n)]
        got = grpo.passk_advantages(torch.tensor(correct, dtype=torch.float32), n, k)
        assert got.tolist() == pytest.approx(enumerated_passk_advantages(correct, k), abs=1e-5), (correct, k)


def test_passk_at_k_1_is_grpo_with_the_population_std_and_rejects_k_above_the_group():
    r = (torch.rand(32, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    groups = r.view(-1, 8)
    grpo_population = (groups - groups.mean(-1, keepdim=True)) / (groups.std(-1, correction=0, keepdim=True) + 1e-6)
    torch.testing.assert_close(grpo.passk_advantages(r, 8, 1), grpo_population.view(-1))
    with pytest.raises(ValueError, match="k <= the group size"):
        grpo.passk_advantages(r, 8, 9)


# ----- adaptive entropy coefficient -----

def test_adaptive_entropy_follows_trls_rule_by_hand():
    state = {"entropy_coef": 0.0, "entropy_last": math.inf}
    applied, coefs = [], []
    for entropy in (0.5, 0.1, 0.1, 0.3, 0.2):
        applied.append(grpo.adaptive_entropy_coef(state, target=0.2))
        coefs.append(grpo.adaptive_entropy_update(state, entropy, 0.2, 0.005, 0.0, 0.008)["entropy_coef"])
    # no bonus before a measurement; up at or below the target, down above it, within [0, 0.008]
    assert applied == pytest.approx([0.0, 0.0, 0.005, 0.008, 0.0])
    assert coefs == pytest.approx([0.0, 0.005, 0.008, 0.003, 0.008])


def test_adaptive_entropy_run_and_its_resume(tiny_path, tmp_path):
    def run(out, *extra):
        argv = ["--model", tiny_path, "--out", str(out), "--device", "cpu", "--prompts-per-step", "2",
                "--group-size", "2", "--max-new-tokens", "4", "--eval-every", "0", "--micro-batch-size", "4",
                "--method", "adaptive-entropy", "--entropy-target", "100", "--save-every", "1", *extra]
        assert train.main(argv) == 0
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    straight = run(tmp_path / "straight", "--steps", "3")
    assert [r["entropy_coef_applied"] for r in straight] == pytest.approx([0.0, 0.005, 0.01])
    assert [r["entropy_coef"] for r in straight] == pytest.approx([0.005, 0.01, 0.015])
    run(tmp_path / "resumed", "--steps", "2")
    state = torch.load(tmp_path / "resumed" / "checkpoint-2" / "trainer_state.pt", weights_only=False)
    assert state["counters"]["entropy_coef"] == pytest.approx(0.01)
    resumed = run(tmp_path / "resumed", "--steps", "3", "--resume")
    for key in ("entropy_coef_applied", "entropy_coef", "loss", "entropy"):
        assert resumed[-1][key] == pytest.approx(straight[-1][key], rel=1e-6), key


# ----- sampler-mismatch rejection -----

def trl_mask_weights(old, sampler, mask, mode, clip_min, clip_max):
    """TRL's vllm_importance_sampling_mode "token_mask" / "sequence_mask": the IS ratio, zeroed
    outside [clip_min, clip_max]; the tokens it zeroes are the ones rejected."""
    diff = (old - sampler) * mask
    ratio = torch.exp(diff.sum(-1, keepdim=True) if mode == "sequence_mask" else diff)
    return ratio.masked_fill((ratio < clip_min) | (ratio > clip_max), 0.0).expand_as(old)


def test_mismatch_mask_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    sampler = torch.log(torch.tensor([[0.5, 0.2, 0.5], [0.4, 0.4, 0.9]]))   # ratios 1, 2.5 | 1.25, 1.25, pad
    mask = torch.tensor([[True, True, True], [True, True, False]])
    keep, m = clipping.mismatch_mask(old, sampler, mask, "token", 0.5, 2.0)
    assert keep.tolist() == [[True, False, True], [True, True, False]]
    assert m == {"mismatch_masked_frac": pytest.approx(1 / 5), "mismatch_masked_seq_frac": 0.5}
    keep, m = clipping.mismatch_mask(old, sampler, mask, "sequence", 0.5, 2.0)   # 2.5 | 1.5625
    assert keep.tolist() == [[False, False, False], [True, True, False]]
    assert m["mismatch_masked_frac"] == pytest.approx(3 / 5) and m["mismatch_masked_seq_frac"] == 0.5


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_mismatch_mask_rejects_what_trl_zeroes_and_verls_symmetric_band(level):
    g = torch.Generator().manual_seed(7)
    old = -torch.rand(16, 10, generator=g, dtype=torch.float64) * 2
    sampler = old + 0.4 * torch.randn(16, 10, generator=g, dtype=torch.float64)
    mask = torch.arange(10)[None, :] < torch.randint(1, 11, (16,), generator=g)[:, None]
    keep, _ = clipping.mismatch_mask(old, sampler, mask, level, 0.5, 2.0)
    weights = trl_mask_weights(old, sampler, mask, f"{level}_mask", 0.5, 2.0)
    assert torch.equal(keep, mask & (weights > 0))
    # verl rollout_rs token_k1 / seq_sum_k1 with threshold "0.5_2.0" on -log r
    k1 = -(old - sampler) * mask
    stat = k1.sum(-1, keepdim=True).expand_as(k1) if level == "sequence" else k1
    assert torch.equal(keep, mask & (stat >= math.log(0.5)) & (stat <= math.log(2.0)))
    assert 0 < int((mask & ~keep).sum()) < int(mask.sum())


# ----- the method table and its flags -----

def test_rows_set_the_released_strengths_and_the_flags_are_validated(tmp_path, capsys):
    parse = config.parse_args
    gspo, cispo = parse(["--method", "gspo"]), parse(["--method", "cispo"])
    assert (gspo.policy_loss, gspo.eps_low, gspo.eps_high, gspo.loss_agg) == ("gspo", 3e-4, 4e-4, "seq-mean-token-mean")
    assert (cispo.policy_loss, cispo.eps_high) == ("cispo", 4.0)
    adaptive = parse(["--method", "adaptive-entropy"])
    bounds = (adaptive.entropy_target, adaptive.entropy_coef_delta, adaptive.entropy_coef_min,
              adaptive.entropy_coef_max)
    assert adaptive.adaptive_entropy and bounds == (0.2, 0.005, 0.0, 1.0)
    assert (parse(["--method", "entropy-adv"]).entropy_adv_alpha, parse([]).entropy_adv_kappa) == (0.4, 2.0)
    assert parse(["--method", "w-reinforce"]).positive_weight == 0.1 and parse(["--method", "nsr"]).positive_weight == 0
    assert parse(["--method", "passk"]).pass_k == 4 and parse([]).policy_loss == "ppo-clip"
    for flags, message in [(["--method", "passk", "--group-size", "2"], "--pass-k must be between 1 and"),
                           (["--mismatch-high", "0.5"], "0 < low < high"),
                           (["--entropy-coef-min", "2"], "--entropy-coef-min must not exceed"),
                           (["--entropy-adv-kappa", "0"], "--entropy-adv-kappa must be positive")]:
        assert train.main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), *flags]) == 2
        assert message in capsys.readouterr().err


def _batch(rewards: list[float], group_size: int) -> rollout.RolloutBatch:
    n = len(rewards)
    r = torch.tensor(rewards)
    ids = torch.zeros(n, 3, dtype=torch.long)
    return rollout.RolloutBatch(ids, torch.ones(n, 3, dtype=torch.bool), ids, torch.ones(n, 3, dtype=torch.bool),
                                torch.zeros(n, dtype=torch.bool), [""] * n, [""] * n, group_size, rewards=r)


def test_table_rows_use_their_advantages_and_masks():
    cfg = config.parse_args(["--method", "nsr", "--group-size", "4"])
    batch = _batch([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], 4)
    batch = dataclasses.replace(batch, advantages=methods.advantages(cfg, batch.rewards, 4))
    assert batch.advantages.tolist() == [0.0, -1.0, -1.0, 0.0, -1.0, -1.0, -1.0, -1.0]
    keep, m = methods.METHODS["nsr"].mask(batch, cfg)
    assert keep.any(-1).tolist() == [False, True, True, False, True, True, True, True]   # NSR: negatives only
    assert m["masked_frac"] == pytest.approx(2 / 8) and m["positive_sample_frac"] == pytest.approx(2 / 8)
    cfg = config.parse_args(["--method", "passk", "--group-size", "4", "--pass-k", "2"])
    batch = dataclasses.replace(batch, advantages=methods.advantages(cfg, batch.rewards, 4))
    keep, m = methods.METHODS["passk"].mask(batch, cfg)
    # group 1, c = 2 of 4, k = 2: R = 1 - C(2,2)/C(4,2) = 5/6, sigma = sqrt(5)/6: A = +-1/sqrt(5)
    assert keep.all() and m["passk_adv_pos"] == pytest.approx(5 ** -0.5, rel=1e-4)
    assert m["passk_adv_neg"] == pytest.approx(-(5 ** -0.5), rel=1e-4)
    torch.testing.assert_close(batch.advantages[:4], grpo.passk_advantages(batch.rewards[:4], 4, 2))
    assert batch.advantages[4:].abs().max() == 0                                # no correct answer
    cfg = config.parse_args(["--method", "grpo", "--group-size", "4"])
    torch.testing.assert_close(methods.advantages(cfg, batch.rewards, 4), grpo.group_advantages(batch.rewards, 4))
