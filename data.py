"""Data sets for reinforcement fine-tuning on math: (question, answer) pairs and prompt templates.

Everything upstream of a rollout: the problems GRPO samples responses for, and the prompt text
that asks for an answer format the rule-based reward (rewards.py) can grade. The paper's runs
train on DAPO-Math with a held-out DAPO500 and evaluate on AIME24/25, AMC23 and MATH-500; the
default run needs no network and uses the synthetic task at the bottom.

* `load_examples(name, ...)`: "synthetic", a short name of the table KNOWN (hub id, config,
  split, question and answer columns as the data sets' cards document them, and a transform
  where the raw column is not the bare answer: gsm8k keeps the text after `####`, DAPO-Math
  prompts lose the DAPO instruction they already contain so that no style doubles it), or a
  local .jsonl / .json / .csv (read by datafile.py, every number kept as the text the file writes, so
  that `9007199254740993` is not rounded to a float) or .parquet (datasets' loader; prepared like the hub
  sets: the DAPO instruction stripped where present, repeated problems dropped). Every user error ends
  in one ValueError that says what to do (unknown name, missing column, unreachable hub); rows
  without an answer are skipped and counted, not fatal.
* `load_set`: an evaluation set by "NAME" or "NAME:SPLIT"; `load_run_sets`: a run's training
  and evaluation sets from its configuration.
* `split_holdout`: a seeded validation split such as DAPO500. A local file's repeated problems
  (`problem_key`: the question, and the answer as the grader compares it) are read once, so no
  problem is both held out and trained on; `warn_overlap` names an evaluation set that shares
  problems with the training set.
* `fingerprint` / `check_unchanged`: a hash of the training problems, recorded in each
  checkpoint, so that a --resume on a changed file is refused; `check_context`: a prompt longer
  than the model's context is refused, naming its data set and row, before the model loads.
* `PromptSampler`: the training order, a seeded permutation per epoch.
* `format_prompt`: the Qwen2.5-math style (system "Please reason step by step, and put your
  final answer within \\boxed{}.", the default, as in the paper) or the DAPO "Answer:" style,
  through the tokenizer's chat template with the assistant turn opened; plain text when the
  tokenizer has no template. `reward_style` names the matching reward style.
"""

import hashlib
import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import countdown
import datafile
import rewards

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One problem: the question shown to the model and its gold answer, both plain strings, and
    the row of its file it was read from (from 1; None for a generated task), for messages."""
    question: str
    answer: str
    row: int | None = field(default=None, compare=False)


QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
DAPO_TEMPLATE = ("Solve the following math problem step by step. The last line of your response should be "
                 "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem."
                 "\n\n{problem}\n\n"
                 'Remember to put your answer on its own line after "Answer:".')
PROMPT_STYLES = ("qwen-math", "dapo")
_REWARD_STYLE = {"qwen-math": "boxed", "dapo": "answer"}


def _gsm8k_answer(solution: str) -> str:
    """gsm8k's answer column is a worked solution ending in `#### 7,425`: keep `7425`."""
    return solution.split("####")[-1].strip().replace(",", "")


def _strip_dapo_instruction(prompt: str) -> str:
    """DAPO-Math prompts already carry the DAPO instruction; keep the bare problem so that
    format_prompt can apply either style without doubling it."""
    prefix, suffix = DAPO_TEMPLATE.split("{problem}")
    return prompt.removeprefix(prefix).removesuffix(suffix)


@dataclass(frozen=True)
class HubDataset:
    """Where a known data set lives on the hub and which columns hold the question and the answer."""
    hub_id: str
    config: str | None
    split: str                                   # default split
    question: str                                # column names, as documented on the data set's card
    answer: str
    question_transform: Callable[[str], str] | None = None
    answer_transform: Callable[[str], str] | None = None


