"""The run's configuration: one dataclass whose fields are the command-line flags, the presets,
and validation.

    Config defaults < the method's defaults (methods.METHODS, e.g. its released mu) < --preset < flags

Every field of `Config` is a flag (`--name-with-dashes`) with its help text beside it, so the
defaults a run used, its `config.json` and `python train.py --help` cannot drift apart. With
--resume the saved configuration of the latest checkpoint is the base and only the flags given
now override it. `validate` rejects impossible settings with one sentence that says what to do,
before any model or data loads.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

import checkpoint
import data
import entropy
import grpo
import rewards
import rollout
import tracking
from methods import METHODS

REPO = Path(__file__).resolve().parent


def _opt(default, help: str, **argparse_kwargs):
    """A Config field that is also a command-line flag (--name-with-dashes)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


def _int_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


@dataclass
class Config:
    # method (paper section 3; README "Methods")
    method: str = _opt("grpo", "grpo keeps every token; clipb / clipv are the paper's masks; the "
                               "others are the entropy methods compared in the README",
                       choices=list(METHODS))
    mu: float | None = _opt(None, "threshold in sigmas (default: the method's released value, "
                                  "clipb 2.5, clipv 8.5); smaller removes more tokens", type=float)
    mu_pos: float = _opt(math.inf, "upper-side threshold for A > 0 tokens (inf: off, as released)")
    clip_max_frac: float | None = _opt(None, "cap on the A < 0 tokens a mask removes, as a fraction "
                                             "of the batch's tokens (release: 1e-4 for clipv, "
                                             "set by --preset paper)", type=float)
    # comparison methods; entropy-bonus uses --entropy-coef, clip-higher --eps-high
    forking_frac: float = _opt(0.2, "forking: fraction of the batch's tokens that train, those of "
                                    "highest entropy")
    clip_cov_ratio: float = _opt(2e-4, "clip-cov: fraction of tokens removed, drawn at random "
                                       "among those with covariance in (lb, ub)")
    clip_cov_lb: float = _opt(1.0, "clip-cov: lower bound of the covariance band")
    clip_cov_ub: float = _opt(5.0, "clip-cov: upper bound of the covariance band")
    kl_cov_ratio: float = _opt(2e-3, "kl-cov: fraction of tokens penalised, those of largest "
                                     "covariance")
    kl_cov_coef: float = _opt(1.0, "kl-cov: coefficient of |logp - old_logp| on those tokens")
    probe_every: int = _opt(0, "entropy probe every N steps: compare each token's measured "
                               "entropy change over the update with Theorem 2's prediction (0: never)")
    # model and data
    model: str = _opt(str(REPO / "tiny-qwen2"), "local model folder or hub id")
    dataset: str = _opt("synthetic", "training set: synthetic, a short name of data.KNOWN, or a "
                                     "local .jsonl/.json/.parquet/.csv file")
    split: str | None = _opt(None, "split of --dataset (default: train for synthetic, the "
                                   "table's split for data.KNOWN names)")
    question_key: str | None = _opt(None, "question column of a local file")
    answer_key: str | None = _opt(None, "answer column of a local file")
    holdout: int = _opt(0, "problems of --dataset held out from training as the 'heldout' "
                           "evaluation set (the paper: 500)")
    prompt_style: str = _opt("qwen-math", "prompt template; it also picks the reward's answer "
                                          "format", choices=list(data.PROMPT_STYLES))
    box_rule: str = _opt("last", "with several \\boxed{} answers: the last decides (as verl and "
                                 "math-verify), or strict: all must agree",
                         choices=list(rewards.BOX_RULES))
    # rollouts
    steps: int = _opt(100, "training steps (one rollout batch each)")
    prompts_per_step: int = _opt(8, "prompts per rollout batch")
    group_size: int = _opt(8, "responses per prompt (GRPO group)")
    max_new_tokens: int = _opt(48, "maximum response length in tokens")
    temperature: float = _opt(1.0, "sampling temperature (statistics and loss use the same)")
    top_p: float = _opt(1.0, "nucleus sampling")
    gen_batch_size: int = _opt(64, "sequences per generate call (the generate engine)")
    rollout_engine: str = _opt("generate", "generate: HF model.generate, padded batches; paged: "
                                           "transformers' continuous batching (generate_batch)",
                               choices=list(rollout.ENGINES))
    # optimisation (paper section 2.2)
    lr: float = _opt(1e-4, "AdamW learning rate (for the tiny model; the paper uses 1e-6 "
                                  "for 7B models)")
    warmup_steps: int = _opt(0, "linear learning-rate warm-up, in steps")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    grad_clip: float = _opt(1.0, "clip the gradient norm at this value (0: no clipping)")
    eps_low: float = _opt(0.2, "ratio clip, lower side")
    eps_high: float = _opt(0.2, "ratio clip, upper side (clip-higher: 0.28)")
    dual_clip: float = _opt(3.0, "dual-clip PPO bound c: for A < 0 the token loss is at most "
                                 "-c A (verl's clip_ratio_c; inf: off)")
    kl_coef: float = _opt(0.0, "k3 KL penalty to the initial model (0: no reference model)")
    entropy_coef: float = _opt(0.0, "entropy bonus coefficient (entropy-bonus method: 0.001)")
    tis_cap: float | None = _opt(None, "truncated importance sampling: weight each token's policy "
                                       "loss by min(pi_old / pi_sampler, C), for a sampler that "
                                       "differs from the trainer (bf16 sampling; off by default)",
                                 type=float)
    loss_agg: str = _opt("token-mean", "loss normalisation", choices=list(grpo.LOSS_AGG_MODES))
    adv_std: bool = _opt(True, "divide advantages by the group std (--no-adv-std: Dr. GRPO)")
    mini_batches: int = _opt(1, "optimiser updates per rollout batch (1: strictly on-policy)")
    micro_batch_size: int = _opt(16, "sequences per forward/backward in scoring and updates")
    chunk_size: int = _opt(entropy.CHUNK_SIZE, "tokens per chunk of the vocabulary-wide statistics")
    # hardware
    dtype: str = _opt("auto", "autocast dtype of forward passes and the dtype rollouts are sampled "
                              "in (from a copy of the weights); weights and optimiser stay "
                              "float32 (auto: bfloat16 on CUDA, float32 elsewhere)",
                      choices=["auto", "bfloat16", "float32"])
    device: str = _opt("auto", "auto: cuda, then mps, then cpu", choices=["auto", "cuda", "mps", "cpu"])
    gradient_checkpointing: bool = _opt(False, "recompute activations in backward to save memory")
    seed: int = _opt(0, "seed of data order, sampling and initial RNG states")
    # evaluation (eval.py)
    eval_every: int = _opt(50, "evaluate before training, every N steps and at the end "
                                 "(0: never)")
    eval_datasets: str = _opt("auto", "comma-separated names as in --dataset, 'NAME:SPLIT', or "
                                      "'heldout' (auto: synthetic:test when training on the "
                                      "synthetic task, heldout when --holdout > 0)")
    eval_n: int = _opt(4, "samples per evaluation problem")
    eval_temperature: float = _opt(1.0, "evaluation sampling temperature (the paper: 0.7)")
    eval_top_p: float = _opt(1.0, "evaluation nucleus sampling")
    eval_max_new_tokens: int | None = _opt(None, "default: --max-new-tokens", type=int)
    eval_limit: int | None = _opt(None, "problems per evaluation set ('none': all)", type=_int_or_none)
    eval_batch_size: int = _opt(64, "sequences per evaluation generate call")
    # output
    out: str | None = _opt(None, "run directory (default: runs/<method>[-mu<mu>]-seed<seed>)")
    save_every: int = _opt(25, "checkpoint every N steps (and at the end, and on SIGINT/SIGTERM)")
    keep_last: int = _opt(2, "checkpoints kept")
    save_optimizer: bool = _opt(True, "checkpoints hold AdamW's state, 2/3 of their size "
                                      "(--no-save-optimizer: weights only; --resume then "
                                      "restarts AdamW's moments)")
    sample_every: int = _opt(10, "write a few decoded responses to samples.jsonl every N steps")
    report_to: str | list = _opt("none", "also send metrics, evaluations, the configuration and "
                                         "samples to these trackers: tensorboard, wandb, trackio "
                                         "(comma- or space-separated; none: metrics.jsonl only)",
                                 nargs="+")
    resume: bool = _opt(False, "continue the latest checkpoint in --out (its saved config, "
                               "overridden by flags given now)")
    dry_run: bool = _opt(False, "print what the run will generate, its disk and a memory "
                                "estimate (memory.py), then exit without loading any weights")
    preset: str = _opt("none", "paper: the authors' released configuration (flags given still win)",
                       choices=["none", "paper"])


