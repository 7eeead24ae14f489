"""GRPO reinforcement fine-tuning with the entropy-discriminator masks Clip-B / Clip-V.

    python train.py --method clipv --mu 1.0                  # tiny-qwen2 on the synthetic task, CPU
    python train.py --preset paper --method clipb            # the authors' released configuration
    python train.py --out runs/x --resume                    # continue the latest checkpoint

One training step (DESIGN 3):
  1. sample prompts_per_step prompts (seeded; a fresh permutation each epoch, no prompt twice in
     an epoch) and draw group_size responses each with `rollout.generate`;
  2. grade them (`rewards.batch_rewards`) and turn rewards into group advantages
     A = (r - mean) / (std + 1e-6) (`grpo.group_advantages`, DESIGN 3.1);
  3. score the responses under the sampling policy (`rollout.score`): logp, H, S* and E[S] per
     token, with S* = pi(a) (H + log pi(a)) the entropy discriminator;
  4. the method's token mask (METHODS): GRPO keeps every token; Clip-B / Clip-V drop the tokens
     whose update Theorem 2, dH ~ -alpha (S* - E[S]), says lowers entropy the most
     (A < 0 and d < -mu sigma; DESIGN 3.3), with the statistics of the whole rollout batch;
  5. `mini_batches` optimiser updates on the clipped surrogate (`grpo.policy_loss`, DESIGN 3.2),
     each over micro-batches whose losses are normalised by the kept-token count of the whole
     mini-batch, so micro-batching never changes the gradient;
  6. metrics, samples, evaluation (`eval.evaluate`), checkpoints.

Choices and why:
* Master weights and AdamW state are float32 on every device; on CUDA the forward passes run
  under bf16 autocast (--dtype). Weights held in bf16 silently drop updates at the paper's
  lr 1e-6: bf16 keeps 8 bits of mantissa, so w + 1e-6 == w for any |w| > ~3e-4.
* The rollout statistics (old_logp, S*, E[S], the masks) come from one no-grad scoring pass
  before the batch is split, as in the authors' release; with mini_batches = 1 the update is
  strictly on-policy (ratio 1).
* Every run is resumable bit for bit on CPU: the checkpoint holds the model, optimiser,
  scheduler, every RNG state, the sampler position and the config, and rollouts are seeded
  from (seed, step). Checkpoints are written to a temporary folder and renamed, so an
  interrupted save never damages the previous checkpoint.
* Defaults are sized for the shipped tiny model on a CPU (a few minutes). The paper's lr 1e-6
  is for a 7B model; --preset paper sets it together with the rest of the paper's settings.
* A method is one row of METHODS: a mask function plus the flag defaults it implies (its
  released mu). Beside GRPO and the paper's Clip-B / Clip-V, the rows are the entropy methods
  of DESIGN 3.4, to compare side by side (all log the same masked_frac* / clip_* metrics):
  clip-higher (eps_high 0.28), entropy-bonus (--entropy-coef 0.001, verl's long-time default),
  forking (train on the top --forking-frac of tokens by entropy), clip-cov and kl-cov (Cui et
  al. 2025, released ratios, bounds and coefficient; masks fixed per step from old_logp, see
  clipping.py), and the Theorem-2 filters entropy-up / entropy-down.
* --probe-every N: after the update of every N-th step, the same batch is scored again and the
  measured change of each token's entropy is compared with Theorem 2's prediction
  -A_t (S*_t - E[S]_t) from before the update (`probe`; metrics probe/*). The prediction is first
  order in an SGD step on the logits; the probe measures how far it holds for an AdamW step on
  shared weights (and, with --mini-batches > 1, several steps).
"""

import argparse
import dataclasses
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

import clipping
import data
import entropy
import eval as evaluation
import grpo
import rewards
import rollout

REPO = Path(__file__).resolve().parent
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
MAX_NONFINITE_IN_A_ROW = 3


# ----------------------------------------------------------------------------- methods

@dataclass(frozen=True)
class Method:
    """mask(batch, cfg) -> (keep (N, R) bool, metrics); defaults: flag values the method implies
    when the user does not give them (e.g. its released mu); penalty(batch, cfg) -> (tokens
    penalised by --kl-cov-coef |logp - old_logp| (N, R) bool, metrics), for KL-Cov; its metrics
    replace the mask's."""
    mask: Callable[["rollout.RolloutBatch", "Config"], tuple[Tensor, dict[str, float]]]
    defaults: dict
    penalty: Callable[["rollout.RolloutBatch", "Config"], tuple[Tensor, dict[str, float]]] | None = None


