"""Rule-based math reward: pull the final answer out of a response and decide if it equals the gold.

GRPO (paper section 2.2) turns these rewards r in {0, 1} into the advantages A = (r - mean r) / (std r)
that drive every entropy effect of the paper (Theorem 2: dH = -alpha (S_* - E[S]), alpha ~ A).
A wrong reward is a wrong sign of A, so the grader is deliberately strict and never crashes:

* What is graded: the text after the last `</think>` (a `<think>` without its `</think>` is a
  truncated thought and has no answer). Style "boxed" (Qwen2.5-math prompt): the LAST
  `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5`, with brace matching; an unclosed box is no
  answer. Style "answer" (DAPO prompt): the last `Answer:` line.
* Several boxes (style "boxed"): the last one decides (`boxes="last"`, the default), as in
  verl's DAPO / MATH rewards and math-verify, so rewards here compare with theirs. Long
  chain-of-thought models (Qwen2.5 included) box intermediate results, and listing guesses
  cannot game a rule that reads only the last box. `boxes="strict"` instead gives 0 unless
  every box holds the same answer as the last ("the same" as the fast path below decides it).
  Style "answer" always reads the last `Answer:` line and that line's last box.
* Fast path, in this process: normalise both sides (`\\left`/`\\right`, `\\dfrac`/`\\tfrac`,
  `\\text{...}` units, `^\\circ`, `\\$`, `\\%`, `{,}` and thousands commas, a trailing period,
  spaces, a leading `x =`), then compare exactly: equal strings, or equal rational numbers
  (`0.5 = \\frac{1}{2} = 1/2`, `007 = 7`, `1e3 = 1000`, but `0.333 != 1/3`, however many 3s:
  every decimal is read exactly, with no rounding and no limit on its digits). Tuples and
  intervals are ordered and their brackets must agree (`(1,2) != (2,1)`, `[2,5) != [2,5]`); a
  bare list `-2, 1` and a set `\\{...\\}` are unordered, compared as multisets of canonical
  values (n log n, never pairwise). This decides almost every response of a training step in
  microseconds, so thousands of responses per step stay cheap.
* Every path is bounded, whatever a policy under RL learns to write: every pattern here runs in
  linear time; answers nested deeper than MAX_DEPTH brackets go to the slow path; answers
  longer than MAX_ANSWER_CHARS score 0 with a warning. `tests/test_rewards.py` feeds the grader
  generated responses (hypothesis) and holds each to the time bound.
* Slow path, only when the fast path cannot decide (e.g. `\\frac{\\sqrt3}{2}` vs `\\sqrt{3}/2`):
  symbolic equivalence with math-verify, `verify(gold, pred)` (that order: gold first), with
  every decimal of both sides rewritten as the exact fraction it is (`0.3333333` as
  `\\frac{3333333}{10000000}`), so that math-verify's rounding of decimals to 6 places never
  applies and a number is equal to another by one rule on both paths. It runs
  in a persistent child process (symbolic.py) that gets `timeout` seconds of CPU time (at most
  5x that on the wall clock) and is otherwise killed and replaced in the background, so an
  input such as `\\boxed{9^{9^{9^{9}}}}` costs 0 reward and `timeout` (2 s), never a hung
  training run. What a timeout really costs: those 2 s, plus, for the next answer that needs
  the slow path, whatever is left of the new child's start (a 'spawn' child imports the main
  script: ~5 s under train.py, which imports torch; nothing if it comes later).
* Any exception while grading counts as reward 0 with a logged warning.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import countdown
import symbolic

logger = logging.getLogger(__name__)

REWARD_STYLES = ("boxed", "answer")
MAX_ANSWER_CHARS = 20_000   # longer answers score 0 with a warning (no gold answer is this long)
MAX_DEPTH = 32              # levels of nested brackets the fast path reads
BOX_RULES = ("last", "strict")


# ----- answer extraction -----

def strip_thinking(response: str) -> str:
    """The part of a response that is graded: after the last `</think>`; "" if a `<think>` is never closed."""
    if "</think>" in response:
        return response.rsplit("</think>", 1)[1]
    return "" if "<think>" in response else response


_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def _matching_brace(text: str, start: int) -> int | None:
    """Index of the `}` closing the `{` at text[start], skipping escaped braces; None if unclosed."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # `\{` and `\}` are literal braces (sets), not grouping
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def boxed_answers(text: str) -> tuple[list[str], bool]:
    """Contents of the boxes in `text`, in order, and whether the last box is unclosed (truncated).

    A box nested inside another box's content is part of that content, not a box of its own.
    """
    contents: list[str] = []
    pos = 0
    while (match := _BOX_COMMAND.search(text, pos)) is not None:
        i = match.end()
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            end = _matching_brace(text, i)
            if end is None:
                return contents, True
            contents.append(text[i + 1:end])
            pos = end + 1
        elif i > match.end() and (token := re.match(r"[^\s$]+", text[i:])):  # `\boxed 5`
            contents.append(token.group())
            pos = i + token.end()
        else:
            return contents, True  # `\boxed` at the very end: cut off before its argument
    return contents, False


