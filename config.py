"""The run's configuration: one dataclass whose fields are the command-line flags, the presets,
and validation.

    Config defaults < the method's defaults (methods.METHODS, e.g. its released mu) < --preset < flags

Every field of `Config` is a flag (`--name-with-dashes`) with its help text beside it, so the
defaults a run used, its `config.json` and `python train.py --help` cannot drift apart. The
general flags are written below; the methods' parameters (--mu, --forking-frac, ...) are
declared in their rows of methods.METHODS and become fields, flags, checks and resume rules
here, so a method with a parameter is added in one place. With
--resume the saved configuration of the latest checkpoint is the base and only the flags given
now override it, if `check_resume` accepts them (RESUME_MAY_CHANGE / RESUME_FIXED: a resume
may lengthen a run or change how it is observed, never what it trains). `validate` rejects
impossible settings with one sentence that says what to do, before any model or data loads.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path

import torch

import checkpoint
import clipping
import data
import datafile
import distributed
import entropy
import grpo
import methods
import policy
import rewards
import rollout
import runlock
import tracking
from methods import METHODS

REPO = Path(__file__).resolve().parent


def _opt(default, help: str, **argparse_kwargs):
    """A Config field that is also a command-line flag (--name-with-dashes)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


def _int_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


@dataclass
class Flags:
    """The general flags: Config without the methods' parameters."""
    # method (paper section 3; docs/methods.md); its parameters close the Config
    method: str = _opt("grpo", "grpo keeps every token; clipb / clipv are the paper's masks; the "
                               "others are the entropy methods compared in docs/methods.md",
                       choices=list(METHODS))
    probe_every: int = _opt(0, "entropy probe every N steps: compare each token's measured "
                               "entropy change over the update with Theorem 2's prediction (0: never)")
    mismatch_reject: str = _opt("none", "sampler-mismatch rejection: drop the tokens (token) or "
                                        "responses (sequence) whose pi_old / pi_sampler ratio "
                                        "leaves [--mismatch-low, --mismatch-high]",
                                choices=list(clipping.MISMATCH_LEVELS))
    mismatch_low: float | None = _opt(None, "lower end of the band (default 1 / --mismatch-high)",
                                      type=float)
    mismatch_high: float = _opt(2.0, "upper end of the band (verl's 0.5_2.0)")
    # model and data
    model: str = _opt(str(REPO / "tiny-qwen2"), "local model folder or hub id")
    dataset: str = _opt("synthetic", "training set: synthetic, a short name of data.KNOWN, or a "
                                     "local .jsonl/.json/.parquet/.csv file")
    split: str | None = _opt(None, "split of --dataset (default: train for synthetic and "
                                   "countdown, the table's split for data.KNOWN names)")
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
    eval_question_key: str | None = _opt(None, "question column of the local files in --eval-datasets "
                                               f"(default: the first of {', '.join(datafile.QUESTION_KEYS)})")
    eval_answer_key: str | None = _opt(None, "answer column of the local files in --eval-datasets "
                                             f"(default: the first of {', '.join(datafile.ANSWER_KEYS)})")
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
    resume: bool = _opt(False, "continue the latest checkpoint in --out (its saved config; flags "
                               "given now may lengthen the run or change evaluation, saving and "
                               "hardware settings, not what it trains: docs/failures.md)")
    dry_run: bool = _opt(False, "print what the run will generate, its disk and a memory "
                                "estimate (memory.py), then exit without loading any weights")
    preset: str = _opt("none", "paper: the authors' released configuration (flags given still win)",
                       choices=["none", "paper"])


METHOD_PARAMS = methods.params()
Config = make_dataclass(
    "Config", [(p.name, object, _opt(p.default, p.help, **({"type": p.type} if p.type else {}),
                                     **({"choices": list(p.choices)} if p.choices else {})))
               for p in METHOD_PARAMS.values()], bases=(Flags,))
Config.__module__ = __name__
Config.__doc__ = "Every flag of a run: the general ones (Flags), then the methods' parameters."


def paper_preset(method: str) -> dict:
    """The authors' released configuration (paper section 4), with what the method's row adds
    (methods.Method.paper: Clip-B's groups of 16, Clip-V's cap). It needs several 80 GB GPUs for
    a 7B model; on one GPU use a smaller Qwen2.5 with the same settings (--model)."""
    shared = dict(model="Qwen/Qwen2.5-7B-Instruct", dataset="dapo-math", holdout=500,
                  prompts_per_step=64, group_size=8, temperature=1.0, max_new_tokens=7168, lr=1e-6,
                  kl_coef=0.0, eps_low=0.2, eps_high=0.2, steps=500, eval_every=20, eval_n=32,
                  eval_temperature=0.7, eval_datasets="aime24,aime25,amc23,heldout", eval_limit=None,
                  save_every=20, gen_batch_size=256, micro_batch_size=4, gradient_checkpointing=True)
    return {**shared, **METHODS[method].paper}


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
    group = parser.add_argument_group("method parameters", "declared by the methods that read them "
                                                           "(methods.METHODS)")
    for f in fields(Config):
        kwargs = dict(f.metadata)
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif "type" not in kwargs:
            kwargs["type"] = str if f.default is None else type(f.default)
        if show_defaults:
            kwargs["default"] = f.default
        (group if f.name in METHOD_PARAMS else parser).add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