def _keep_all(batch, cfg):
    keep = batch.response_mask.clone()
    return keep, {"masked_frac": 0.0, "masked_frac_pos": 0.0, "masked_frac_neg": 0.0}


def _clip_b(batch, cfg):
    return clipping.clip_b_mask(batch.s_star, batch.advantages, batch.response_mask, cfg.mu,
                                cfg.mu_pos, cfg.clip_max_frac)


def _clip_v(batch, cfg):
    return clipping.clip_v_mask(batch.s_star, batch.es, batch.advantages, batch.response_mask,
                                cfg.mu, cfg.mu_pos, cfg.clip_max_frac)


def _forking(batch, cfg):
    return clipping.forking_mask(batch.entropy, batch.advantages, batch.response_mask, cfg.forking_frac)


def _clip_cov(batch, cfg):
    # The random draw uses the global torch RNG: seeded by --seed and saved in checkpoints.
    return clipping.clip_cov_mask(batch.old_logp, batch.advantages, batch.response_mask,
                                  cfg.clip_cov_ratio, cfg.clip_cov_lb, cfg.clip_cov_ub)


def _kl_cov(batch, cfg):
    return clipping.kl_cov_mask(batch.old_logp, batch.advantages, batch.response_mask, cfg.kl_cov_ratio)


def _entropy_direction(direction: str):
    def mask(batch, cfg):
        return clipping.entropy_direction_mask(batch.s_star, batch.es, batch.advantages,
                                               batch.response_mask, direction)
    return mask


METHODS = {
    "grpo": Method(_keep_all, {}),
    "clipb": Method(_clip_b, {"mu": 2.5}),    # released default (swept 2.0 to 3.0)
    "clipv": Method(_clip_v, {"mu": 8.5}),    # released default (swept 7.5 to 8.5)
    # DESIGN 3.4, for comparison; their parameters are flags with the released defaults
    "clip-higher": Method(_keep_all, {"eps_high": 0.28}),          # DAPO
    "entropy-bonus": Method(_keep_all, {"entropy_coef": 1e-3}),    # verl's long-time default
    "forking": Method(_forking, {}),
    "clip-cov": Method(_clip_cov, {}),
    "kl-cov": Method(_keep_all, {}, penalty=_kl_cov),
    "entropy-up": Method(_entropy_direction("up"), {}),
    "entropy-down": Method(_entropy_direction("down"), {}),
}
MU_METHODS = ("clipb", "clipv")


# ----------------------------------------------------------------------------- configuration

