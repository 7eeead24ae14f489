"""Tests for config.py: flags, method defaults, the paper preset, validation."""

import dataclasses
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

import config
import data
import policy
import train
from methods import METHODS

REPO = Path(__file__).resolve().parent.parent


def test_help_runs_as_a_script():
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in ("--method", "--mu", "--preset", "--resume", "--mini-batches", "--keep-last",
                 "--forking-frac", "--clip-cov-ratio", "--clip-cov-lb", "--clip-cov-ub",
                 "--kl-cov-ratio", "--kl-cov-coef", "--probe-every"):
        assert flag in result.stdout
    assert "default: 8" in result.stdout      # defaults are shown


def test_method_and_preset_defaults():
    assert config.parse_args(["--method", "clipb"]).mu == 2.5
    assert config.parse_args(["--method", "clipv"]).mu == 8.5
    assert config.parse_args(["--method", "clipv", "--mu", "1.0"]).mu == 1.0
    b = config.parse_args(["--preset", "paper", "--method", "clipb"])
    v = config.parse_args(["--preset", "paper", "--method", "clipv", "--lr", "3e-6"])
    assert (b.group_size, v.group_size) == (16, 8)
    assert (b.model, b.dataset, b.holdout, b.prompts_per_step) == ("Qwen/Qwen2.5-7B-Instruct", "dapo-math", 500, 64)
    assert (b.max_new_tokens, b.lr, b.kl_coef, b.eval_n, b.eval_temperature, b.eval_every) == \
        (7168, 1e-6, 0.0, 32, 0.7, 20)
    assert v.lr == 3e-6                           # a given flag beats the preset
    # the released configuration of each mask: Clip-B mu 2.5 uncapped, Clip-V mu 8.5 capped at 1e-4
    assert (b.mu, b.clip_max_frac, v.mu, v.clip_max_frac) == (2.5, None, 8.5, 1e-4)
    assert (b.dual_clip, b.loss_agg, b.temperature) == (3.0, "token-mean", 1.0)
    assert config.parse_args(["--method", "clipv", "--mu", "1", "--seed", "3"]).out == str(Path("runs/clipv-mu1-seed3"))


def test_comparison_method_defaults():
    assert config.parse_args(["--method", "clip-higher"]).eps_high == 0.28
    assert config.parse_args(["--method", "entropy-bonus"]).entropy_coef == 1e-3
    assert config.parse_args(["--method", "entropy-bonus", "--entropy-coef", "0.01"]).entropy_coef == 0.01
    cfg = config.parse_args(["--method", "kl-cov"])
    assert (cfg.forking_frac, cfg.clip_cov_ratio, cfg.clip_cov_lb, cfg.clip_cov_ub) == (0.2, 2e-4, 1.0, 5.0)
    assert (cfg.kl_cov_ratio, cfg.kl_cov_coef, cfg.probe_every) == (2e-3, 1.0, 0)
    assert cfg.mu is None and cfg.out == str(Path("runs/kl-cov-seed0"))
    for method in [m for m, spec in METHODS.items() if not spec.takes_mu]:
        config.validate(config.parse_args(["--method", method]))     # no --mu needed