def parse_args(argv: list[str] | None = None) -> Config:
    """Flags -> Config. Precedence: Config defaults < the method's defaults < the preset < flags."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    parser.set_defaults(**{**METHODS[first.method].defaults, **PRESETS[first.preset](first.method)})
    cfg = Config(**vars(parser.parse_args(argv)))
    if cfg.out is None:
        mu = f"-mu{cfg.mu:g}" if cfg.mu is not None else ""
        cfg.out = str(Path("runs") / f"{cfg.method}{mu}-seed{cfg.seed}")
    return cfg


def given_flags(argv: list[str] | None) -> dict:
    """The flags present on the command line, as Config field values."""
    return vars(build_parser(show_defaults=False).parse_args(argv))


INFINITE_OK = ("dual_clip", *(p.name for p in METHOD_PARAMS.values() if p.inf_ok))   # inf turns these off


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
    for p in METHOD_PARAMS.values():   # every method's parameters, whichever method runs
        message = p.check(cfg) if p.check else None
        need(message is None, message)
    need(cfg.mu is not None or not METHODS[cfg.method].takes_mu, f"--method {cfg.method} needs --mu.")
    need(cfg.mu is None or METHODS[cfg.method].takes_mu,     # else "grpo-mu0.5" would name the run
         f"--method {cfg.method} has no mu (only {', '.join(m for m in METHODS if METHODS[m].takes_mu)} "
         f"read it); drop --mu.")
    need(cfg.dual_clip > 1, f"--dual-clip must be above 1 (inf turns it off), got {cfg.dual_clip}.")
    need(cfg.tis_cap is None or cfg.tis_cap > 0, f"--tis-cap must be positive (leave it out to "
                                                  f"turn truncated importance sampling off), got {cfg.tis_cap}.")
    policy.check_model_folder(cfg.model)
    known = cfg.dataset in data.BUILT_IN or cfg.dataset in data.KNOWN or Path(cfg.dataset).is_file()
    need(known, f"unknown --dataset {cfg.dataset!r}: use synthetic, countdown, one of "
                f"{', '.join(sorted(data.KNOWN))}, or the path of an existing local file.")
    for spec in [f"{cfg.dataset}:{cfg.split or 'train'}", *cfg.eval_datasets.split(",")]:
        need(data.built_in_split_error(spec.strip()) is None, data.built_in_split_error(spec.strip()))
    need(cfg.group_size >= 2, f"--group-size must be at least 2 (advantages compare responses "
                              f"to the same prompt), got {cfg.group_size}.")
    for name in ("steps", "prompts_per_step", "max_new_tokens", "gen_batch_size", "mini_batches",
                 "micro_batch_size", "chunk_size", "eval_n", "eval_batch_size", "save_every",
                 "keep_last", "sample_every"):
        need(getattr(cfg, name) >= 1, f"--{name.replace('_', '-')} must be at least 1, "
                                      f"got {getattr(cfg, name)}.")
    for name in ("holdout", "warmup_steps", "weight_decay", "grad_clip", "kl_coef",
                 "entropy_coef", "eval_every", "probe_every", "seed"):
        need(getattr(cfg, name) >= 0, f"--{name.replace('_', '-')} must not be negative, "
                                      f"got {getattr(cfg, name)}.")
    need(cfg.prompts_per_step % cfg.mini_batches == 0,
         f"--mini-batches {cfg.mini_batches} must divide --prompts-per-step {cfg.prompts_per_step}, "
         f"so that every optimiser update sees whole prompt groups; change one of them.")
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
    low = cfg.mismatch_low if cfg.mismatch_low is not None else 1 / cfg.mismatch_high
    need(0 < low < cfg.mismatch_high, f"the --mismatch-low / --mismatch-high band must satisfy "
                                      f"0 < low < high, got {low}, {cfg.mismatch_high}.")
    tracking.check(cfg.report_to)
    need(not (cfg.device == "cuda" and not torch.cuda.is_available()),
         "--device cuda was asked for but no CUDA device is visible; use --device auto or cpu.")


# What --resume may change. A run is one experiment: its metrics.jsonl, config.json and plot.py's
# label describe all its steps, so a flag that changes what is trained, on what, or how the loss
# is formed (FIXED) is refused; a flag that only changes how long, how it is observed and saved,
# or how the same computation is laid out on the hardware (MAY_CHANGE) is accepted and recorded
# in <out>/resumes.jsonl with the step it took effect. Every Config field is in one of the three;
# a method's parameter is fixed unless its Param says resume=True.
RESUME_MAY_CHANGE = {
    **{p.name: "a parameter its method lets a resume change" for p in METHOD_PARAMS.values() if p.resume},
    "steps": "the run's length (above its checkpoint's step)",
    **dict.fromkeys(("eval_every", "eval_datasets", "eval_n", "eval_temperature", "eval_top_p",
                     "eval_max_new_tokens", "eval_limit", "eval_batch_size", "eval_question_key",
                     "eval_answer_key", "probe_every"),
                    "measurement only: the policy's updates do not read it"),
    **dict.fromkeys(("save_every", "keep_last", "save_optimizer", "sample_every", "report_to"),
                    "what is written, and how often"),
    **dict.fromkeys(("device", "dtype", "gradient_checkpointing", "micro_batch_size", "chunk_size",
                     "gen_batch_size", "rollout_engine"),
                    "the same computation laid out on other hardware (micro-batching never changes "
                    "the gradient; the precision of sampling and forward passes may, slightly)"),
}
RESUME_FIXED = {
    **dict.fromkeys(("method", *(p.name for p in METHOD_PARAMS.values() if not p.resume)),
                    "the method and its strength name the run and its label"),
    "model": "the run's weights come from its checkpoint and its KL reference from this model",
    **dict.fromkeys(("dataset", "split", "question_key", "answer_key", "holdout", "prompt_style",
                     "box_rule"), "the problems, prompts and reward the run trains on"),
    **dict.fromkeys(("prompts_per_step", "group_size", "mini_batches", "max_new_tokens",
                     "temperature", "top_p"), "the rollouts and the groups advantages compare"),
    **dict.fromkeys(("lr", "warmup_steps", "weight_decay", "grad_clip", "eps_low", "eps_high",
                     "dual_clip", "kl_coef", "entropy_coef", "tis_cap", "mismatch_reject",
                     "mismatch_low", "mismatch_high", "loss_agg", "adv_std"),
                    "the loss and the optimiser the run's history was trained with"),
    "seed": "the data order and every random draw of the run",
    "preset": "the configuration the run started from",
}
RESUME_IGNORED = ("out", "resume", "dry_run")   # where and how this command runs, not the run


def resume_changes(saved: dict, cfg: Config) -> dict[str, list]:
    """{field: [recorded value, value now]} for every field of cfg that differs from the
    checkpoint's saved configuration (fields it lacks count as their defaults)."""
    defaults = {f.name: getattr(Config(), f.name) for f in fields(Config)}
    return {name: [saved.get(name, defaults[name]), getattr(cfg, name)] for name in defaults
            if name not in RESUME_IGNORED and saved.get(name, defaults[name]) != getattr(cfg, name)}