def _opt(default, help: str, **argparse_kwargs):
    """A Config field that is also a command-line flag (--name-with-dashes)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


def _int_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


@dataclass
class Config:
    # method (DESIGN 3.3)
    method: str = _opt("grpo", "grpo keeps every token; clipb / clipv are the paper's masks; the "
                               "others are the entropy methods compared in DESIGN 3.4",
                       choices=list(METHODS))
    mu: float | None = _opt(None, "threshold in sigmas (default: the method's released value, "
                                  "clipb 2.5, clipv 8.5); smaller removes more tokens", type=float)
    mu_pos: float = _opt(math.inf, "upper-side threshold for A > 0 tokens (inf: off, as released)")
    clip_max_frac: float | None = _opt(None, "cap on the fraction of tokens a mask removes "
                                             "(release: 1e-4 for clipv)", type=float)
    # comparison methods (DESIGN 3.4); entropy-bonus uses --entropy-coef, clip-higher --eps-high
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
    # rollouts
    steps: int = _opt(100, "training steps (one rollout batch each)")
    prompts_per_step: int = _opt(8, "prompts per rollout batch")
    group_size: int = _opt(8, "responses per prompt (GRPO group)")
    max_new_tokens: int = _opt(48, "maximum response length in tokens")
    temperature: float = _opt(1.0, "sampling temperature (statistics and loss use the same)")
    top_p: float = _opt(1.0, "nucleus sampling")
    gen_batch_size: int = _opt(64, "sequences per generate call")
    # optimisation (DESIGN 3.2)
    lr: float = _opt(1e-4, "AdamW learning rate (for the tiny model; the paper uses 1e-6 "
                                  "for 7B models)")
    warmup_steps: int = _opt(0, "linear learning-rate warm-up, in steps")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    grad_clip: float = _opt(1.0, "clip the gradient norm at this value (0: no clipping)")
    eps_low: float = _opt(0.2, "ratio clip, lower side")
    eps_high: float = _opt(0.2, "ratio clip, upper side (clip-higher: 0.28)")
    kl_coef: float = _opt(0.0, "k3 KL penalty to the initial model (0: no reference model)")
    entropy_coef: float = _opt(0.0, "entropy bonus coefficient (entropy-bonus method: 0.001)")
    loss_agg: str = _opt("token-mean", "loss normalisation", choices=list(grpo.LOSS_AGG_MODES))
    adv_std: bool = _opt(True, "divide advantages by the group std (--no-adv-std: Dr. GRPO)")
    mini_batches: int = _opt(1, "optimiser updates per rollout batch (1: strictly on-policy)")
    micro_batch_size: int = _opt(16, "sequences per forward/backward in scoring and updates")
    chunk_size: int = _opt(entropy.CHUNK_SIZE, "tokens per chunk of the vocabulary-wide statistics")
    # hardware
    dtype: str = _opt("auto", "autocast dtype of forward passes; weights and optimiser stay "
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
    sample_every: int = _opt(10, "write a few decoded responses to samples.jsonl every N steps")
    resume: bool = _opt(False, "continue the latest checkpoint in --out (its saved config, "
                               "overridden by flags given now)")
    preset: str = _opt("none", "paper: the authors' released configuration (flags given still win)",
                       choices=["none", "paper"])


def paper_preset(method: str) -> dict:
    """The authors' released configuration (DESIGN 7, paper section 4). It needs several 80 GB
    GPUs for a 7B model; on one GPU use a smaller Qwen2.5 with the same settings (--model)."""
    return dict(model="Qwen/Qwen2.5-7B-Instruct", dataset="dapo-math", holdout=500,
                prompts_per_step=64, group_size=16 if method == "clipb" else 8,
                temperature=1.0, max_new_tokens=7168, lr=1e-6, kl_coef=0.0, eps_low=0.2,
                eps_high=0.2, steps=500, eval_every=20, eval_n=32, eval_temperature=0.7,
                eval_datasets="aime24,aime25,amc23,heldout", eval_limit=None, save_every=20,
                gen_batch_size=256, micro_batch_size=4, gradient_checkpointing=True)


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
        description=__doc__.split("\n\n")[0],
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


def validate(cfg: Config) -> None:
    """Reject impossible settings with one clear sentence, before any model or data loads."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    need(cfg.method in METHODS, f"unknown --method {cfg.method!r}; choose one of {', '.join(METHODS)}.")
    need(cfg.mu is None or cfg.mu > 0, f"--mu must be positive, got {cfg.mu}.")
    need(cfg.mu is not None or cfg.method not in MU_METHODS, f"--method {cfg.method} needs --mu.")
    for name in ("forking_frac", "clip_cov_ratio", "kl_cov_ratio"):
        need(0 < getattr(cfg, name) <= 1, f"--{name.replace('_', '-')} must be in (0, 1], "
                                          f"got {getattr(cfg, name)}.")
    need(cfg.clip_cov_lb < cfg.clip_cov_ub, f"--clip-cov-lb must be below --clip-cov-ub, got "
                                            f"{cfg.clip_cov_lb} and {cfg.clip_cov_ub}.")
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
    need(not (cfg.device == "cuda" and not torch.cuda.is_available()),
         "--device cuda was asked for but no CUDA device is visible; use --device auto or cpu.")


# ----------------------------------------------------------------------------- data order

@dataclass
class PromptSampler:
    """Seeded order over n prompts: epoch e is permutation(seed, e), taken k at a time; a tail
    shorter than k is dropped, so no prompt appears twice in an epoch or in a step."""
    n: int
    seed: int
    epoch: int = 0
    pos: int = 0

    def permutation(self, epoch: int) -> list[int]:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n).tolist()

    def next(self, k: int) -> list[int]:
        if self.pos + k > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
        indices = self.permutation(self.epoch)[self.pos:self.pos + k]
        self.pos += k
        return indices

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]