def _check(style: str, boxes: str) -> None:
    if style not in REWARD_STYLES:
        raise ValueError(f"Unknown reward style {style!r}; use one of {REWARD_STYLES}.")
    if boxes not in BOX_RULES:
        raise ValueError(f"Unknown box rule {boxes!r}; use 'last' (the last box decides) or "
                         f"'strict' (all boxes must agree).")


def extract_answer(response: str, style: str = "boxed", boxes: str = "last") -> str | None:
    """The final answer of a response as written (not normalised), or None if it has none.

    style "boxed": the last complete box, None if the last box is unclosed, or (boxes
    "strict") if the boxes hold different answers. style "answer": the text after the last
    `Answer:` (its last box if it has one); `boxes` does not apply.
    """
    _check(style, boxes)
    text = strip_thinking(response)
    if style == "answer":
        lines = re.findall(r"(?i)answer\s*:\s*([^\n]*)", text)
        if not lines:
            return None
        answer = lines[-1].strip()
        found, truncated = boxed_answers(answer)
        if found and not truncated:
            answer = found[-1]
        return answer.strip() or None
    found, truncated = boxed_answers(text)
    if truncated or not found:
        return None
    last = normalize_answer(found[-1])
    if boxes == "strict" and any(_fast_equal(normalize_answer(box), last) is not True
                                 for box in found[:-1]):
        return None  # several different boxed answers under the strict rule
    return found[-1].strip() or None


# ----- normalisation and the exact fast path -----

_TEXT_COMMAND = r"\\(?:text|textbf|textrm|mbox|mathrm)"
_SUBSTITUTIONS = [  # (pattern, replacement), applied in order
    (r"\\displaystyle|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])", ""),
    (r"\\[dt]frac(?![a-zA-Z])", r"\\frac"),
    (r"\\[!,;:](?![a-zA-Z])|\\q?quad(?![a-zA-Z])|~", " "),
    (r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|°|\\degree(?![a-zA-Z])", ""),
    (r"\\?\$|\\?%", ""),
    (r"\{,\}", ""),
    (r"\\frac(\d)(\d)", r"\\frac{\1}{\2}"),
    (r"\\sqrt(\d)", r"\\sqrt{\1}"),
]


def normalize_answer(answer: str) -> str:
    """A canonical string for an answer: `\\dfrac{1}{2}.` -> `\\frac{1}{2}`, `x = 7,425 \\text{ m}` -> `7425`."""
    s = answer.strip()
    for pattern, replacement in _SUBSTITUTIONS:
        s = re.sub(pattern, replacement, s)
    s = s.strip().rstrip(".")
    whole_text = re.fullmatch(_TEXT_COMMAND + r"\{([^{}]*)\}", s.strip())
    if whole_text:  # `\text{Monday}` is the answer itself, not a unit
        s = whole_text.group(1)
    else:  # trailing units such as `5 \text{ cm}^2`
        without_units = re.sub(_TEXT_COMMAND + r"\{[^{}]*\}(\^\{?\d\}?)?\s*$", "", s).strip()
        s = without_units or s
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*=(?!=)", "", s).strip()  # `x = 3`
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):  # 7,425,000 (no spaces: `1, 234` is a list)
        s = s.replace(",", "")
    return re.sub(r"\s+", "", s)


_DECIMAL = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"  # no `\d+\.?\d*`: that backtracks quadratically
_EXPONENT = r"[eE][-+]?\d+"
_SCIENTIFIC = re.compile(rf"{_DECIMAL}(?:{_EXPONENT})?")
_RATIONAL = re.compile(rf"({_DECIMAL})/({_DECIMAL})")
_LATEX_FRACTION = re.compile(rf"([-+]?)\\frac\{{({_DECIMAL})\}}\{{({_DECIMAL})\}}")
_UNSIGNED_DECIMAL = re.compile(rf"(?<![\w.])(?:\d+\.\d*|\.\d+|\d+(?={_EXPONENT}))(?:{_EXPONENT})?")
MAX_EXPONENT = MAX_ANSWER_CHARS   # beyond 10^+-this a number stays a Decimal: no huge integer is built


