"""Shared test fixtures: a random 2-layer Qwen2 with a BPE tokenizer (fast; its rewards are all
0, so tests that need a gradient set advantages by hand) and a real rollout batch of it."""

import dataclasses

import pytest
import torch

import build_tiny_model
import data
import policy
import train

CPU_AMP = policy.autocast(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory) -> str:
    """A random Qwen2 (hidden 32, 2 layers) and a BPE tokenizer with the chat template, saved."""
    torch.manual_seed(0)
    texts = [e.question for e in data.synthetic_examples("train", n=200)]
    tokenizer = build_tiny_model.build_tokenizer(texts, vocab_size=300)
    model = build_tiny_model.build_model(tokenizer, hidden=32, layers=2)
    path = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def rollout_with_advantages(model, tokenizer, cfg):
    """A real rollout batch of the synthetic task, its advantages set to +-1 within each group
    (a random model earns no reward, and a zero advantage gives no gradient)."""
    examples = data.synthetic_examples("train", n=8)
    batch, _ = train.rollout_step(model, tokenizer, examples, list(range(cfg.prompts_per_step)),
                                          cfg, step=1, amp=CPU_AMP)
    batch = dataclasses.replace(batch, advantages=torch.tensor([1.0, -1.0] * (len(batch) // 2)))
    return batch