def load_data(cfg: Config) -> tuple[list, dict[str, list]]:
    """(training examples, {evaluation set name: examples}). The held-out problems are a fixed
    seeded subset (seed 0, so runs with different --seed evaluate on the same problems)."""
    examples = data.load_examples(cfg.dataset, split=cfg.split, question_key=cfg.question_key,
                                  answer_key=cfg.answer_key, seed=0)
    examples, heldout = data.split_holdout(examples, cfg.holdout, seed=0)
    if len(examples) < cfg.prompts_per_step:
        raise ValueError(f"--dataset {cfg.dataset} has {len(examples)} training problems (after "
                         f"--holdout {cfg.holdout}), fewer than --prompts-per-step "
                         f"{cfg.prompts_per_step}; lower one of them.")
    eval_sets = {}
    if cfg.eval_every:
        names = cfg.eval_datasets
        if names == "auto":
            names = ",".join((["synthetic:test"] if cfg.dataset == "synthetic" else [])
                             + (["heldout"] if cfg.holdout else []))
        for spec in filter(None, (s.strip() for s in names.split(","))):
            if spec == "heldout":
                if not heldout:
                    raise ValueError("--eval-datasets names 'heldout' but --holdout is 0; "
                                     "hold some problems out or drop 'heldout'.")
                eval_sets[spec] = heldout[:cfg.eval_limit]
            else:
                eval_sets[spec] = evaluation.load_set(spec, cfg.eval_limit)
    return examples, eval_sets


# ----------------------------------------------------------------------------- model