def paper_preset(method: str) -> dict:
    """The authors' released configuration (paper section 4). It needs several 80 GB
    GPUs for a 7B model; on one GPU use a smaller Qwen2.5 with the same settings (--model)."""
    return dict(model="Qwen/Qwen2.5-7B-Instruct", dataset="dapo-math", holdout=500,
                prompts_per_step=64, group_size=16 if method == "clipb" else 8,
                temperature=1.0, max_new_tokens=7168, lr=1e-6, kl_coef=0.0, eps_low=0.2,
                eps_high=0.2, steps=500, eval_every=20, eval_n=32, eval_temperature=0.7,
                eval_datasets="aime24,aime25,amc23,heldout", eval_limit=None, save_every=20,
                gen_batch_size=256, micro_batch_size=4, gradient_checkpointing=True,
                clip_max_frac=1e-4 if method == "clipv" else None)   # released: Clip-V capped


PRESETS = {"none": lambda method: {}, "paper": paper_preset}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" unless the help text already explains the default."""
    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(show_defaults: bool = True) -> argparse.ArgumentParser:
    """One flag per Config field. show_defaults=False leaves unset flags out of the result, which
    tells which flags were given (a resumed run keeps its saved config for the others)."""
    parser = argparse.ArgumentParser(
        description="GRPO reinforcement fine-tuning with the entropy-discriminator masks Clip-B / "
                    "Clip-V (arXiv 2602.03392).",
        formatter_class=_HelpFormatter, argument_default=None if show_defaults else argparse.SUPPRESS)
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        kwargs = dict(f.metadata)
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif "type" not in kwargs:
            kwargs["type"] = str if f.default is None else type(f.default)
        if show_defaults:
            kwargs["default"] = f.default
        parser.add_argument(flag, **kwargs)
    return parser


