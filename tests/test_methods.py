"""Tests for methods.py: every row of the method table masks a real rollout batch as its
clipping.py function says, and runs are labelled by method and mu."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import config
import policy
from conftest import rollout_with_advantages
from methods import METHODS, label

REPO = Path(__file__).resolve().parent.parent


def test_labels_name_mu_only_for_methods_that_read_it():
    assert label("clipv", 1.0) == "clipv mu=1.0" and label("clipb", 2.5) == "clipb mu=2.5"
    assert label("grpo", None) == "grpo" and label("grpo", 1.0) == "grpo"
    takers = {m for m, spec in METHODS.items() if spec.takes_mu}
    assert {"clipb", "clipv"} <= takers and "grpo" not in takers
    assert all(label(m, 1.0) == f"{m} mu=1.0" for m in takers)


def test_method_table_masks(tiny_path):
    cfg = config.parse_args(["--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "8",
                            "--method", "clipb", "--mu", "0.1"])
    model, tokenizer = policy.load_policy(tiny_path, torch.device("cpu"))
    batch = rollout_with_advantages(model, tokenizer, cfg)
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
    batch = rollout_with_advantages(model, tokenizer, cfg)
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


# A method with one parameter, added in one place: the example of docs/methods.md, "Adding a
# method" (its row, added before config.py is imported), then a 2-step run of it.
EXAMPLE = (REPO / "docs" / "methods.md").read_text().split("## Adding a method", 1)[1].split("```python\n", 1)[1]
ADD_A_METHOD = EXAMPLE.split("```", 1)[0] + '''
import json, sys
import config, train
out = sys.argv[1]
flags = ["--method", "drop-low", "--steps", "2", "--eval-every", "0", "--out", out]
print(json.dumps({"bad": train.main([*flags, "--drop-frac", "2"]), "status": train.main(flags),
                  "fixed": "drop_frac" in config.RESUME_FIXED,
                  "help": "--drop-frac" in config.build_parser().format_help()}))
'''


def test_a_method_with_a_parameter_is_one_row(tmp_path):
    script = tmp_path / "add_a_method.py"
    script.write_text(ADD_A_METHOD)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], cwd=REPO, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"bad": 2, "status": 0, "fixed": True, "help": True}
    assert "error: --drop-frac must be in (0, 1], got 2.0." in run.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert any(r["masked_frac_neg"] > 0 for r in records)
    assert all(0.5 - 0.1 < r["masked_frac_neg"] <= 0.5 or r["masked_frac"] == 0 for r in records)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["drop_frac"] == 0.5
