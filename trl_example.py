"""A TRL GRPO script with Clip-V: the lines marked "Clip-V" are all that a GRPO script written
for TRL changes (docs/trl.md).

    python trl_example.py                           # Clip-V on tiny-qwen2, the synthetic task, CPU, offline
    python trl_example.py --method clipb --mu 2.5   # Clip-B
    python trl_example.py --lora                    # train a LoRA adapter (peft) instead of the weights
    python trl_example.py --model Qwen/Qwen2.5-0.5B-Instruct --steps 200 --report-to wandb

It trains with TRL's GRPOTrainer on train.py's synthetic arithmetic task and its reward
(rewards.batch_rewards), logs TRL's metrics, the method's among them (masked_frac, clip_sigma,
s_star, es), and saves the model to --out.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GRPO with Clip-B / Clip-V in TRL's GRPOTrainer.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "tiny-qwen2"), help="local folder or hub id")
    parser.add_argument("--method", default="clipv", choices=["clipv", "clipb", "grpo"],
                        help="grpo: TRL's GRPOTrainer unchanged")
    parser.add_argument("--mu", type=float, default=None,
                        help="threshold in sigmas (default: the method's released value, clipb 2.5, "
                             "clipv 8.5)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group-size", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="completion length budget")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate (1e-6 for 7B models)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (peft)")
    parser.add_argument("--report-to", default="none",
                        help="TRL's trackers: none, tensorboard, wandb, trackio")
    parser.add_argument("--out", default="runs/trl-example", help="output folder")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """A flag that cannot work ends in one sentence with exit status 2 (`fail`), before anything
    loads, as in train.py."""
    for flag, value in (("--steps", args.steps), ("--prompts", args.prompts),
                        ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:
            fail(f"{flag} must be at least 1, got {value}.")
    if args.group_size < 2:
        fail(f"--group-size must be at least 2 (advantages compare responses to the same prompt), "
             f"got {args.group_size}.")
    if args.mu is not None and args.method == "grpo":
        fail("--method grpo has no mu (only clipb, clipv read it); drop --mu.")
    if args.mu is not None and not (math.isfinite(args.mu) and args.mu > 0):
        fail(f"--mu must be a positive number, got {args.mu}.")
    if not (math.isfinite(args.lr) and 0 < args.lr <= 1):
        fail(f"--lr must be positive and below 1 (GRPO uses 1e-6 to 1e-4), got {args.lr}.")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        fail(f"--out {args.out} is a file, and the model is saved into a folder there; choose "
             f"another --out.")


def fail(sentence: str):
    """End with one line on stderr and exit status 2, as train.py does for a mistake."""
    print(f"error: {sentence}", file=sys.stderr)
    raise SystemExit(2)


def lora_config():
    """peft's LoraConfig for --lora (rank 8 on the attention projections)."""
    try:
        from peft import LoraConfig
    except ModuleNotFoundError:
        fail("trl_example.py --lora needs peft, which is not installed: pip install -r requirements-dev.txt")
    return LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    import data
    import rewards
    try:
        from trl_clip import ClipGRPOConfig, ClipGRPOTrainer    # Clip-V: instead of trl's GRPOConfig, GRPOTrainer
    except ModuleNotFoundError as missing:                   # trl_clip says it in one sentence
        fail(str(missing))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples = data.synthetic_examples("train", n=args.prompts * args.steps)
    dataset = Dataset.from_list([{"prompt": data.format_prompt(tokenizer, e.question), "answer": e.answer}
                                 for e in examples])

    def correct(completions: list[str], answer: list[str], **kwargs) -> list[float]:
        return rewards.batch_rewards(completions, answer, style="boxed")

    config = ClipGRPOConfig(
        method=args.method, mu=args.mu,                       # Clip-V: the mask and its threshold
        output_dir=args.out, max_steps=args.steps, learning_rate=args.lr,
        per_device_train_batch_size=args.prompts * args.group_size, num_generations=args.group_size,
        max_completion_length=args.max_new_tokens, temperature=1.0, logging_steps=1,
        save_strategy="no", report_to=args.report_to, use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(), seed=0)
    peft_config = lora_config() if args.lora else None
    trainer = ClipGRPOTrainer(model=args.model, reward_funcs=correct, args=config,   # Clip-V: the class
                              train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    trainer.train()
    trainer.save_model(args.out)
    last = [log for log in trainer.state.log_history if "reward" in log][-1]
    print(f"done: {args.steps} steps, reward {last['reward']:.3f}, entropy {last['entropy']:.3f}, "
          f"masked_frac {last.get('masked_frac', 0.0):.4f}; model in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
