"""Evaluation: avg@n and unbiased pass@k of a model on math benchmarks.

The paper reports Avg@k and Pass@k (AIME24, AIME25, AMC23, a held-out DAPO-Math set) with
n = 32 samples per problem at temperature 0.7. For one problem with n samples of which c are
correct:

    avg@n  = c / n                                    (expected accuracy of one sample)
    pass@k = 1 - C(n - c, k) / C(n, k)                (Chen et al. 2021, "Codex", eq. 1)

pass@k is the unbiased estimate of "at least one of k samples is correct", averaged over problems.
The binomials overflow floats for n in the hundreds, so it is computed as the Codex paper does,
    1 - prod_{i = n-c+1}^{n} (1 - k / i),
a product of c numbers in [0, 1] (exact when n - c < k: the value is 1).

Choices:
  * One generation path and one grader: samples come from `rollout.generate` and are graded by
    `rewards.batch_rewards` with the reward style of the prompt style, exactly as in training,
    so an eval number and a training reward mean the same thing.
  * Problems are generated a few at a time (about `batch_size` samples per call), and a problem
    whose n exceeds `batch_size` in several calls of at most `batch_size` samples, so memory is
    bounded by one call's batch, not by the whole benchmark times n (n may be in the millions);
    the seed of call i is seed + i, so a run is reproducible for a given batch size.
  * `evaluate` is what train.py calls every --eval-every steps; the CLI adds model loading,
    the table and the JSON file (same numbers plus per-problem correct counts, so results can
    be re-aggregated for any k <= n).

    python eval.py                                  # the shipped tiny model, synthetic test split
    python eval.py --model Qwen/Qwen2.5-Math-7B --datasets aime24,aime25,amc23,math500 \
        --n 32 --temperature 0.7 --max-new-tokens 3072
    python eval.py --datasets mine.jsonl --question-key problem --answer-key solution

Exit status 0; 2 for a mistake in a flag or an input (one line saying what to do, before any
slow work), as train.py and plot.py; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import torch

import command
import data
import datafile
import grpo
import policy
import rewards
import rollout
import runlock

DEFAULT_MODEL = Path(__file__).resolve().parent / "tiny-qwen2"
# eval.py's own defaults of the flags that a model trained by train.py takes from its run instead
OWN_DEFAULTS = {"max_new_tokens": 512, "prompt_style": "qwen-math", "box_rule": "last"}


def pass_ks(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... below n, then n itself (n=6 -> [1, 2, 4, 6])."""
    if n < 1:
        raise ValueError(f"the number of samples per problem must be at least 1, got n={n}.")
    ks = [2 ** p for p in range(n.bit_length()) if 2 ** p < n]
    return ks + [n]


def aggregate(correct: list[int], n: int) -> dict[str, float]:
    """avg@n and pass@k (k in pass_ks(n)) averaged over problems; correct[p] = c of problem p."""
    if not correct:
        raise ValueError("there are no problems to evaluate; check the data set and --limit.")
    out = {f"avg@{n}": sum(correct) / (n * len(correct))}
    for k in pass_ks(n):
        out[f"pass@{k}"] = sum(grpo.pass_at_k(n, c, k) for c in correct) / len(correct)
    return out


def merge(results: list[dict], n: int) -> dict:
    """One result from evaluate's results on disjoint shares of the problems (one per process):
    the counts pooled, the means weighted by the problems behind them."""
    results = [r for r in results if r is not None]
    correct = [c for r in results for c in r["correct"]]
    distinct = [d for r in results for d in r["distinct"]]
    weight = [r["num_problems"] / len(correct) for r in results]
    return {"num_problems": len(correct), "n": n, **aggregate(correct, n),
            "distinct_correct": sum(distinct) / len(distinct),
            **{key: sum(w * r[key] for w, r in zip(weight, results, strict=True))
               for key in ("mean_response_len", "truncated_frac")},
            "correct": correct, "distinct": distinct}


