"""The countdown testbed: a built-in task on which exploration can be measured (docs/testbed.md).

    Start at 47. Reach 61 by adding or subtracting some of 9, 8, 2, 5, each at most once.
    -> a response whose last box holds a route, e.g.  ... 61-61=0. \\boxed{47+9+5}

The synthetic task's answers are one of a few sign variants, so guessing reaches pass@64 near 1
and large-k pass@k there cannot show exploration. Here the answer is a *route*: a start, then
signed terms drawn from the listed numbers, each at most once, whose sum is the target. The
grader is exact and rule-based (`verify`: a regular expression and integer additions, never
Python's eval); a problem usually has several right routes, so collapse onto one of them can be
counted (`solution_key`: the multiset of signed terms, order ignored).

Splits, disjoint by construction:
* "train" / "test": 4 or 5 numbers from 2-9, a start of 10-99, and a target that needs two or
  three terms at least (`min_terms` in {2, 3}); a hash of (start, target, numbers) sends 10% of
  problems to "test" whatever the seed, as the synthetic task's split does. The common
  shortcut (`greedy_route`: always take the number that lands closest to the target) solves
  SHORTCUT_SHARE (70%) of them, by construction: a coin decides which kind each draw must be.
* "hard": the held-out problems (the test split's hash) of the hard kind (`is_hard`): five
  numbers, a target three terms away, on which the shortcut fails but a *detour* works
  (`detour_routes`: the shortcut with one step changed). The test split is the other held-out
  problems, so the three splits never share a problem. Training has problems of the hard kind
  (with a training hash); what makes them hard is the search: the route the teacher mostly
  takes leads nowhere unless it is left once, at the right step.

Chance, computed exactly (`blind_curve`, `search_curve`): a problem-blind strategy that answers
every problem with the k routes most frequent among the *training* problems' solutions (its
pass@k on another split is near 0, since a route carries its start and target), and a random
searcher that reads the start and the numbers but not the target, drawing each number unused,
added or subtracted with probability 1/3 (the analogue of the synthetic task's sign guessing;
it is not problem-blind, and its curve is the bar a model's search should clear).

A problem's gold answer (`Example.answer`) is its own description, `countdown:START->TARGET:N1,N2,...`,
so that rewards.py grades it through the same `batch_rewards` as every other task.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import itertools
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test", "hard")
SIZES = {"train": 4000, "test": 300, "hard": 300}
NUMBERS = range(2, 10)          # the listed numbers are drawn from these, distinct
STARTS = range(10, 100)
TEST_PERCENT = 10
SHORTCUT_SHARE = 0.7              # of train / test problems, the shortcut solves this share
MAX_EXPRESSION_CHARS = 200      # a longer box is no route (a list of numbers cannot be one)
GOLD_PREFIX = "countdown:"
_GOLD = re.compile(r"countdown:(\d+)->(-?\d+):(\d+(?:,\d+)*)")
_EXPRESSION = re.compile(r"(\d{1,4})((?:[+-]\d{1,4})+)")
_TERM = re.compile(r"[+-]\d+")


@dataclass(frozen=True)
class Problem:
    """Reach `target` from `start` with signed terms from `numbers`, each number at most once."""
    start: int
    target: int
    numbers: tuple[int, ...]

    @property
    def question(self) -> str:
        listed = ", ".join(str(n) for n in self.numbers)
        return (f"Start at {self.start}. Reach {self.target} by adding or subtracting some of "
                f"{listed}, each at most once.")

    @property
    def gold(self) -> str:
        return f"{GOLD_PREFIX}{self.start}->{self.target}:{','.join(str(n) for n in self.numbers)}"


def parse_gold(gold: str) -> Problem | None:
    """The problem a gold answer describes, or None if `gold` is not a countdown gold."""
    match = _GOLD.fullmatch(gold.strip())
    if match is None:
        return None
    start, target, numbers = match.groups()
    return Problem(int(start), int(target), tuple(int(n) for n in numbers.split(",")))


def is_gold(gold: str) -> bool:
    return str(gold).startswith(GOLD_PREFIX)


# ----------------------------------------------------------------------------- the grader

def parse_route(expression: str) -> tuple[int, list[int]] | None:
    """(start, signed terms) of an expression "47+12-8+19" (spaces ignored), or None when the
    text is anything else (another operator, a bracket, a leading sign, no term at all)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        return None
    match = _EXPRESSION.fullmatch(re.sub(r"\s+", "", expression))
    if match is None:
        return None
    return int(match.group(1)), [int(t) for t in _TERM.findall(match.group(2))]


def verify(expression: str | None, problem: Problem) -> bool:
    """True iff `expression` starts at the problem's start, uses each listed number at most once
    (as +n or -n) and sums to the target. Exact integer arithmetic; linear in the text."""
    route = parse_route(expression) if expression is not None else None
    if route is None:
        return False
    start, terms = route
    available = Counter(problem.numbers)
    used = Counter(abs(t) for t in terms)
    return (start == problem.start and all(used[n] <= available[n] for n in used)
            and start + sum(terms) == problem.target)