def _exact(text: str) -> Fraction | Decimal:
    """The exact value of a decimal literal (`-0.25`, `1e3`), with no limit on its digits (int()
    refuses more than 4,300); a Decimal beyond 10^+-MAX_EXPONENT, which compares exactly too."""
    value = Decimal(text)
    return value if abs(value.adjusted()) > MAX_EXPONENT else Fraction(value)


def _fraction(text: str) -> Fraction:
    """The exact value of a decimal literal without an exponent (its size is its length)."""
    return Fraction(Decimal(text))


def parse_number(s: str) -> Fraction | Decimal | None:
    """The exact value of a normalised integer, decimal, `1e3`, `a/b` or `\\frac{a}{b}`; else None.

    Every pattern here runs in linear time on any string, and no input builds an integer of more
    than about MAX_EXPONENT digits.
    """
    try:
        if _SCIENTIFIC.fullmatch(s):
            return _exact(s)
        if match := _RATIONAL.fullmatch(s):
            return _fraction(match.group(1)) / _fraction(match.group(2))
        if match := _LATEX_FRACTION.fullmatch(s):
            value = _fraction(match.group(2)) / _fraction(match.group(3))
            return -value if match.group(1) == "-" else value
    except ArithmeticError:   # 1/0; an exponent too large for a Decimal
        return None
    return None


def _as_fraction(match: re.Match) -> str:
    """A decimal literal as the LaTeX of the exact fraction it is (`0.25` -> `\\frac{1}{4}`)."""
    try:
        value = _exact(match.group())
    except ArithmeticError:   # an exponent too large for a Decimal
        return match.group()
    if isinstance(value, Decimal):   # beyond MAX_EXPONENT: left as written
        return match.group()
    return str(value) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def exact_decimals(answer: str) -> str:
    """`answer` with each decimal literal written as its exact fraction, for math-verify, which
    would otherwise compare decimals rounded to 6 places (and call 0.3333333 equal to 1/3)."""
    return _UNSIGNED_DECIMAL.sub(_as_fraction, answer)


