"""Tests for config.py: flags, method defaults, the paper preset, validation."""

import subprocess
import sys
from pathlib import Path

import pytest

import config
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
    assert (b.max_new_tokens, b.lr, b.kl_coef, b.eval_n, b.eval_temperature, b.eval_every) == (7168, 1e-6, 0.0, 32, 0.7, 20)
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
    (["--group-size", "1"], "--group-size must be at least 2"),
    (["--dataset", "no-such-set"], "unknown --dataset"),
    (["--prompts-per-step", "3", "--group-size", "2", "--mini-batches", "4"], "must divide"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--eval-n", "0"], "--eval-n must be at least 1"),
    (["--method", "forking", "--forking-frac", "0"], "--forking-frac must be in (0, 1]"),
    (["--method", "kl-cov", "--kl-cov-ratio", "2"], "--kl-cov-ratio must be in (0, 1]"),
    (["--method", "clip-cov", "--clip-cov-lb", "5", "--clip-cov-ub", "1"], "--clip-cov-lb must be below"),
    (["--probe-every", "-1"], "--probe-every must not be negative"),
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