def solution_key(expression: str) -> str | None:
    """The route as a canonical string (its signed terms sorted), so that "47+12-8" and
    "47-8+12" count as one distinct solution; None if it is not a route."""
    route = parse_route(expression)
    if route is None:
        return None
    start, terms = route
    return f"{start}" + "".join(f"{t:+d}" for t in sorted(terms))


# ----------------------------------------------------------------------------- search

@functools.lru_cache(maxsize=1 << 16)
def routes(problem: Problem) -> tuple[tuple[int, ...], ...]:
    """Every right route as its signed terms in listed order (each number unused, + or -):
    3^len(numbers) sign patterns, at most 729 here."""
    found = []
    for signs in itertools.product((0, 1, -1), repeat=len(problem.numbers)):
        terms = tuple(s * n for s, n in zip(signs, problem.numbers, strict=True) if s)
        if terms and problem.start + sum(terms) == problem.target:
            found.append(terms)
    return tuple(found)


def min_terms(problem: Problem) -> int | None:
    """The fewest terms of any right route (None if there is none)."""
    lengths = [len(r) for r in routes(problem)]
    return min(lengths) if lengths else None


def greedy_step(target: int, total: int, unused: Iterable[int]) -> int | None:
    """The common shortcut's next signed term from `total`: the unused number and sign that land
    closest to `target` (the first listed on ties), or None when none strictly helps."""
    gap = abs(target - total)
    best = min(((abs(target - total - s * n), i, s * n) for i, n in enumerate(unused)
                for s in (1, -1)), key=lambda c: (c[0], c[1]), default=None)
    return None if best is None or best[0] >= gap else best[2]


def _continue_greedy(problem: Problem, terms: list[int]) -> tuple[int, ...]:
    """`terms`, then the shortcut's steps from where they leave off until it stops."""
    terms, unused = list(terms), list(problem.numbers)
    for term in terms:
        unused.remove(abs(term))
    total = problem.start + sum(terms)
    while total != problem.target:
        term = greedy_step(problem.target, total, unused)
        if term is None:
            break
        terms.append(term)
        total += term
        unused.remove(abs(term))
    return tuple(terms)


def greedy_route(problem: Problem) -> tuple[int, ...]:
    """The common shortcut: repeatedly take `greedy_step` while it helps. Its terms, in the
    order taken; they reach the target or stop short of it."""
    return _continue_greedy(problem, [])


def detour_routes(problem: Problem) -> set[tuple[int, ...]]:
    """The right routes that follow the shortcut except at one step, where they take any other
    unused number and sign (the teacher's exploration can find these; docs/testbed.md)."""
    shortcut, found = greedy_route(problem), set()
    for i in range(len(shortcut) + 1):
        prefix = list(shortcut[:i])
        unused = [n for n in problem.numbers if n not in {abs(t) for t in prefix}]
        for term in (s * n for n in unused for s in (1, -1)):
            if i < len(shortcut) and term == shortcut[i]:
                continue
            route = _continue_greedy(problem, prefix + [term])
            if problem.start + sum(route) == problem.target:
                found.add(route)
    return found


def format_route(start: int, terms: Iterable[int]) -> str:
    return f"{start}" + "".join(f"{t:+d}" for t in terms)


# ----------------------------------------------------------------------------- the splits

def shortcut_solves(problem: Problem) -> bool:
    return problem.start + sum(greedy_route(problem)) == problem.target


def is_hard(problem: Problem) -> bool:
    """The hard kind: five numbers, a target three terms away at least and at most, the shortcut
    fails, and a detour of it works."""
    return (len(problem.numbers) == 5 and min_terms(problem) == 3 and not shortcut_solves(problem)
            and bool(detour_routes(problem)))


def _held_out(problem: Problem) -> bool:
    """A seed-independent TEST_PERCENT of (start, target, numbers), as the synthetic task's split."""
    key = f"{problem.start},{problem.target},{sorted(problem.numbers)}".encode()
    return int(hashlib.sha256(key).hexdigest()[:8], 16) % 100 < TEST_PERCENT


def split_of(problem: Problem) -> str:
    """"train" for the problems outside the held-out hash; of the held-out ones, "hard" for the
    hard kind (`is_hard`) and "test" for the rest."""
    if not _held_out(problem):
        return "train"
    return "hard" if is_hard(problem) else "test"