def evaluate(model, tokenizer, examples: list[data.Example], n: int, temperature: float,
             top_p: float, max_new_tokens: int, batch_size: int, seed: int,
             prompt_style: str = "qwen-math", boxes: str = "last", engine: str = "generate") -> dict:
    """Sample n responses per problem, grade them, and return the benchmark numbers.

    Returns {"num_problems", "n", "avg@n", "pass@k" for k in pass_ks(n), "mean_response_len"
    (tokens, EOS included), "truncated_frac" (responses that hit max_new_tokens),
    "correct": list[int] (correct samples per problem, in the order of `examples`),
    "distinct": list[int] (different right solutions per problem, rewards.solution_key: routes on
    the countdown task, 0 or 1 on a task with one answer) and "distinct_correct", their mean}.
    rollout.generate samples in eval mode and restores the model's train/eval mode.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}.")
    pass_ks(n)  # validates n before any generation
    style = data.reward_style(prompt_style)
    per_call = max(1, batch_size // n)  # problems per generate call: about batch_size samples
    group = min(n, batch_size)          # samples of a problem per call (n > batch_size: several calls)
    correct: list[int] = []
    distinct: list[int] = []
    tokens = truncated = call = 0       # sums, not per-sample lists: n may be large
    for start in range(0, len(examples), per_call):
        chunk = examples[start:start + per_call]
        prompts = [data.format_prompt(tokenizer, ex.question, prompt_style) for ex in chunk]
        counts = torch.zeros(len(chunk), dtype=torch.long)
        solutions: list[set] = [set() for _ in chunk]   # distinct right solutions per problem
        for done in range(0, n, group):
            batch = rollout.generate(model, tokenizer, prompts, [ex.answer for ex in chunk],
                                     group_size=min(group, n - done), max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_p=top_p,
                                     micro_batch_size=batch_size, seed=seed + call, engine=engine)
            call += 1
            scores = rewards.batch_rewards(batch.texts, batch.answers, style=style, boxes=boxes)
            counts += batch.by_group(torch.tensor(scores) > 0.5).sum(-1).cpu()
            for row, (text, gold, score) in enumerate(zip(batch.texts, batch.answers, scores, strict=True)):
                if score > 0.5:
                    solutions[row // batch.group_size].add(rewards.solution_key(text, gold, style, boxes))
            tokens += int(batch.response_mask.sum())
            truncated += int(batch.truncated.sum())
        correct += counts.tolist()
        distinct += [len(found) for found in solutions]
    samples = n * len(correct)
    return {"num_problems": len(correct), "n": n, **aggregate(correct, n),
            "distinct_correct": sum(distinct) / len(distinct),
            "mean_response_len": tokens / samples, "truncated_frac": truncated / samples,
            "correct": correct, "distinct": distinct}


# ----- command line -----

def format_table(results: dict[str, dict]) -> str:
    """One row per data set: problems, samples, avg@n, pass@k..., mean length, truncated frac."""
    metric_keys = [k for k in next(iter(results.values())) if k.startswith(("avg@", "pass@"))]
    header = ["data set", "problems", "samples", *metric_keys, "mean len", "trunc frac"]
    rows = [[name, str(r["num_problems"]), str(r["n"]), *(f"{r[k]:.4f}" for k in metric_keys),
             f"{r['mean_response_len']:.1f}", f"{r['truncated_frac']:.3f}"]
            for name, r in results.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def default_output(model: str, names: list[str], n: int, seed: int) -> Path:
    """out/eval-MODEL-SETS-nN-seedS.json: one file per evaluation, so that two of them never
    share a default (a run's final/ or checkpoint-N/ is named with its run folder)."""
    parts = Path(model).parts
    tag = "-".join(parts[-2:]) if parts[-1] == "final" or parts[-1].startswith("checkpoint-") else parts[-1]
    sets = "+".join(Path(name).stem if Path(name).suffix else name for name in names)
    return Path("out") / re.sub(r"[^\w.+-]", "-", f"eval-{tag}-{sets}-n{n}-seed{seed}.json")


def writable_output(path: Path, overwrite: bool = False) -> Path:
    """The JSON file to write: `path`, or path/eval.json when path is a folder. Checked before the
    evaluation runs, so that a bad --out fails in a second, not after an hour of sampling; a
    folder that does not exist yet is not created here (a later mistake leaves nothing behind),
    only its nearest existing parent is checked. An existing file is refused unless `overwrite`."""
    if path.is_dir():
        path = path / "eval.json"
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already holds results; pass --overwrite to replace them, or "
                         f"another --out.")
    existing = next(folder for folder in path.parents if folder.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        if existing != path.parent:   # the folders to create: can they be?
            if not os.access(existing, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot create folders in {existing}")
        else:
            runlock.write_probe(path.with_name(f".{path.name}.write-test"))
    except OSError as err:
        raise ValueError(f"cannot write the results to {path} ({err.strerror or err}); pass a "
                         f"writable file as --out.") from None
    return path


_HELD: dict[Path, object] = {}   # results files this process is writing: their flocked lock files


def hold_output(out: Path) -> None:
    """Create out's folder and take an flock on .OUT.lock beside it until this process exits, so that two
    evaluations given the same --out cannot both write it: the second is refused, naming the
    first (the kernel releases the lock of a killed process)."""
    if out.resolve() in _HELD:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    lock, holder = runlock.try_lock(out.with_name(f".{out.name}.lock"), f"pid {os.getpid()}")
    if lock is None:
        raise ValueError(f"{out} is being written by another evaluation ({holder or 'another process'}); "
                         f"wait for it or pass another --out.")
    _HELD[out.resolve()] = lock


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="avg@n and unbiased pass@k of a model on math "
                                            "benchmarks (one row per data set).")
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="local model folder or hub id (default: the shipped tiny-qwen2)")
    p.add_argument("--datasets", default="synthetic",
                   help="comma-separated: synthetic (its test split), a short name of data.KNOWN "
                        "(aime24, aime25, amc23, math500, ...) or a local .jsonl/.json/.parquet/"
                        ".csv file; NAME:SPLIT picks a split")
    p.add_argument("--question-key", default=None,
                   help=f"question column of the local files in --datasets (default: the first of "
                        f"{', '.join(datafile.QUESTION_KEYS)}); a dotted key reads a nested field")
    p.add_argument("--answer-key", default=None,
                   help=f"answer column of the local files in --datasets (default: the first of "
                        f"{', '.join(datafile.ANSWER_KEYS)}); a dotted key reads a nested field")
    p.add_argument("--n", type=int, default=8, help="samples per problem (the paper: 32)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="response budget in tokens (competition math: several thousand; default: "
                        "the training run's, see run_defaults, else 512)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per generate call")
    p.add_argument("--limit", type=int, default=None,
                   help="a fixed seeded subset of N problems of each data set (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-style", default=None, choices=data.PROMPT_STYLES,
                   help="default: the training run's, else qwen-math")
    p.add_argument("--rollout-engine", default="generate", choices=rollout.ENGINES,
                   help="generate: HF model.generate; paged: transformers' continuous batching")
    p.add_argument("--box-rule", default=None, choices=rewards.BOX_RULES,
                   help="with several \\boxed{} answers: the last decides, or strict: all must "
                        "agree (default: the training run's, else last)")
    p.add_argument("--dtype", default="auto", choices=policy.DTYPES,
                   help="weights' dtype (auto: bfloat16 on CUDA, float32 elsewhere)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
                   help="auto: cuda, then mps, then cpu")
    p.add_argument("--out", default=None,
                   help="JSON file for the results (a folder: FOLDER/eval.json; default: "
                        "out/eval-MODEL-SETS-nN-seedS.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = p.parse_args(argv)
    inherited = {key: value for key, value in run_defaults(args.model).items()
                 if getattr(args, key) is None}
    vars(args).update(inherited)
    if inherited != {key: OWN_DEFAULTS[key] for key in inherited}:
        print("from the training run: " + ", ".join(f"--{key.replace('_', '-')} {value}"
                                                    for key, value in inherited.items()))
    return args


def run_defaults(model: str) -> dict:
    """Defaults for --max-new-tokens, --prompt-style and --box-rule: when `model` is a run's final/
    or checkpoint-N/ (the run's config.json one folder up), the run's own (its --eval-max-new-tokens,
    else --max-new-tokens), so that the model is sampled and graded as it was in training; else
    OWN_DEFAULTS. At 512 tokens a model trained with 48 that does not stop writes ten times
    its training budget, and its evaluation takes ten times as long."""
    run_config = Path(model).parent / "config.json"
    if not (Path(model).is_dir() and policy.is_run_folder(run_config.parent)):
        return dict(OWN_DEFAULTS)
    try:
        run = json.loads(run_config.read_text())
    except (OSError, ValueError):   # a run folder without a readable configuration
        run = None
    if not isinstance(run, dict):
        return dict(OWN_DEFAULTS)
    found = {"max_new_tokens": run.get("eval_max_new_tokens") or run.get("max_new_tokens"),
             "prompt_style": run.get("prompt_style"), "box_rule": run.get("box_rule")}
    return {key: found[key] or OWN_DEFAULTS[key] for key in OWN_DEFAULTS}


def check_args(args: argparse.Namespace) -> list[str]:
    """The data set names; a flag that cannot work raises ValueError in one sentence, before
    anything loads."""
    names = [s.strip() for s in args.datasets.split(",") if s.strip()]
    if not names:
        raise ValueError("--datasets is empty; give at least one data set name or file.")
    for flag, value in (("--n", args.n), ("--limit", args.limit), ("--max-new-tokens", args.max_new_tokens),
                        ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}.")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0 (0: greedy decoding), got "
                         f"{args.temperature}.")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}.")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is visible; use --device "
                         "auto or cpu.")
    if args.device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but no Apple MPS device is available; use "
                         "--device auto or cpu.")
    return names


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    names = check_args(args)
    policy.check_model_folder(args.model)   # a run folder, not its final/: say so before anything slow
    out = writable_output(Path(args.out) if args.out else
                          default_output(args.model, names, args.n, args.seed), args.overwrite)
    sets = {name: data.load_set(name, args.limit, args.question_key, args.answer_key)
            for name in names}                                         # before the slow model load
    data.check_context(sets, args.model, args.prompt_style)
    hold_output(out)
    device = policy.pick_device(args.device)
    model, tokenizer = policy.load_policy(args.model, device, policy.compute_dtype(args.dtype, device))
    results = {name: evaluate(model, tokenizer, examples, n=args.n, temperature=args.temperature,
                              top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, seed=args.seed,
                              prompt_style=args.prompt_style, boxes=args.box_rule,
                              engine=args.rollout_engine)
               for name, examples in sets.items()}
    print(format_table(results))
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "datasets", "overwrite")}
    partial = out.with_name(f".{out.name}.partial")    # written whole, then renamed: never half a file
    partial.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    os.replace(partial, out)
    print(f"wrote {out}")
    return results


def cli(argv: list[str] | None = None) -> int:
    """The command line: main, and its exit status (command.run: 2 for a mistake, said in one
    line; 130 when interrupted, nothing written), as train.py and plot.py."""
    return command.run(main, argv, "interrupted; no results were written.")


if __name__ == "__main__":
    sys.exit(cli())
