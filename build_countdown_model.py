"""Build `tiny-qwen2-countdown/`: the small policy of the countdown testbed (countdown.py, docs/testbed.md).

    python build_countdown_model.py       # about 25 minutes on 2 CPU cores, seeded

The same recipe as `build_tiny_model.py` (its tokenizer, model and warm-start functions are
reused: a byte-level BPE with one token per digit, Qwen2's special tokens and chat template, a
~2 M-parameter `Qwen2ForCausalLM`, supervised training on the response tokens only), on the
countdown train split, with a teacher that is imperfect in the way the testbed needs:

* **A common route with exploration noise.** At each step the teacher takes the shortcut,
  `countdown.greedy_step` (the number and sign that land closest to the target), except that
  with probability `--noise` (0.25) it takes any unused number with a random sign instead. The
  shortcut alone solves about 70% of train and test problems and, by construction, no hard one
  (countdown.py); the noise is what gives the base model other routes to sample, among them
  the detours that solve hard problems. When the teacher stops short it boxes the route it
  has, as a person hands in unfinished working: a wrong answer, written confidently.
* **The working shows the gap.** Before each step the response writes what is still missing,
  then the step: "61-47=14, 47+9=56; 61-56=5, 56+5=61; 61-61=0. \\boxed{47+9+5}". The
  shortcut needs the gap, and a ~2 M-parameter model cannot hold it in its head: a version
  without it learnt to write routes that ignore the target (docs/testbed.md, version 2).
  The grader reads only the box (countdown.verify), so wrong working with a right box still
  earns the reward, as on any math task.

So GRPO has a clear thing to learn on the train distribution (drop the noise where the
shortcut works) and a clear way to lose the hard split (drop the noise everywhere): the
narrowing the paper's masks are meant to prevent.

At the end it measures what it saved, loaded back as train.py loads it: avg@16 at temperature 1
on the test and hard splits, the mean response entropy and length, in
`tiny-qwen2-countdown/build_report.json`.
"""

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

import countdown
import data
from build_tiny_model import build_model, build_tokenizer, measure, warm_start


def teacher_route(problem: countdown.Problem, rng: random.Random, noise: float) -> list[int]:
    """The shortcut with exploration noise: at every step, with probability `noise`, any unused
    number with a random sign instead of `countdown.greedy_step`'s choice."""
    total, unused, terms = problem.start, list(problem.numbers), []
    while total != problem.target and unused:
        if rng.random() < noise:
            term = rng.choice(unused) * rng.choice((1, -1))
        else:
            term = countdown.greedy_step(problem.target, total, unused)
            if term is None:
                break
        terms.append(term)
        total += term
        unused.remove(abs(term))
    return terms


def target_response(problem: countdown.Problem, rng: random.Random, noise: float) -> str:
    """The teacher's response: before each step the gap still to cover, then the step, then
    the route in a box, e.g. "61-47=14, 47+9=56; 61-56=5, 56+5=61; 61-61=0. \\boxed{47+9+5}"."""
    terms = teacher_route(problem, rng, noise)
    total, steps = problem.start, []
    for term in terms:
        steps.append(f"{problem.target}-{total}={problem.target - total}, "
                     f"{total}{term:+d}={total + term}")
        total += term
    steps.append(f"{problem.target}-{total}={problem.target - total}")
    return f"{'; '.join(steps)}. \\boxed{{{countdown.format_route(problem.start, terms)}}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "tiny-qwen2-countdown"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-problems", type=int, default=20000)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--noise", type=float, default=0.25,
                        help="probability, at each step, that the teacher takes a random unused "
                             "number and sign instead of the shortcut's")
    parser.add_argument("--eval-problems", type=int, default=200)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()
    t0 = time.time()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    train = countdown.problems("train", args.train_problems, seed=args.seed)
    responses = [target_response(p, rng, args.noise) for p in train]
    bootstrap = build_tokenizer([""], 260)  # renders the chat template, which needs no vocabulary
    prompts = [data.format_prompt(bootstrap, p.question, "qwen-math") for p in train]
    tokenizer = build_tokenizer(prompts + responses, args.vocab_size)
    pairs = [(tokenizer.encode(p, add_special_tokens=False),
              tokenizer.encode(r, add_special_tokens=False) + [tokenizer.eos_token_id])
             for p, r in zip(prompts, responses, strict=True)]
    longest = max(len(r) for _, r in pairs)
    print(f"responses: mean {sum(len(r) for _, r in pairs) / len(pairs):.1f} tokens, longest {longest}")
    if longest > args.max_new_tokens:
        raise SystemExit(f"the teacher writes up to {longest} tokens, more than --max-new-tokens "
                         f"{args.max_new_tokens}; raise it.")

    model = build_model(tokenizer, args.hidden, args.layers)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary {len(tokenizer)}")
    warm_start(model, pairs, args.steps, args.batch_size, args.lr, tokenizer.pad_token_id, args.seed)

    out = Path(args.out)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    build_seconds = time.time() - t0

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    report = {"build_seconds": round(build_seconds), "parameters": sum(p.numel() for p in model.parameters())}
    for split in ("test", "hard"):
        examples = data.countdown_examples(split, args.eval_problems, seed=0)
        report[split] = measure(model, tokenizer, examples, args.eval_samples, args.max_new_tokens, args.seed)
    report.update({k: v for k, v in vars(args).items() if k != "out"})
    (out / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
