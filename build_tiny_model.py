"""Build `tiny-qwen2/`: the small pretrained policy that the default run fine-tunes on CPU.

    python build_tiny_model.py            # about 12 minutes on 2 CPU cores, seeded

What it makes, and why:
* A byte-level BPE tokenizer (the `tokenizers` library, as GPT-2 / Qwen2 do) trained on the
  synthetic task's prompts and responses, with digits split one per token (as Qwen2 does) so
  that arithmetic stays digit by digit. Byte-level means any text round-trips exactly. Special
  tokens follow Qwen2-Instruct: `<|endoftext|>` pads, `<|im_end|>` ends the assistant turn and
  is the EOS, so pad id != EOS id and the response mask of `rollout.py` can find the EOS. The
  chat template is Qwen2's im_start / im_end one, so `data.format_prompt` works unchanged.
* A `Qwen2ForCausalLM` of about 2 M parameters (4 layers, width 192), so that a GRPO step of
  8 prompts x 8 samples takes seconds on a laptop CPU.
* A supervised warm-start on the synthetic train split (`data.synthetic_examples`,
  difficulty 2): the prompt is the qwen-math chat prompt, the target is short working and the
  boxed answer, then EOS, e.g. "47+8=55; 55-5=50. The answer is \\boxed{50}<|im_end|>". The
  loss is on the response tokens only. The teacher is deliberately imperfect, the way a person
  is: it has a misconception, reversing with probability `--misread` (0.8) the sign of a step
  whose verb is "finds", "gets", "gives" or "sells" ("gives 5 to Ana" worked as +5), and it
  slips (a step result off by one or ten) with probability `--slip` (0.03); either error is
  carried on consistently to the box. "buys" and "loses" it always works right, so the
  model learns a verb -> sign feature that RL can correct. With `--styles` (on) it also
  varies the separator and the closing phrase uniformly: entropy that costs no accuracy.
  The policy thus knows the procedure but picks the wrong sign for four verbs most of the
  time: accuracy near 0.2 at temperature 1 and entropy well above zero, with a whole-step
  error that reward can fix within a hundred steps. Why a misconception rather than only
  slips: a slip digit is sampled with probability ~0.04, so in a wrong answer it is an A < 0
  token with a low S*, exactly what Clip-B / Clip-V remove; a task made of slips leaves the
  masks nothing to learn from (the first shipped model, built with `--misread 0 --no-styles
  --slip 0.15 --steps 1200`, showed it: GRPO gained 0.09 and Clip-V at mu 1 nothing). A
  misread sign is the majority choice at its token, so its negative update is kept.
* A measurement at the end, written to `tiny-qwen2/build_report.json`: avg@16 accuracy at
  temperature 1.0 on the synthetic test split, graded by `rewards.math_reward`, and the mean
  per-token entropy (nats) of the sampled response tokens, H = -sum_i pi_i log pi_i (paper
  Eq. 1), computed by `rollout.score`.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config,
                          Qwen2ForCausalLM, PreTrainedTokenizerFast)

import data
import rewards
import rollout

PAD, EOS, IM_START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
# Qwen2's chat template without its default system prompt (the qwen-math style always sends one).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
DIFFICULTY = 2


# The teacher's habits (see the module docstring): the verbs whose sign it may reverse
# (`--misread`), and the styles it may write in (`--styles`; without it, the first ones).
MISREAD_VERBS = ("finds", "gets", "gives", "sells")
SEPARATORS = (", ", "; ", ", then ", ", so ")
ENDINGS = (". \\boxed{{{}}}", ". The answer is \\boxed{{{}}}", ", so \\boxed{{{}}}")


def target_response(question: str, rng: random.Random, slip: float, misread: float = 0.0,
                    styles: bool = False) -> str:
    """The teacher's response: each step written as "a+b=r", the last result boxed, e.g.
    "47+8=55, 55-5=50. \\boxed{50}". With probability `slip` a step's result is off by one or
    ten (a dropped carry); with probability `misread` a step whose verb is in MISREAD_VERBS
    takes the wrong sign ("gives 5" worked as +5); either way the next step starts from the
    wrong value, as a person's working would. With `styles`, the separator and the closing
    phrase are drawn uniformly from SEPARATORS and ENDINGS."""
    steps = data.synthetic_steps(question)
    left, parts = steps[0][0], []
    for (_, op, right), verb in zip(steps, data.synthetic_verbs(question), strict=True):
        if misread and verb in MISREAD_VERBS and rng.random() < misread and (op == "-" or left >= right):
            op = "+" if op == "-" else "-"
        result = left + right if op == "+" else left - right
        if rng.random() < slip:
            result = max(0, result + rng.choice((-10, -1, 1, 10)))
        parts.append(f"{left}{op}{right}={result}")
        left = result
    separator, ending = (rng.choice(SEPARATORS), rng.choice(ENDINGS)) if styles else (SEPARATORS[0], ENDINGS[0])
    return separator.join(parts) + ending.format(left)


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`, digits one per token, Qwen2's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, IM_START, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[IM_START], chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False, padding_side="left", model_max_length=512)


def build_model(tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen2ForCausalLM(config)


def sft_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (prompt + response) ids with labels on the response tokens only: (B, T)."""
    width = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), width), pad_id)
    labels = torch.full((len(pairs), width), -100)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (p, r) in enumerate(pairs):
        ids[row, :len(p) + len(r)] = torch.tensor(p + r)
        labels[row, len(p):len(p) + len(r)] = torch.tensor(r)
        mask[row, :len(p) + len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def warm_start(model, pairs, steps: int, batch_size: int, lr: float, pad_id: int, seed: int) -> None:
    """AdamW with linear warm-up and cosine decay over `steps` batches drawn from `pairs`."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps)))))
    model.train()
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order = list(range(len(pairs)))
            rng.shuffle(order)
        batch = sft_batch([pairs[order.pop()] for _ in range(batch_size)], pad_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps - 1:
            print(f"sft step {step:5d}  loss {loss.item():.4f}", flush=True)
    model.eval()


def measure(model, tokenizer, examples: list[data.Example], samples: int, max_new_tokens: int,
            seed: int) -> dict[str, float]:
    """avg@`samples` at temperature 1.0 and the mean per-token entropy of the sampled responses."""
    correct, entropy_sum, tokens, truncated = 0.0, 0.0, 0, 0
    for start in range(0, len(examples), 16):
        chunk = examples[start:start + 16]
        prompts = [data.format_prompt(tokenizer, e.question, "qwen-math") for e in chunk]
        batch = rollout.generate(model, tokenizer, prompts, [e.answer for e in chunk], samples,
                                 max_new_tokens, temperature=1.0, micro_batch_size=256,
                                 seed=seed + start)
        stats = rollout.score(model, batch, temperature=1.0, micro_batch_size=256)
        correct += sum(rewards.batch_rewards(batch.texts, batch.answers))
        entropy_sum += stats.entropy[batch.response_mask].sum().item()
        tokens += int(batch.response_mask.sum())
        truncated += int(batch.truncated.sum())
    n = len(examples) * samples
    return {"avg_at_k": correct / n, "k": samples, "test_problems": len(examples),
            "mean_response_entropy_nats": entropy_sum / tokens,
            "mean_response_tokens": tokens / n, "truncated_frac": truncated / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "tiny-qwen2"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-problems", type=int, default=20000)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--slip", type=float, default=0.03)
    parser.add_argument("--misread", type=float, default=0.8,
                        help="probability that the teacher reverses the sign of a step whose verb "
                             "is one of " + ", ".join(MISREAD_VERBS))
    parser.add_argument("--styles", action=argparse.BooleanOptionalAction, default=True,
                        help="the teacher varies the separator and the closing phrase")
    parser.add_argument("--eval-problems", type=int, default=300)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    t0 = time.time()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    train = data.synthetic_examples("train", n=args.train_problems, seed=args.seed,
                                    difficulty=DIFFICULTY)
    responses = [target_response(e.question, rng, args.slip, args.misread, args.styles) for e in train]
    # Train the tokenizer on the exact texts the model will see: a bootstrap tokenizer is
    # enough to render the chat template, whose text does not depend on the vocabulary.
    bootstrap = build_tokenizer([""], 260)
    prompts = [data.format_prompt(bootstrap, e.question, "qwen-math") for e in train]
    tokenizer = build_tokenizer(prompts + responses, args.vocab_size)
    pairs = [(tokenizer.encode(p, add_special_tokens=False),
              tokenizer.encode(r, add_special_tokens=False) + [tokenizer.eos_token_id])
             for p, r in zip(prompts, responses, strict=True)]

    model = build_model(tokenizer, args.hidden, args.layers)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary "
          f"{len(tokenizer)}, prompt ~{len(pairs[0][0])} tokens, response ~{len(pairs[0][1])}")
    warm_start(model, pairs, args.steps, args.batch_size, args.lr, tokenizer.pad_token_id, args.seed)

    out = Path(args.out)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    build_seconds = time.time() - t0

    # Measure what was saved, loaded back the way train.py loads it.
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    test = data.synthetic_examples("test", n=args.eval_problems, seed=args.seed,
                                   difficulty=DIFFICULTY)
    report = measure(model, tokenizer, test, args.eval_samples, args.max_new_tokens, args.seed)
    report.update({"build_seconds": round(build_seconds), "parameters": sum(
        p.numel() for p in model.parameters()), **{k: v for k, v in vars(args).items() if k != "out"}})
    (out / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