def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The dtype forward passes run in under autocast; None: plain float32."""
    name = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return None if name == "float32" else getattr(torch, name)


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def load_policy(path: str, device: torch.device, gradient_checkpointing: bool = False):
    """(model, tokenizer) with float32 master weights on `device`, whatever dtype was saved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except OSError as err:
        raise ValueError(f"could not load the model {path!r}: it is not a local model folder and "
                         f"could not be fetched from the Hugging Face hub ({err}). Pass a local "
                         f"folder (--model), or check the id and your network.") from None
    model.to(device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def make_optimizer(model, cfg: Config):
    """AdamW on the float32 weights, and a linear warm-up to a constant learning rate (stepped
    once per training step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return optimizer, scheduler


# ----------------------------------------------------------------------------- one step

def rollout_step(model, tokenizer, examples: list, indices: list[int], cfg: Config, step: int,
                 amp, ref_model=None) -> tuple["rollout.RolloutBatch", dict[str, Tensor], dict]:
    """Steps 1-4 of the docstring for the prompts examples[indices].

    Returns (batch with rewards / advantages / old_logp / entropy / s_star / es filled,
    extras {"keep": (N, R) bool, "ref_logp": (N, R) when --kl-coef > 0}, metrics)."""
    prompts = [data.format_prompt(tokenizer, examples[i].question, cfg.prompt_style) for i in indices]
    answers = [examples[i].answer for i in indices]
    t0 = time.perf_counter()
    with amp:
        batch = rollout.generate(model, tokenizer, prompts, answers, cfg.group_size,
                                 cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                 cfg.gen_batch_size, seed=cfg.seed * 1_000_003 + step)
    t1 = time.perf_counter()
    device = batch.response_ids.device
    scores = rewards.batch_rewards(batch.texts, batch.answers, style=data.reward_style(cfg.prompt_style))
    batch.rewards = torch.tensor(scores, dtype=torch.float32, device=device)
    batch.advantages = grpo.group_advantages(batch.rewards, cfg.group_size, scale_std=cfg.adv_std)
    with amp:
        batch = rollout.score(model, batch, cfg.temperature, cfg.micro_batch_size, cfg.chunk_size)
        extras = {}
        if ref_model is not None:   # score a shallow copy: score fills the batch it is given
            extras["ref_logp"] = rollout.score(ref_model, dataclasses.replace(batch), cfg.temperature,
                                               cfg.micro_batch_size, cfg.chunk_size).old_logp
    t2 = time.perf_counter()
    method = METHODS[cfg.method]
    keep, mask_metrics = method.mask(batch, cfg)
    extras["keep"] = keep
    if method.penalty is not None:
        extras["penalised"], mask_metrics = method.penalty(batch, cfg)

    valid = batch.response_mask
    lengths = valid.sum(-1).float()
    spread = batch.rewards.view(-1, cfg.group_size).std(-1)
    metrics = {
        "reward": batch.rewards.mean().item(),
        "accuracy": (batch.rewards > 0.5).float().mean().item(),
        "entropy": batch.entropy[valid].mean().item(),
        "s_star": batch.s_star[valid].mean().item(),
        "es": batch.es[valid].mean().item(),
        **{k if k.startswith("masked") else f"clip_{k}": v for k, v in mask_metrics.items()},
        "response_len": lengths.mean().item(),
        "response_len_max": int(lengths.max()),
        "truncated_frac": batch.truncated.float().mean().item(),
        "zero_spread_frac": (spread == 0).float().mean().item(),
        "time_generate": t1 - t0,
        "time_score": t2 - t1,
    }
    return batch, extras, metrics


def _rows(batch, extras: dict[str, Tensor], idx: Tensor):
    """batch.select(idx) and the extras cut the same way (rows idx, columns of the selection)."""
    sub = batch.select(idx)
    width = sub.response_ids.shape[1]
    return sub, {k: v[idx, :width] for k, v in extras.items()}


def update_step(model, optimizer, batch, extras: dict[str, Tensor], cfg: Config, amp) -> dict:
    """Step 5: cfg.mini_batches optimiser updates over contiguous slices of the batch.

    Each mini-batch is processed micro_batch_size rows at a time; every micro-batch loss is
    normalised by the kept-token (and sequence) count of its whole mini-batch, so the
    accumulated gradient equals that of one pass over the mini-batch. A non-finite loss or
    gradient norm skips that update (the gradient is discarded) and is reported.
    Returns metrics: loss, grad_norm (means over updates), ratio-clip fractions, approx_kl,
    ratio_mean (means over kept tokens), nonfinite (updates skipped)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = torch.arange(len(batch))
    totals: dict[str, float] = {}
    weight = 0
    losses, norms, skipped = [], [], 0
    model.train()
    for mini in rows.chunk(cfg.mini_batches):
        keep = extras["keep"][mini]
        num_tokens = int(keep.sum())
        num_seqs = len(mini)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in mini.split(cfg.micro_batch_size):
            mb, ex = _rows(batch, extras, micro)
            with amp:
                stats = rollout.response_stats(model, mb.prompt_ids, mb.prompt_mask, mb.response_ids,
                                               mb.response_mask, cfg.temperature, cfg.chunk_size)
            loss, m = grpo.policy_loss(
                stats.logp, mb.old_logp, mb.advantages, ex["keep"], cfg.eps_low, cfg.eps_high,
                ref_logp=ex.get("ref_logp"), kl_coef=cfg.kl_coef, entropy=stats.entropy,
                kl_cov_mask=ex.get("penalised"),
                kl_cov_coef=cfg.kl_cov_coef if "penalised" in ex else 0.0,
                entropy_coef=cfg.entropy_coef, loss_agg=cfg.loss_agg, num_tokens=max(num_tokens, 1),
                num_seqs=num_seqs, max_len=cfg.max_new_tokens)
            loss.backward()
            loss_sum += loss.item()
            n = int(ex["keep"].sum())
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v * n
            weight += n
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if math.isfinite(loss_sum) and torch.isfinite(norm):
            optimizer.step()
            losses.append(loss_sum)
            norms.append(norm.item())
        else:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
    metrics = {k: v / max(weight, 1) for k, v in totals.items()}
    metrics.update(loss=float(np.mean(losses)) if losses else math.nan,
                   grad_norm=float(np.mean(norms)) if norms else math.nan, nonfinite=skipped)
    return metrics


# ----------------------------------------------------------------------------- checkpoints

def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `out`, oldest first. Only whole checkpoints have the final name:
    each is written under a temporary name and renamed."""
    found = []
    for p in out.glob("checkpoint-*"):
        match = CHECKPOINT_RE.match(p.name)
        if match and (p / "trainer_state.pt").is_file():
            found.append((int(match.group(1)), p))
    return sorted(found)


def _atomic_dir(target: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) into a temporary folder beside target, then rename it to target. If write
    fails, the temporary folder is removed and target (if it existed) is untouched."""
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".old-{target.name}")
    if target.exists():     # a re-save at the same step: keep the old one until the swap
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(out: Path, step: int, model, tokenizer, optimizer, scheduler,
                    sampler: PromptSampler, cfg: Config, counters: dict) -> Path:
    """<out>/checkpoint-<step>/: model (safetensors) + tokenizer + trainer_state.pt; keeps the
    newest cfg.keep_last checkpoints."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save({"step": step, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                    "rng": _rng_state(), "config": dataclasses.asdict(cfg), "counters": counters},
                   tmp / "trainer_state.pt")

    target = out / f"checkpoint-{step}"
    _atomic_dir(target, write)
    for _, old in checkpoints(out)[:-cfg.keep_last]:
        shutil.rmtree(old)
    return target


def load_trainer_state(path: Path) -> dict:
    # our own file: it holds python / numpy RNG states, which weights_only refuses
    return torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)


def _truncate_jsonl(path: Path, step: int) -> None:
    """Drop records logged after `step` (a resumed run logs those steps again)."""
    if path.exists():
        lines = path.read_text().splitlines()
        path.write_text("".join(l + "\n" for l in lines if json.loads(l)["step"] <= step))


def resolve_config(argv: list[str] | None) -> Config:
    """parse_args; with --resume, the saved config of the latest checkpoint overridden by the
    flags given now. Validated."""
    cfg = parse_args(argv)
    if cfg.resume:
        found = checkpoints(Path(cfg.out))
        if not found:
            raise ValueError(f"--resume found no complete checkpoint in {cfg.out}; check --out, "
                             f"or drop --resume to start a new run.")
        saved = load_trainer_state(found[-1][1])["config"]
        cfg = Config(**{**saved, **given_flags(argv), "resume": True})
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- the run

class Stop:
    """SIGINT / SIGTERM handler: the first signal asks the loop to stop after the current step
    (and checkpoint); a second one abandons the step at once."""
    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(f"\n{signal.Signals(signum).name}: finishing this step, then writing a "
                   f"checkpoint (send it again to abandon the step without saving)")


def _write_json_line(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _samples(batch, examples: list, indices: list[int], step: int, k: int = 4) -> list[dict]:
    """The first response of the first k groups."""
    G = len(batch) // len(indices)
    return [{"step": step, "prompt_index": indices[g], "question": examples[indices[g]].question,
             "answer": batch.answers[g * G],
             "response": batch.texts[g * G], "reward": batch.rewards[g * G].item(),
             "advantage": batch.advantages[g * G].item(), "truncated": bool(batch.truncated[g * G])}
            for g in range(min(k, len(indices)))]


def _flatten_numbers(prefix: str, result: dict) -> dict[str, float]:
    out = {}
    for k, v in result.items():
        if isinstance(v, dict):
            out.update(_flatten_numbers(f"{prefix}/{k}", v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}/{k}"] = v
    return out


def run_evaluation(model, tokenizer, eval_sets: dict[str, list], cfg: Config, amp,
                   step: int) -> dict[str, float]:
    """eval.evaluate on each set; its numbers as {"eval/<set>/<key>": value, "time_eval": s},
    and one printed line per set with its avg@n."""
    t0 = time.perf_counter()
    out = {}
    for name, examples in eval_sets.items():
        with amp:
            result = evaluation.evaluate(model, tokenizer, examples, n=cfg.eval_n,
                                         temperature=cfg.eval_temperature, top_p=cfg.eval_top_p,
                                         max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
                                         batch_size=cfg.eval_batch_size, seed=cfg.seed,
                                         prompt_style=cfg.prompt_style)
        out.update(_flatten_numbers(f"eval/{name}", result))
        avg = f"avg@{cfg.eval_n}"
        tqdm.write(f"step {step}: {name} {avg} {result[avg]:.3f} over {len(examples)} problems "
                   f"(T={cfg.eval_temperature:g})")
    out["time_eval"] = time.perf_counter() - t0
    return out


def resume_command(out: Path) -> str:
    return shlex.join(["python", "train.py", "--out", str(out), "--resume"])


@dataclass
class Run:
    """Everything a training loop needs, built by `setup`."""
    cfg: Config
    out: Path
    device: torch.device
    amp: object                 # the autocast context of forward passes
    model: object
    tokenizer: object
    ref_model: object | None    # frozen initial policy, only when --kl-coef > 0
    optimizer: torch.optim.Optimizer
    scheduler: object
    sampler: PromptSampler
    examples: list
    eval_sets: dict[str, list]
    counters: dict              # nonfinite_total, nonfinite_in_a_row
    step: int                   # steps done


def setup(cfg: Config) -> Run:
    """Data, model, optimiser and run directory for a validated cfg; with --resume, the state of
    the latest checkpoint (weights, optimiser, scheduler, sampler, RNG) restored. Errors a user
    can cause raise ValueError."""
    out = Path(cfg.out)
    latest = checkpoints(out)[-1][1] if checkpoints(out) else None
    if latest is not None and not cfg.resume:
        raise ValueError(f"{out} already holds a run ({latest.name}); pass --resume to continue "
                         f"it, or choose another --out.")
    examples, eval_sets = load_data(cfg)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model, tokenizer = load_policy(str(latest or cfg.model), device, cfg.gradient_checkpointing)
    ref_model = None
    if cfg.kl_coef > 0:
        ref_model, _ = load_policy(cfg.model, device)
        ref_model.requires_grad_(False).eval()
    optimizer, scheduler = make_optimizer(model, cfg)
    run = Run(cfg, out, device, autocast(device, autocast_dtype(cfg, device)), model, tokenizer,
              ref_model, optimizer, scheduler, PromptSampler(len(examples), cfg.seed), examples,
              eval_sets, {"nonfinite_total": 0, "nonfinite_in_a_row": 0}, 0)
    out.mkdir(parents=True, exist_ok=True)
    if latest is not None:
        state = load_trainer_state(latest)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.sampler.load_state_dict(state["sampler"])
        run.counters, run.step = state["counters"], state["step"]
        _set_rng_state(state["rng"])
        for name in ("metrics.jsonl", "samples.jsonl"):
            _truncate_jsonl(out / name, run.step)
        tqdm.write(f"resumed from {latest} at step {run.step}")
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    return run


def probe(model, batch, keep: Tensor, cfg: Config, amp) -> dict[str, float]:
    """The entropy probe: score the step's batch again under the updated model and compare, token
    by token, the measured change of H_t with Theorem 2's prediction -A_t (S*_t - E[S]_t) from the
    rollout policy (entropy.entropy_probe): over all response tokens ("probe/..."), and, when the
    method removed some, over the kept ("probe/kept/...") and removed ("probe/removed/...") ones."""
    with amp:   # score a shallow copy: score fills the batch it is given
        after = rollout.score(model, dataclasses.replace(batch), cfg.temperature,
                              cfg.micro_batch_size, cfg.chunk_size)
    predicted = -batch.advantages[:, None] * (batch.s_star - batch.es)
    measured = after.entropy - batch.entropy
    valid = batch.response_mask
    out = entropy.entropy_probe(predicted, measured, valid)
    kept, removed = valid & keep, valid & ~keep
    if kept.any() and removed.any():
        out.update(entropy.entropy_probe(predicted, measured, kept, "probe/kept/"))
        out.update(entropy.entropy_probe(predicted, measured, removed, "probe/removed/"))
    return out


def train_step(run: Run, step: int) -> tuple[dict, "rollout.RolloutBatch", list[int]]:
    """One training step (docstring steps 1-6 but checkpoints). Returns (metrics record, batch,
    prompt indices)."""
    cfg = run.cfg
    t0 = time.perf_counter()
    indices = run.sampler.next(cfg.prompts_per_step)
    batch, extras, metrics = rollout_step(run.model, run.tokenizer, run.examples, indices, cfg,
                                          step, run.amp, run.ref_model)
    t1 = time.perf_counter()
    lr = run.scheduler.get_last_lr()[0]
    metrics.update(update_step(run.model, run.optimizer, batch, extras, cfg, run.amp))
    run.scheduler.step()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    run.counters["nonfinite_total"] += metrics["nonfinite"]
    run.counters["nonfinite_in_a_row"] = (run.counters["nonfinite_in_a_row"] + 1
                                          if metrics["nonfinite"] else 0)
    record = {"step": step, "epoch": run.sampler.epoch, **metrics, "lr": lr,
              "time_update": t2 - t1, "time_step": t2 - t0,
              "tokens_per_s": int(batch.response_mask.sum()) / (t2 - t0),
              "nonfinite_total": run.counters["nonfinite_total"], "prompts": indices}
    if cfg.probe_every and step % cfg.probe_every == 0:
        t3 = time.perf_counter()
        record.update(probe(run.model, batch, extras["keep"], cfg, run.amp))
        record["time_probe"] = time.perf_counter() - t3
    if cfg.eval_every and run.eval_sets and (step % cfg.eval_every == 0 or step == cfg.steps):
        record.update(run_evaluation(run.model, run.tokenizer, run.eval_sets, cfg, run.amp, step))
    return record, batch, indices


def train(run: Run) -> int:
    """The main loop from run.step to cfg.steps, with metrics, samples, checkpoints, the signal
    handler and the failure guards. Returns the exit status."""
    cfg, out = run.cfg, run.out
    stop = Stop()
    handled = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {s: signal.signal(s, stop) for s in handled}
    last_saved, step = run.step, run.step
    if run.step == 0 and cfg.eval_every and run.eval_sets:   # the baseline the run improves on
        _write_json_line(out / "metrics.jsonl", {"step": 0, **run_evaluation(
            run.model, run.tokenizer, run.eval_sets, cfg, run.amp, 0)})
    bar = tqdm(total=cfg.steps, initial=run.step, desc=cfg.method, dynamic_ncols=True)
    try:
        for step in range(run.step + 1, cfg.steps + 1):
            record, batch, indices = train_step(run, step)
            run.step = step
            _write_json_line(out / "metrics.jsonl", record)
            if step % cfg.sample_every == 0:
                for sample in _samples(batch, run.examples, indices, step):
                    _write_json_line(out / "samples.jsonl", sample)
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward']:.3f}", H=f"{record['entropy']:.3f}",
                            masked=f"{record['masked_frac']:.4f}", len=f"{record['response_len']:.0f}",
                            kl=f"{record.get('approx_kl', math.nan):.1e}")
            if run.counters["nonfinite_in_a_row"] >= MAX_NONFINITE_IN_A_ROW:
                tqdm.write(f"error: the loss or gradient was not finite in {MAX_NONFINITE_IN_A_ROW} "
                           f"steps in a row (up to step {step}); those updates were skipped, so "
                           f"the weights are unharmed, and the run stops. Lower --lr or "
                           f"--grad-clip, or use --dtype float32.", file=sys.stderr)
                return 1
            if step % cfg.save_every == 0 or step == cfg.steps or stop.signum is not None:
                try:
                    path = save_checkpoint(out, step, run.model, run.tokenizer, run.optimizer,
                                           run.scheduler, run.sampler, cfg, run.counters)
                except OSError as err:
                    earlier = (f"checkpoint-{last_saved} is intact; resume with: {resume_command(out)}"
                               if last_saved else "no earlier checkpoint exists")
                    tqdm.write(f"error: could not write the checkpoint of step {step} ({err}); "
                               f"{earlier}", file=sys.stderr)
                    return 1
                last_saved = step
            if stop.signum is not None:
                tqdm.write(f"stopped at step {step}; checkpoint {path}. Resume with:\n  "
                           f"{resume_command(out)}")
                return 128 + stop.signum
    except KeyboardInterrupt:
        where = f"the latest checkpoint is step {last_saved}" if last_saved else "no checkpoint was written"
        tqdm.write(f"abandoned step {step}; {where}. Resume with:\n  {resume_command(out)}")
        return 130
    except torch.OutOfMemoryError:
        tqdm.write(f"error: the {run.device.type} device ran out of memory in step {step}. "
                   f"Reduce --micro-batch-size ({cfg.micro_batch_size}) or --max-new-tokens "
                   f"({cfg.max_new_tokens}), add --gradient-checkpointing, or lower --group-size "
                   f"({cfg.group_size}) or --gen-batch-size ({cfg.gen_batch_size})"
                   + (f"; then resume with: {resume_command(out)}" if last_saved else "."),
                   file=sys.stderr)
        return 1
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)

    def write_final(tmp: Path) -> None:
        run.model.save_pretrained(tmp)
        run.tokenizer.save_pretrained(tmp)

    _atomic_dir(out / "final", write_final)
    tqdm.write(f"done: {cfg.steps} steps; final model in {out / 'final'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2: a bad flag or input, with one
    line saying what to do)."""
    try:
        run = setup(resolve_config(argv))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return train(run)


if __name__ == "__main__":
    sys.exit(main())