def _draw(rng: random.Random, hard: bool) -> Problem:
    """One problem from planted routes, redrawn until it meets its split's rules: for train /
    test, whether the shortcut solves it is decided first (SHORTCUT_SHARE), then met; a hard
    one is held out and of the hard kind."""
    shortcut_wanted = hard is False and rng.random() < SHORTCUT_SHARE
    while True:
        numbers = tuple(rng.sample(NUMBERS, 5 if hard else rng.choice((4, 5))))
        planted = rng.sample(numbers, 3 if hard else rng.choice((2, 3)))
        start = rng.choice(STARTS)
        target = start + sum(n * rng.choice((1, -1)) for n in planted)
        if target < 1 or target == start:
            continue
        problem = Problem(start, target, numbers)
        if hard and _held_out(problem) and is_hard(problem):
            return problem
        if not hard and min_terms(problem) in (2, 3) and shortcut_solves(problem) == shortcut_wanted:
            return problem


def problems(split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
    """`n` distinct problems of `split` (SIZES by default), deterministic in (split, n, seed);
    the splits never share a problem, for any seeds."""
    if split not in SPLITS:
        raise ValueError(f"Unknown countdown split {split!r}; use one of {', '.join(SPLITS)}.")
    n = SIZES[split] if n is None else n
    if n < 0:
        raise ValueError(f"Cannot draw {n} countdown problems; ask for at least 0.")
    rng = random.Random(f"countdown/{split}/{seed}")
    out, seen = [], set()
    while len(out) < n:
        problem = _draw(rng, hard=split == "hard")
        if problem in seen or split_of(problem) != split:
            continue
        seen.add(problem)
        out.append(problem)
    return out


# ----------------------------------------------------------------------------- chance curves

def blind_curve(train: list[Problem], evaluated: list[Problem], ks: list[int]) -> dict[int, float]:
    """pass@k of the best problem-blind strategy we know: answer every problem with the k routes
    (as written, start and terms) that are right for the most *training* problems, and score them
    on `evaluated`. Returns {k: fraction of evaluated problems that one of the k routes solves}."""
    counts = Counter(format_route(p.start, r) for p in train for r in routes(p))
    ranked = [route for route, _ in counts.most_common(max(ks))]
    answers = {p: {format_route(p.start, r) for r in routes(p)} for p in evaluated}
    return {k: sum(bool(answers[p] & set(ranked[:k])) for p in evaluated) / len(evaluated)
            for k in ks}


def search_probability(problem: Problem) -> float:
    """Chance that one draw of the random searcher (each number unused, + or - with probability
    1/3, order as listed) is a right route."""
    return len(routes(problem)) / 3 ** len(problem.numbers)


def search_curve(evaluated: list[Problem], ks: list[int]) -> dict[int, float]:
    """pass@k of k independent draws of the random searcher, averaged over problems:
    mean of 1 - (1 - p)^k, p = search_probability(problem)."""
    ps = [search_probability(p) for p in evaluated]
    return {k: sum(1 - (1 - p) ** k for p in ps) / len(ps) for k in ks}


def distinct_solutions(expressions: Iterable[str | None], problem: Problem) -> int:
    """How many different right routes (solution_key) are among one problem's answers."""
    return len({solution_key(e) for e in expressions if e is not None and verify(e, problem)})


def chance_curves(split: str, n: int, ks: list[int]) -> dict[str, dict[int, float]]:
    """The two chance curves of the first `n` problems of `split` (the problems eval.py --limit n
    evaluates): the problem-blind strategy fitted on the default training split, and the random
    searcher."""
    evaluated = problems(split, n, seed=0)
    return {"chance: problem-blind": blind_curve(problems("train"), evaluated, ks),
            "chance: random search": search_curve(evaluated, ks)}


def main(argv: list[str] | None = None) -> dict:
    """python countdown.py [--n 100] [--out FILE]: the chance curves and the search sizes of the
    test and hard splits, printed and written as JSON {"countdown:SPLIT": {label: {k: pass@k}}}
    for plot.py --chance."""
    parser = argparse.ArgumentParser(description="the countdown testbed's chance curves (docs/testbed.md)")
    parser.add_argument("--n", type=int, default=100, help="problems of each split (eval.py --limit)")
    parser.add_argument("--max-k", type=int, default=128)
    parser.add_argument("--out", default=None, help="JSON file for plot.py --chance")
    args = parser.parse_args(argv)
    ks = [2 ** i for i in range(args.max_k.bit_length()) if 2 ** i <= args.max_k]
    out = {}
    for split in ("test", "hard"):
        out[f"countdown:{split}"] = chance_curves(split, args.n, ks)
        ps = problems(split, args.n, seed=0)
        print(f"{split}: {args.n} problems, {sum(len(p.numbers) for p in ps) / len(ps):.2f} numbers, "
              f"{sum(len(routes(p)) for p in ps) / len(ps):.2f} right routes and "
              f"{sum(min_terms(p) for p in ps) / len(ps):.2f} least terms on average")
        for label, curve in out[f"countdown:{split}"].items():
            print(f"  {label:24s} " + "  ".join(f"k={k}: {v:.4f}" for k, v in curve.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