def _split_top_level(s: str) -> list[str]:
    """`s` split at the commas that are not inside (), [], {} (or `\\{ \\}`)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(s):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _encloses(s: str) -> bool:
    """Whether the first bracket of `s` is closed by its last character (`(1,2)` yes, `(1)+(2)` no)."""
    depth = 0
    for char in s[1:-1]:
        depth += (char in "([{") - (char in ")]}")
        if depth < 0:
            return False
    return True


def _structure(s: str) -> tuple[str, list[str]] | None:
    """(kind, items) of a compound answer, None for a single value.

    kind is the bracket pair for ordered tuples / intervals ("()", "[)", ...), "set" for the
    unordered `\\{...\\}` and "list" for a bare comma-separated list.
    """
    if s.startswith("\\{") and s.endswith("\\}"):
        return "set", _split_top_level(s[2:-2])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _encloses(s):
        items = _split_top_level(s[1:-1])
        if len(items) >= 2:
            return s[0] + s[-1], items
    items = _split_top_level(s)
    return ("list", items) if len(items) >= 2 else None


def _has_digit(s: str) -> bool:
    return any(char.isdigit() for char in s)


def _fast_equal(pred: str, gold: str, depth: int = 0) -> bool | None:
    """Exact comparison of two normalised answers: True, False, or None when it cannot decide
    (also beyond MAX_DEPTH levels of nested brackets, which only a pathological answer has)."""
    if pred == gold:
        return True
    if depth >= MAX_DEPTH:
        return None
    pred_number, gold_number = parse_number(pred), parse_number(gold)
    if pred_number is not None and gold_number is not None:
        return pred_number == gold_number
    if (pred_number is not None and not _has_digit(gold)) or (gold_number is not None and not _has_digit(pred)):
        return False  # a rational number never equals an answer without a single digit
    pred_structure, gold_structure = _structure(pred), _structure(gold)
    if pred_structure is None and gold_structure is None:
        return None
    if pred_structure is None or gold_structure is None:
        # a single number can never equal a compound answer; anything else is for math-verify
        return False if (pred_number is not None or gold_number is not None) else None
    (pred_kind, pred_items), (gold_kind, gold_items) = pred_structure, gold_structure
    unordered = ("set", "list")
    if (pred_kind in unordered) != (gold_kind in unordered):
        return None  # `(1,2)` vs `1,2`: notation question, left to math-verify
    if len(pred_items) != len(gold_items):
        return False
    if pred_kind not in unordered:
        if pred_kind != gold_kind:
            return False  # [2,5) vs [2,5]
        verdicts = [_fast_equal(p, g, depth + 1) for p, g in zip(pred_items, gold_items, strict=True)]
        if False in verdicts:
            return False
        return True if all(verdicts) else None
    if Counter(map(_canonical, pred_items)) == Counter(map(_canonical, gold_items)):
        return True   # the same multiset of values, found in n log n, never pairwise
    every_item_numeric = all(parse_number(x) is not None for x in pred_items + gold_items)
    return False if every_item_numeric else None


def _canonical(s: str, depth: int = 0):
    """A hashable value of a normalised answer such that two answers the fast path proves equal
    have the same value: the rational number, the items of a tuple in order or of a set / list
    sorted, or the string itself (beyond MAX_DEPTH levels of brackets: the string)."""
    number = parse_number(s)
    if number is not None:
        return ("number", number)
    structure = _structure(s) if depth < MAX_DEPTH else None
    if structure is None:
        return ("text", s)
    kind, items = structure
    values = [_canonical(item, depth + 1) for item in items]
    return (kind, tuple(sorted(values, key=repr)) if kind in ("set", "list") else tuple(values))


def answer_key(answer: str):
    """A hashable value of a gold answer, the same for golds the fast path proves equal (`2`,
    `2.0`, `\\boxed{2}`): how data.py tells that two problems are one."""
    return _canonical(normalize_answer(_gold_answer(answer)))


def answers_match(pred: str, gold: str) -> bool | None:
    """Fast-path verdict on two raw answers (normalised here); None means "ask math-verify"."""
    return _fast_equal(normalize_answer(pred), normalize_answer(gold))


# ----- rewards -----

def _gold_answer(gold: str) -> str:
    """Gold answers are normally bare; a boxed gold (a full solution) is reduced to its last box."""
    boxes, truncated = boxed_answers(gold)
    return boxes[-1] if boxes and not truncated else gold


def _grade(pred: str | None, gold: str, timeout: float) -> float:
    if pred is None:
        return 0.0
    if len(pred) > MAX_ANSWER_CHARS:
        logger.warning("an answer of %d characters is too long to grade; reward 0", len(pred))
        return 0.0
    try:
        problem = countdown.parse_gold(str(gold))
        if problem is not None:  # the countdown testbed: the answer is a route, checked exactly
            return float(countdown.verify(pred, problem))
        gold = _gold_answer(str(gold))
        verdict = answers_match(pred, gold)
        if verdict is None:
            verdict = symbolic.GRADER.equivalent(exact_decimals(gold), exact_decimals(pred), timeout)
        return float(verdict)
    except Exception as error:  # a reward must never stop training
        logger.warning("grading failed on gold %.80r vs answer %.80r (%r); reward 0", gold, pred, error)
        return 0.0


def math_reward(response: str, gold: str, style: str = "boxed", timeout: float = 2.0,
                boxes: str = "last") -> float:
    """1.0 if the response's final answer equals `gold`, else 0.0. style: "boxed" | "answer";
    boxes: "last" | "strict" (see the top of this file)."""
    return batch_rewards([response], [gold], style=style, timeout=timeout, boxes=boxes)[0]


def solution_key(response: str, gold: str, style: str = "boxed", boxes: str = "last") -> str | None:
    """What makes two right responses different solutions: for a countdown gold the route with
    its terms sorted (countdown.solution_key), else the normalised final answer (so on a task with
    one answer every right response is the same solution: 0.5 and 1/2 are one). None when there is
    no answer."""
    try:
        pred = extract_answer(response, style, boxes)
    except Exception:  # as in batch_rewards: a response that breaks extraction has no answer
        return None
    if pred is None:
        return None
    if countdown.is_gold(gold):
        return countdown.solution_key(pred)
    number = parse_number(normalize_answer(pred))
    return str(number) if number is not None else normalize_answer(pred)


def batch_rewards(responses: list[str], golds: list[str], style: str = "boxed",
                  timeout: float = 2.0, boxes: str = "last") -> list[float]:
    """Rewards of N responses against their N gold answers; each answer decided within `timeout` s.

    Identical (answer, gold) pairs, common within a GRPO group, are graded once.
    """
    if len(responses) != len(golds):
        raise ValueError(f"Got {len(responses)} responses but {len(golds)} gold answers; pass one gold per response.")
    _check(style, boxes)
    cache: dict[tuple[str | None, str], float] = {}
    rewards = []
    for response, gold in zip(responses, golds, strict=True):
        try:
            pred = extract_answer(response, style, boxes)
        except Exception as error:
            logger.warning("answer extraction failed (%r); reward 0", error)
            pred = None
        key = (pred, str(gold))
        if key not in cache:
            cache[key] = _grade(pred, gold, timeout)
        rewards.append(cache[key])
    return rewards