def parse_args(argv: list[str] | None = None) -> "Config":
    """Flags -> Config. Precedence: Config defaults < the method's defaults < the preset < flags."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    parser.set_defaults(**METHODS[first.method].defaults, **PRESETS[first.preset](first.method))
    cfg = Config(**vars(parser.parse_args(argv)))
    if cfg.out is None:
        mu = f"-mu{cfg.mu:g}" if cfg.mu is not None else ""
        cfg.out = str(Path("runs") / f"{cfg.method}{mu}-seed{cfg.seed}")
    return cfg


def given_flags(argv: list[str] | None) -> dict:
    """The flags present on the command line, as Config field values."""
    return vars(build_parser(show_defaults=False).parse_args(argv))


INFINITE_OK = ("mu_pos", "dual_clip")   # inf turns these off


def validate(cfg: Config) -> None:
    """Reject impossible settings with one clear sentence, before any model or data loads."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    need(cfg.method in METHODS, f"unknown --method {cfg.method!r}; choose one of {', '.join(METHODS)}.")
    for f in fields(cfg):   # inf / nan only where a field says it means "off"
        value = getattr(cfg, f.name)
        if isinstance(value, float) and f.name not in INFINITE_OK:
            need(math.isfinite(value), f"--{f.name.replace('_', '-')} must be a finite number, got {value}.")
    need(cfg.lr <= 1, f"--lr {cfg.lr} is far too large (GRPO uses 1e-6 to 1e-4); choose one below 1.")
    need(cfg.mu is None or cfg.mu > 0, f"--mu must be positive, got {cfg.mu}.")
    need(cfg.mu is not None or not METHODS[cfg.method].takes_mu, f"--method {cfg.method} needs --mu.")
    for name in ("forking_frac", "clip_cov_ratio", "kl_cov_ratio"):
        need(0 < getattr(cfg, name) <= 1, f"--{name.replace('_', '-')} must be in (0, 1], "
                                          f"got {getattr(cfg, name)}.")
    need(cfg.clip_cov_lb < cfg.clip_cov_ub, f"--clip-cov-lb must be below --clip-cov-ub, got "
                                            f"{cfg.clip_cov_lb} and {cfg.clip_cov_ub}.")
    need(cfg.dual_clip > 1, f"--dual-clip must be above 1 (inf turns it off), got {cfg.dual_clip}.")
    need(cfg.tis_cap is None or cfg.tis_cap > 0, f"--tis-cap must be positive (leave it out to "
                                                  f"turn truncated importance sampling off), got {cfg.tis_cap}.")
    need(cfg.mu_pos > 0, f"--mu-pos must be positive (inf turns it off), got {cfg.mu_pos}.")
    need(cfg.clip_max_frac is None or 0 < cfg.clip_max_frac <= 1,
         f"--clip-max-frac must be in (0, 1], got {cfg.clip_max_frac}.")
    known = cfg.dataset == "synthetic" or cfg.dataset in data.KNOWN or Path(cfg.dataset).is_file()
    need(known, f"unknown --dataset {cfg.dataset!r}: use synthetic, one of "
                f"{', '.join(sorted(data.KNOWN))}, or the path of an existing local file.")
    need(cfg.group_size >= 2, f"--group-size must be at least 2 (advantages compare responses "
                              f"to the same prompt), got {cfg.group_size}.")
    for name in ("steps", "prompts_per_step", "max_new_tokens", "gen_batch_size", "mini_batches",
                 "micro_batch_size", "chunk_size", "eval_n", "eval_batch_size", "save_every",
                 "keep_last", "sample_every"):
        need(getattr(cfg, name) >= 1, f"--{name.replace('_', '-')} must be at least 1, "
                                      f"got {getattr(cfg, name)}.")
    for name in ("holdout", "warmup_steps", "weight_decay", "grad_clip", "kl_coef",
                 "entropy_coef", "kl_cov_coef", "eval_every", "probe_every"):
        need(getattr(cfg, name) >= 0, f"--{name.replace('_', '-')} must not be negative, "
                                      f"got {getattr(cfg, name)}.")
    rows = cfg.prompts_per_step * cfg.group_size
    need(rows % cfg.mini_batches == 0, f"--mini-batches {cfg.mini_batches} must divide the "
                                       f"{rows} responses of a step (prompts x group size).")
    need(cfg.lr > 0, f"--lr must be positive, got {cfg.lr}.")
    need(cfg.temperature > 0, f"--temperature must be positive for training (the loss uses "
                              f"softmax(z / T)), got {cfg.temperature}.")
    need(0 < cfg.top_p <= 1 and 0 < cfg.eval_top_p <= 1, "--top-p and --eval-top-p must be in (0, 1].")
    need(0 <= cfg.eps_low < 1 and cfg.eps_high >= 0, f"--eps-low must be in [0, 1) and --eps-high "
                                                     f"non-negative, got {cfg.eps_low}, {cfg.eps_high}.")
    need(cfg.eval_temperature >= 0, f"--eval-temperature must not be negative, got {cfg.eval_temperature}.")
    need(cfg.eval_limit is None or cfg.eval_limit >= 1, f"--eval-limit must be at least 1, got {cfg.eval_limit}.")
    need(cfg.eval_max_new_tokens is None or cfg.eval_max_new_tokens >= 1,
         f"--eval-max-new-tokens must be at least 1, got {cfg.eval_max_new_tokens}.")
    tracking.check(cfg.report_to)
    need(not (cfg.device == "cuda" and not torch.cuda.is_available()),
         "--device cuda was asked for but no CUDA device is visible; use --device auto or cpu.")


def resolve_config(argv: list[str] | None) -> Config:
    """parse_args; with --resume, the saved config of the latest checkpoint overridden by the
    flags given now. Validated."""
    cfg = parse_args(argv)
    if cfg.resume:
        latest = checkpoint.latest(Path(cfg.out))
        if latest is None:
            raise ValueError(f"--resume found no complete checkpoint in {cfg.out}; check --out, "
                             f"or drop --resume to start a new run.")
        saved = checkpoint.load_trainer_state(latest)["config"]
        cfg = Config(**{**saved, **given_flags(argv), "resume": True})
    validate(cfg)
    return cfg