@pytest.mark.parametrize("flags, message", [
    (["--method", "clipb", "--mu", "0"], "--mu must be positive"),
    (["--method", "clipv", "--mu", "-1"], "--mu must be positive"),
    (["--method", "grpo", "--mu", "0"], "--mu must be positive"),
    (["--method", "grpo", "--mu", "0.5"],
     f"--method grpo has no mu (only {', '.join(m for m, spec in METHODS.items() if spec.takes_mu)} read it)"),
    (["--group-size", "1"], "--group-size must be at least 2"),
    (["--dataset", "no-such-set"], "unknown --dataset"),
    (["--prompts-per-step", "3", "--group-size", "2", "--mini-batches", "4"], "must divide"),
    # 6 responses split into 2 updates evenly, but 3 prompts do not: one group would be lost
    (["--prompts-per-step", "3", "--group-size", "2", "--mini-batches", "2"],
     "--mini-batches 2 must divide --prompts-per-step 3, so that every optimiser update sees whole prompt groups"),
    (["--prompts-per-step", "2", "--group-size", "4", "--mini-batches", "4"], "must divide --prompts-per-step 2"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--eval-n", "0"], "--eval-n must be at least 1"),
    (["--method", "forking", "--forking-frac", "0"], "--forking-frac must be in (0, 1]"),
    (["--method", "kl-cov", "--kl-cov-ratio", "2"], "--kl-cov-ratio must be in (0, 1]"),
    (["--method", "clip-cov", "--clip-cov-lb", "5", "--clip-cov-ub", "1"], "--clip-cov-lb must be below"),
    (["--probe-every", "-1"], "--probe-every must not be negative"),
    (["--seed", "-1"], "--seed must not be negative, got -1."),
    (["--dual-clip", "1"], "--dual-clip must be above 1"),
    (["--tis-cap", "0"], "--tis-cap must be positive"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
    (["--lr", "1e38"], "far too large"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--method", "clipv", "--mu", "nan"], "--mu must be a finite number"),
])
def test_impossible_values_are_rejected_before_loading_anything(flags, message, tmp_path, capsys):
    # the model path does not exist: reaching the model would give another message
    assert train.main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_unknown_method_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        config.parse_args(["--method", "nope"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err




# ----- --resume: what may change -----

def test_every_flag_has_one_place_in_the_resume_policy_and_the_docs_say_the_same():
    tables = [set(config.RESUME_MAY_CHANGE), set(config.RESUME_FIXED), set(config.RESUME_IGNORED)]
    assert sum(len(t) for t in tables) == len(set().union(*tables))
    assert set().union(*tables) == {f.name for f in fields(config.Config)}
    # the methods' parameters are documented by their rows (methods.METHODS), not listed on the page
    documented = {"may change": {p.name for p in config.METHOD_PARAMS.values() if p.resume},
                  "fixed": {p.name for p in config.METHOD_PARAMS.values() if not p.resume},
                  "not a setting": set()}
    for line in (REPO / "docs" / "failures.md").read_text().splitlines():
        row = line.split("|")
        if len(row) > 3 and row[1].strip() in documented:
            documented[row[1].strip()] |= {f.replace("-", "_") for f in re.findall(r"`--([\w-]+)", row[2])}
    assert list(documented.values()) == tables


def saved_run(out: Path, step: int = 3) -> Path:
    """A run folder whose checkpoint-<step> holds what --resume reads first: its saved config,
    beside the shipped model's files (so that checkpoint.verify finds it whole)."""
    cfg = config.parse_args(["--method", "clipb", "--mu", "1.0", "--out", str(out), "--steps", "5"])
    shutil.copytree(REPO / "tiny-qwen2", out / f"checkpoint-{step}")
    torch.save({"config": dataclasses.asdict(cfg), "step": step}, out / f"checkpoint-{step}" / "trainer_state.pt")
    return out


@pytest.mark.parametrize("flags, message", [
    (["--method", "clipv"], "--method cannot change at --resume: this run was trained with clipb, not clipv"),
    (["--mu", "2.0"], "--mu cannot change at --resume: this run was trained with 1.0, not 2.0"),
    (["--model", "Qwen/Qwen2.5-0.5B"], "--model cannot change at --resume"),
    (["--dataset", "gsm8k"], "--dataset cannot change at --resume"),
    (["--group-size", "4"], "--group-size cannot change at --resume: this run was trained with 8, not 4"),
    (["--seed", "1"], "--seed cannot change at --resume"),
    (["--loss-agg", "seq-mean-token-mean"], "--loss-agg cannot change at --resume"),
    (["--lr", "1e-3"], "--lr cannot change at --resume"),
    (["--steps", "2"], "--steps 2: this run is already at step 3, so --resume has nothing to train"),
])
def test_a_resume_that_would_rewrite_the_run_is_refused_before_loading_anything(flags, message, tmp_path, capsys,
                                                                              monkeypatch):
    out = saved_run(tmp_path / "run")     # refused before the model or the data load
    for module, name in ((policy, "load_policy"), (data, "load_run_sets")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("loaded before the refusal"))
    assert train.main(["--out", str(out), "--resume", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3"]


def test_a_resume_may_lengthen_the_run_and_change_how_it_is_observed(tmp_path, capsys):
    out = saved_run(tmp_path / "run", step=5)
    cfg = config.resolve_config(["--out", str(out), "--resume", "--eval-n", "2", "--micro-batch-size", "4"])
    assert (cfg.method, cfg.mu, cfg.eval_n, cfg.micro_batch_size, cfg.steps) == ("clipb", 1.0, 2, 4, 5)
    (out / "final").mkdir()                 # finished: the same command again has nothing to do
    assert train.main(["--out", str(out), "--resume"]) == 0     # (no weights: it loads nothing)
    assert "already finished its 5 steps (final/ is written); nothing to do" in capsys.readouterr().out
    assert config.resolve_config(["--out", str(out), "--resume", "--steps", "6"]).steps == 6
