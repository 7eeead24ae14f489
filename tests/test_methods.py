"""Tests for methods.py: every row of the method table masks a real rollout batch as its
clipping.py function says, and runs are labelled by method and mu."""

import pytest
import torch

import config
import policy
from conftest import rollout_with_advantages
from methods import METHODS, label


def test_labels_name_mu_only_for_methods_that_read_it():
    assert label("clipv", 1.0) == "clipv mu=1.0" and label("clipb", 2.5) == "clipb mu=2.5"
    assert label("grpo", None) == "grpo" and label("grpo", 1.0) == "grpo"
    assert {m for m, spec in METHODS.items() if spec.takes_mu} == {"clipb", "clipv"}


def test_method_table_masks(tiny_path):
    cfg = config.parse_args(["--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "8",
                            "--method", "clipb", "--mu", "0.1"])
    model, tokenizer = policy.load_policy(tiny_path, torch.device("cpu"))
    batch, _ = rollout_with_advantages(model, tokenizer, cfg)
    keep, metrics = METHODS["clipb"].mask(batch, cfg)
    assert not (keep & ~batch.response_mask).any()
    assert 0 < metrics["masked_frac"] and metrics["masked_frac_pos"] == 0
    keep, metrics = METHODS["grpo"].mask(batch, cfg)
    assert torch.equal(keep, batch.response_mask) and metrics["masked_frac"] == 0


def test_comparison_methods_in_the_table(tiny_path):
    # band and ratios wide enough that every method acts on a 64-token batch
    cfg = config.parse_args(["--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "8",
                            "--clip-cov-lb=-1e9", "--clip-cov-ub=1e9", "--clip-cov-ratio", "0.1",
                            "--kl-cov-ratio", "0.1"])
    model, tokenizer = policy.load_policy(tiny_path, torch.device("cpu"))
    batch, _ = rollout_with_advantages(model, tokenizer, cfg)
    valid = batch.response_mask
    n = int(valid.sum())
    keeps = {}
    for name in ("forking", "clip-cov", "entropy-up", "entropy-down", "clip-higher", "entropy-bonus"):
        keeps[name], metrics = METHODS[name].mask(batch, cfg)
        assert not (keeps[name] & ~valid).any()
        assert {"masked_frac", "masked_frac_pos", "masked_frac_neg"} <= set(metrics)
    assert int(keeps["forking"].sum()) == int(0.2 * n)
    assert int((valid & ~keeps["clip-cov"]).sum()) == int(0.1 * n)
    assert not (keeps["entropy-up"] & keeps["entropy-down"]).any()
    assert (keeps["entropy-up"] | keeps["entropy-down"]).any()
    assert torch.equal(keeps["clip-higher"], valid) and torch.equal(keeps["entropy-bonus"], valid)
    penalised, metrics = METHODS["kl-cov"].penalty(batch, cfg)
    assert int(penalised.sum()) == int(0.1 * n) and metrics["masked_frac"] == pytest.approx(int(0.1 * n) / n)