def check_resume(saved: dict, cfg: Config, step: int) -> None:
    """Refuse, in one sentence, a FIXED flag changed at --resume, or a --steps below the
    checkpoint's step (step). A finished run resumed with its own --steps is no mistake (a
    re-queued job): train.main says so (checkpoint.finished) and exits 0."""
    for name, (old, new) in resume_changes(saved, cfg).items():
        if name in RESUME_FIXED:
            raise ValueError(f"--{name.replace('_', '-')} cannot change at --resume: this run was "
                             f"trained with {old}, not {new} ({RESUME_FIXED[name]}); drop the flag, "
                             f"or start a new run in another --out.")
    if cfg.steps < step:
        raise ValueError(f"--steps {cfg.steps}: this run is already at step {step}, so --resume has "
                         f"nothing to train; give --steps above {step} to train it further.")


def flag_mistake(argv: list[str] | None) -> bool:
    """Whether argv holds a mistake every torchrun process finds alike, before its process group
    starts: the checks of resolve_config and the split of the prompt groups over the processes."""
    try:
        cfg = resolve_config(argv)
        distributed.check_split(cfg.prompts_per_step, cfg.mini_batches, distributed.planned())
    except ValueError:
        return True
    return False


def resolve_config(argv: list[str] | None) -> Config:
    """parse_args; with --resume, the saved config of the newest whole checkpoint
    (checkpoint.whole) overridden by the flags given now, which `check_resume` must accept, or
    the flags alone when the run has no checkpoint yet. Validated."""
    cfg = parse_args(argv)
    if cfg.resume:
        runlock.check_free(Path(cfg.out))
        latest, state, damaged = checkpoint.whole(Path(cfg.out))   # none yet: a new run (checkpoint.py)
        if damaged and latest is None:
            raise ValueError(checkpoint.damaged_message(Path(cfg.out), damaged, None))
        if latest is not None:
            cfg = Config(**{**state["config"], **given_flags(argv), "resume": True})
            check_resume(state["config"], cfg, state["step"])
    validate(cfg)
    return cfg