KNOWN: dict[str, HubDataset] = {  # hub ids, configs, splits and columns as the cards document them
    "dapo-math": HubDataset("open-r1/DAPO-Math-17k-Processed", "en", "train", "prompt", "solution",
                            question_transform=_strip_dapo_instruction),
    "gsm8k": HubDataset("openai/gsm8k", "main", "test", "question", "answer",
                        answer_transform=_gsm8k_answer),
    "math500": HubDataset("HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
    "aime24": HubDataset("HuggingFaceH4/aime_2024", None, "train", "problem", "answer"),
    "aime25": HubDataset("math-ai/aime25", None, "test", "problem", "answer"),
    "amc23": HubDataset("math-ai/amc23", None, "test", "question", "answer"),
}
# the built-in tasks (no network) and the sets a run on them evaluates by default (--eval-datasets auto)
BUILT_IN = {"synthetic": ["synthetic:test"], "countdown": ["countdown:test", "countdown:hard"]}
KEY_FLAGS = ("--question-key", "--answer-key")  # the flags that name the columns, for messages
EVAL_KEY_FLAGS = ("--eval-question-key", "--eval-answer-key")  # train.py's, for --eval-datasets


def load_examples(name: str, split: str | None = None, question_key: str | None = None,
                  answer_key: str | None = None, limit: int | None = None, seed: int = 0,
                  key_flags: tuple[str, str] | None = KEY_FLAGS) -> list[Example]:
    """Examples of a data set: "synthetic", a short name of KNOWN, or a local .jsonl/.json/.parquet/.csv.

    split: "train" / "test" for synthetic, "train" / "test" / "hard" for countdown (default
    "train"), a hub split for KNOWN (default: the
    table's); ignored for local files. question_key / answer_key: column names, overriding the
    table's or, for local files, the defaults datafile.QUESTION_KEYS / ANSWER_KEYS tried in order; a dotted
    key reads a nested field ("reward_model.ground_truth" in verl-style parquet files).
    key_flags: the command's flags that set the two keys, named in error messages (train.py's
    --eval-datasets has its own; None where no flag applies).
    limit: keep a seeded random subset of this many examples, in their original order.
    Rows without a question or an answer are skipped with one logged warning giving their count;
    a cell that holds a dict or a list (other than chat messages, whose last user turn is the
    question) is refused, as no rule says which part of it is the text.
    """
    if name == "synthetic":
        return synthetic_examples(split or "train", n=limit, seed=seed)
    if name == "countdown":
        return countdown_examples(split or "train", n=limit, seed=seed)
    if name in KNOWN:
        spec = KNOWN[name]
        rows = _load_from_hub(name, spec, split or spec.split)
        examples = [Example(*row) for row in datafile.question_answers(
            list(rows.column_names), rows, question_key or spec.question, answer_key or spec.answer,
            f"{name} ({spec.hub_id})", key_flags, spec.question_transform, spec.answer_transform)]
    elif Path(name).suffix.lower() in datafile.LOCAL_FORMATS or Path(name).exists():
        columns, rows = datafile.read_rows(Path(name))
        # prepared like the hub sets: a local copy of the original DAPO-Math (its prompts carry
        # the DAPO instruction, and each appears ~100 times) gives the same problems once each
        examples = _unique([Example(*row) for row in datafile.question_answers(
            columns, rows, question_key, answer_key, name, key_flags, _strip_dapo_instruction)], name)
    else:
        raise ValueError(f"Unknown data set {name!r}: use 'synthetic', 'countdown', one of {', '.join(KNOWN)}, "
                         f"or a local file ending in {', '.join(datafile.LOCAL_FORMATS)}.")
    if limit is not None and limit < len(examples):
        keep = sorted(random.Random(seed).sample(range(len(examples)), max(limit, 0)))
        examples = [examples[i] for i in keep]
    return examples


def _load_from_hub(name: str, spec: HubDataset, split: str):
    from datasets import load_dataset  # imported here: ~1 s, and the default synthetic task needs none of it

    try:
        return load_dataset(spec.hub_id, spec.config, split=split)
    except Exception as error:  # offline, unreachable, unknown split: all end in the same advice
        cause = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        file = f"{name}-{split}.jsonl"
        raise ValueError(
            f"Could not load {name!r} ({spec.hub_id}, split {split!r}) from the Hugging Face hub ({cause}). "
            f"If the hub cannot be reached from here, save the examples on a machine where it can: "
            f"python -c \"import data; data.save_examples(data.load_examples({name!r}, split={split!r}), "
            f"{file!r})\", copy the file here and pass it as the data set (train.py --dataset "
            f"{file}, eval.py --datasets {file}).") from error


def problem_key(example: Example) -> tuple:
    """What makes two problems one: the question with its spacing collapsed, and the answer as
    the grader compares it (rewards.answer_key: `2`, `2.0` and `\\boxed{2}` are one answer)."""
    return " ".join(example.question.split()), rewards.answer_key(example.answer)


def _unique(examples: list[Example], source: str) -> list[Example]:
    """The examples with repeated problems (`problem_key`) dropped, first occurrence kept, so that
    no problem can be both held out and trained on."""
    first: dict[tuple, Example] = {}
    for example in examples:
        first.setdefault(problem_key(example), example)
    unique = list(first.values())
    if len(unique) < len(examples):
        logger.warning("%s: dropped %d repeated problems (%d remain)", source,
                       len(examples) - len(unique), len(unique))
    return unique


def save_examples(examples: list[Example], path: str | Path) -> None:
    """Write examples as .jsonl with keys "question" and "answer" (load_examples reads it back as is)."""
    with open(path, "w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps({"question": example.question, "answer": example.answer}, ensure_ascii=False) + "\n")


def split_holdout(examples: list[Example], n: int, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(train, held_out): a seeded random `n` examples held out for validation, e.g. the paper's
    DAPO500 (500 problems of DAPO-Math). Both keep the original order and are disjoint."""
    if not 0 <= n < len(examples):
        raise ValueError(f"Cannot hold out {n} of {len(examples)} examples; hold out at least 0 and fewer than all.")
    held = set(random.Random(seed).sample(range(len(examples)), n))
    train = [e for i, e in enumerate(examples) if i not in held]
    held_out = [e for i, e in enumerate(examples) if i in held]
    return train, held_out


def load_set(spec: str, limit: int | None, question_key: str | None = None, answer_key: str | None = None,
             key_flags: tuple[str, str] = KEY_FLAGS) -> list[Example]:
    """The problems of an evaluation set "NAME" or "NAME:SPLIT" (synthetic defaults to its test
    split; an existing file is read as a path, colons and all). question_key / answer_key (set
    by key_flags) apply to local files only: the known sets keep their documented columns. The
    `limit` subset is drawn with seed 0 whatever the run's seed is, so runs with different seeds
    see the same problems."""
    name, _, split = (spec, "", "") if Path(spec).exists() else spec.partition(":")
    if name in BUILT_IN:
        split = split or "test"
    if name in KNOWN:
        return load_examples(name, split=split or None, limit=limit, seed=0, key_flags=None)
    return load_examples(name, split=split or None, question_key=question_key, answer_key=answer_key,
                         limit=limit, seed=0, key_flags=key_flags)


def load_run_sets(cfg) -> tuple[list[Example], dict[str, list[Example]]]:
    """(training examples, {evaluation set name: examples}) of a run; cfg: config.Config (read
    only: dataset, split, question_key, answer_key, holdout, prompts_per_step, eval_every,
    eval_datasets, eval_question_key, eval_answer_key, eval_limit). The held-out problems are a
    fixed seeded subset (seed 0, so runs with different --seed evaluate on the same problems)."""
    examples = load_examples(cfg.dataset, split=cfg.split, question_key=cfg.question_key,
                                  answer_key=cfg.answer_key, seed=0)
    examples, heldout = split_holdout(examples, cfg.holdout, seed=0)
    if len(examples) < cfg.prompts_per_step:
        raise ValueError(f"--dataset {cfg.dataset} has {len(examples)} training problems (after "
                         f"--holdout {cfg.holdout}), fewer than --prompts-per-step "
                         f"{cfg.prompts_per_step}; lower one of them.")
    names = cfg.eval_datasets if cfg.eval_every else ""
    if names == "auto":
        names = ",".join(BUILT_IN.get(cfg.dataset, []) + (["heldout"] if cfg.holdout else []))
    eval_sets = {}
    for spec in filter(None, (s.strip() for s in names.split(","))):
        if spec == "heldout" and not heldout:
            raise ValueError("--eval-datasets names 'heldout' but --holdout is 0; "
                             "hold some problems out or drop 'heldout'.")
        eval_sets[spec] = heldout[:cfg.eval_limit] if spec == "heldout" else load_set(
            spec, cfg.eval_limit, cfg.eval_question_key, cfg.eval_answer_key, EVAL_KEY_FLAGS)
    warn_overlap(examples, eval_sets)
    return examples, eval_sets


def warn_overlap(train: list[Example], eval_sets: dict[str, list[Example]]) -> dict[str, int]:
    """Warn, one line per evaluation set, about its problems that are also training problems
    (`problem_key`): its numbers then partly measure what the run trains on. Returns {set: count}
    for the sets that share any."""
    trained = {problem_key(e) for e in train}
    shared = {name: sum(problem_key(e) in trained for e in examples) for name, examples in eval_sets.items()}
    for name, count in shared.items():
        if count:
            logger.warning("warning: %d of the %d problems of evaluation set %s are also training problems "
                           "(the same question and answer); its numbers partly measure problems the run "
                           "trains on", count, len(eval_sets[name]), name)
    return {name: count for name, count in shared.items() if count}


def fingerprint(examples: list[Example]) -> str:
    """The SHA-256 of the problems in their order: a resumed run checks that it trains on the
    same problems as the run it continues (`check_unchanged`)."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.question, example.answer]).encode() + b"\n")
    return digest.hexdigest()


def check_unchanged(examples: list[Example], recorded: str | None, dataset: str) -> None:
    """Refuse, in one sentence, a --resume whose training problems differ from the ones the
    checkpoint recorded (`fingerprint`; None: a checkpoint from before it was recorded)."""
    if recorded is not None and fingerprint(examples) != recorded:
        raise ValueError(f"--dataset {dataset} holds other problems than when this run was trained "
                         f"(its content changed), so --resume would continue on new data; restore "
                         f"the original file, or start a new run in another --out.")


def check_context(sets: dict[str, list[Example]], model: str, style: str) -> None:
    """Refuse, in one sentence naming the data set and row, a prompt (the question in `style`,
    through the model's chat template) longer than the model's context (its config's
    max_position_embeddings): the model cannot read it, and sampling from it would allocate for
    a sequence it was not built for. Called before the model loads; only prompts with more
    UTF-8 bytes than the context are tokenized (a token is at least one byte)."""
    from transformers import AutoConfig, AutoTokenizer
    try:
        context = getattr(AutoConfig.from_pretrained(model).get_text_config(), "max_position_embeddings", None)
        tokenizer = AutoTokenizer.from_pretrained(model)
    except Exception:   # the model's own load says what is wrong with it
        return
    if not context:
        return
    for name, examples in sets.items():
        for index, example in enumerate(examples):
            prompt = format_prompt(tokenizer, example.question, style)
            if len(prompt.encode()) <= context:
                continue
            tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if tokens > context:
                row = example.row if example.row is not None else index + 1
                raise ValueError(f"row {row} of {name} is a prompt of {tokens} tokens, longer than the "
                                 f"{context} of the model's context; shorten or remove that problem.")


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


def prompt_messages(question: str, style: str = "qwen-math") -> list[dict[str, str]]:
    """The chat messages of a prompt style: "qwen-math" (system prompt asking for \\boxed{},
    user = question) or "dapo" (no system prompt, the DAPO "Answer:" instruction around the question)."""
    if style == "qwen-math":
        return [{"role": "system", "content": QWEN_MATH_SYSTEM}, {"role": "user", "content": question}]
    if style == "dapo":
        return [{"role": "user", "content": DAPO_TEMPLATE.format(problem=question)}]
    raise ValueError(f"Unknown prompt style {style!r}; use one of {PROMPT_STYLES}.")


def format_prompt(tokenizer, question: str, style: str = "qwen-math") -> str:
    """The prompt string to generate from: the tokenizer's chat template with the assistant turn
    opened (add_generation_prompt=True). A tokenizer without a chat template (or None) gets the
    messages' texts separated by blank lines."""
    messages = prompt_messages(question, style)
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        return "\n\n".join(m["content"] for m in messages) + "\n\n"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def reward_style(style: str) -> str:
    """The answer format a prompt style asks for, as rewards.math_reward's `style`: "boxed" or "answer"."""
    if style not in _REWARD_STYLE:
        raise ValueError(f"Unknown prompt style {style!r}; use one of {PROMPT_STYLES}.")
    return _REWARD_STYLE[style]


# ----------------------------------------------------------------------------- the synthetic task
# Arithmetic word problems that need no network: "Tom has 47 apples. Tom buys 8 more, then
# gives 5 to Mia. How many apples does Tom have now?" -> "50". `difficulty` is the number of
# operations, each adding or taking away a one-digit number (2-9) from a running total that
# starts at two digits, so most problems need a carry or a borrow (47+8, 55-7) yet stay small
# enough for a ~2 M-parameter model to learn on a CPU in minutes. A problem goes to the test
# split iff a hash of its arithmetic (start number, signed operands) says so, whatever the seed
# and wording: no test problem shares its arithmetic with any train problem, for any seeds.
_NAMES = ("Tom", "Mia", "Sam", "Ana", "Leo", "Ivy", "Ben", "Zoe", "Max", "Eva")
_OBJECTS = ("apples", "books", "coins", "marbles", "stickers", "pens", "shells", "cards")
_GAIN = ("buys {n} more", "finds {n} more", "gets {n} more from {other}")
_LOSE = ("gives {n} to {other}", "loses {n}", "sells {n}")
_SYNTHETIC_SIZES = {"train": 4000, "test": 300}
_TEST_PERCENT = 10


def _synthetic_split(start: int, operands: list[int]) -> str:
    """The split a problem's arithmetic belongs to, from a seed-independent hash."""
    key = ",".join(str(x) for x in [start, *operands]).encode()
    bucket = int(hashlib.sha256(key).hexdigest()[:8], 16) % 100
    return "test" if bucket < _TEST_PERCENT else "train"


_STEP = re.compile(r"(buys|finds|gets|gives|loses|sells) (\d+)")


def synthetic_verbs(question: str) -> list[str]:
    """The verb of each step of a synthetic question ("buys", ..., "sells"), in order."""
    return [verb for verb, _ in _STEP.findall(question)]


def synthetic_steps(question: str) -> list[tuple[int, str, int]]:
    """The working of a synthetic question as steps (left, "+" or "-", right), read back from
    its wording; the result of each step is the left side of the next."""
    start = int(re.search(r"has (\d+) ", question).group(1))
    steps, total = [], start
    for verb, n in _STEP.findall(question):
        op = "+" if verb in ("buys", "finds", "gets") else "-"
        steps.append((total, op, int(n)))
        total = total + int(n) if op == "+" else total - int(n)
    return steps


def sign_guess_curve(ks: list[int], difficulty: int = 2) -> dict[int, float]:
    """pass@k of a model that gets every number of a synthetic problem right and picks each
    step's sign at random: one of the 2^difficulty sign patterns is the gold, so one sample is
    right with probability 2^-difficulty and k independent samples with 1 - (1 - 2^-d)^k (at
    difficulty 2: 0.25 at k = 1, 0.99 at k = 16). What large-k pass@k on this task cannot rise above
    without showing anything but guessing."""
    p = 0.5 ** difficulty
    return {k: 1 - (1 - p) ** k for k in ks}


def synthetic_examples(split: str, n: int | None = None, seed: int = 0,
                       difficulty: int = 2) -> list[Example]:
    """`n` distinct word problems of `split` ("train" or "test"; 4000 / 300 by default), each
    with `difficulty` operations. Deterministic in (split, n, seed, difficulty); train and test
    never share arithmetic, for any seeds (the same arithmetic may recur within a split in
    other words, as it must at difficulty 1, which has only ~1,400 distinct sums)."""
    if split not in _SYNTHETIC_SIZES:
        raise ValueError(f"unknown synthetic split {split!r}: use 'train' or 'test'")
    if difficulty < 1:
        raise ValueError(f"synthetic difficulty must be at least 1 (operations), got {difficulty}")
    n = _SYNTHETIC_SIZES[split] if n is None else n
    rng = random.Random(f"synthetic/{split}/{seed}/{difficulty}")
    examples, seen = [], set()
    while len(examples) < n:
        name, other = rng.sample(_NAMES, 2)
        thing = rng.choice(_OBJECTS)
        start = total = rng.randint(10, 99)
        phrases, operands = [], []
        for _ in range(difficulty):
            if total >= 2 and rng.random() < 0.5:
                k = rng.randint(2, min(9, total))  # never below zero
                phrases.append(rng.choice(_LOSE).format(n=k, other=other))
                operands.append(-k)
                total -= k
            else:
                k = rng.randint(2, 9)
                phrases.append(rng.choice(_GAIN).format(n=k, other=other))
                operands.append(k)
                total += k
        question = (f"{name} has {start} {thing}. {name} {', then '.join(phrases)}. "
                    f"How many {thing} does {name} have now?")
        if question in seen or _synthetic_split(start, operands) != split:
            continue
        seen.add(question)
        examples.append(Example(question, str(total)))
    return examples


def built_in_split_error(spec: str) -> str | None:
    """The one-sentence error for "NAME:SPLIT" naming a split a built-in task does not have,
    else None (other names are checked when they load)."""
    name, _, split = spec.partition(":")
    splits = {"synthetic": tuple(_SYNTHETIC_SIZES), "countdown": countdown.SPLITS}.get(name)
    if splits is None or not split or split in splits:
        return None
    return f"the {name} task has no split {split!r}; use one of {', '.join(splits)}."


def countdown_examples(split: str, n: int | None = None, seed: int = 0) -> list[Example]:
    """`n` problems of the countdown testbed's `split` ("train", "test" or "hard"; countdown.py),
    each as (question, its self-describing gold "countdown:START->TARGET:N1,...")."""
    return [Example(p.question, p.gold) for p in countdown.problems(split, n, seed)]
