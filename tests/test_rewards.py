"""Tests for rewards.py: extraction, normalisation, exact and symbolic equivalence, the traps, the
timeout, and the time bound on any response (hand-made worst cases and generated ones)."""

import logging
import time
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
import slow_workers
import symbolic
from rewards import (answers_match, batch_rewards, boxed_answers, extract_answer, math_reward,
                     normalize_answer, parse_number, strip_thinking)

# (response, gold, expected reward) in the Qwen2.5-math "boxed" style
BOXED_CASES = [
    # plain and exact numbers
    (r"So the answer is $\boxed{42}$.", "42", 1.0),
    (r"\boxed{41}", "42", 0.0),
    (r"\boxed{042}", "42", 1.0),                                 # leading zeros
    (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", 1.0),              # \dfrac
    (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),                       # decimal = fraction
    (r"\boxed{\tfrac12}", "1/2", 1.0),                           # \tfrac and \frac12 shorthand
    (r"\boxed{-\frac{3}{4}}", "-0.75", 1.0),
    (r"\boxed{0.333}", r"\frac{1}{3}", 0.0),                     # trap: a rounded decimal is not 1/3
    (r"\boxed{0.3333333}", "1/3", 0.0),
    # thousands separators, units, symbols
    (r"\boxed{7,425,000}", "7425000", 1.0),
    (r"\boxed{7{,}425{,}000}", "7425000", 1.0),
    (r"\boxed{7425}", "7,425,000", 0.0),
    (r"\boxed{1, 234}", "1234", 0.0),                            # with a space it is a list
    (r"\boxed{50\%}", "50", 1.0),
    (r"\boxed{\$18.90}", "18.90", 1.0),
    (r"\boxed{90^\circ}", "90", 1.0),
    (r"\boxed{90^{\circ}}", r"90^\circ", 1.0),
    (r"\boxed{12 \text{ cm}}", "12", 1.0),
    (r"\boxed{12 \text{ cm}^2}", "13", 0.0),
    (r"\boxed{\text{Monday}}", "Monday", 1.0),
    (r"\boxed{x = 3}", "3", 1.0),                                # leading "x ="
    (r"\boxed{5.}", "5", 1.0),                                   # trailing period
    (r"\boxed{\text{three}}", "3", 0.0),                        # no digit: never a number
    (r"\boxed{ 5 }", "5", 1.0),
    # box forms and brace matching
    (r"\fbox{8}", "8", 1.0),
    (r"The answer is \boxed 8", "8", 1.0),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", 1.0),  # nested braces
    (r"\boxed{12", "12", 0.0),                                   # trap: truncated box
    (r"First \boxed{12} and then \boxed{1", "12", 0.0),          # truncated final box
    (r"\boxed{}", "0", 0.0),
    ("The answer is 42.", "42", 0.0),                            # no box, no answer
    # which box, and guessing
    (r"Try \boxed{3}. That fails, so the answer is \boxed{5}.", "3", 0.0),  # trap: box in reasoning
    (r"Try \boxed{3}. That fails, so the answer is \boxed{5}.", "5", 1.0),  # the last box decides
    (r"It is \boxed{1}, \boxed{2} or \boxed{3}.", "2", 0.0),     # listing guesses: only the last counts
    (r"We get \boxed{4}. Final answer: \boxed{4}", "4", 1.0),    # same answer boxed twice
    (r"We get \boxed{0.5}. Final answer: \boxed{\frac12}", "1/2", 1.0),
    (r"<think>maybe \boxed{3}</think>The answer is \boxed{4}.", "4", 1.0),  # only after </think>
    (r"<think>so it is \boxed{4}", "4", 0.0),                   # thinking never finished
    # tuples, intervals, lists, sets
    (r"\boxed{(1,2)}", "(2,1)", 0.0),                            # trap: tuples are ordered
    (r"\boxed{\left( 1, 2 \right)}", "(1,2)", 1.0),
    (r"\boxed{[2,5)}", "[2,5]", 0.0),                            # trap: interval ends differ
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3]", 1.0),
    (r"\boxed{1, -2}", "-2, 1", 1.0),                            # a list is unordered
    (r"\boxed{1, -2}", "-2, 1, 3", 0.0),
    (r"\boxed{\{3, 1\}}", r"\{1,3\}", 1.0),                      # a set is unordered
    (r"\boxed{(0.5, 2)}", r"(\frac{1}{2}, 2)", 1.0),
    # symbolic equivalence (math-verify in the child process)
    (r"\boxed{\sqrt{3}/2}", r"\frac{\sqrt{3}}{2}", 1.0),
    (r"\boxed{x(x+2)}", "x^2+2x", 1.0),
    (r"\boxed{x^2+2x+1}", "x^2+2x", 0.0),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}", 1.0),
    # a gold given as a full solution is reduced to its box
    (r"\boxed{10}", r"Adding them gives \boxed{10}.", 1.0),
]

ANSWER_CASES = [  # the DAPO "Answer:" style
    ("Work...\nAnswer: 42", "42", 1.0),
    ("Work...\nAnswer: $\\frac{1}{2}$", "0.5", 1.0),
    ("Answer: 3\nwait, no.\nAnswer: 4", "4", 1.0),               # the last Answer: line
    ("Answer: 3\nwait, no.\nAnswer: 4", "3", 0.0),
    ("answer:  \\boxed{7}", "7", 1.0),
    ("\\boxed{42}", "42", 0.0),                                  # no Answer: line
]


@pytest.mark.parametrize("response,gold,expected", BOXED_CASES)
def test_math_reward_boxed(response, gold, expected):
    assert math_reward(response, gold) == expected


# (response, gold, reward under "last", reward under "strict")
MULTI_BOX_CASES = [
    (r"Try \boxed{3}. That fails, so the answer is \boxed{5}.", "5", 1.0, 0.0),
    (r"Try \boxed{3}. That fails, so the answer is \boxed{5}.", "3", 0.0, 0.0),
    (r"It is \boxed{1}, \boxed{2} or \boxed{3}.", "3", 1.0, 0.0),         # listing guesses
    (r"It is \boxed{1}, \boxed{2} or \boxed{3}.", "2", 0.0, 0.0),
    (r"We get \boxed{4}. Final answer: \boxed{4}", "4", 1.0, 1.0),          # same answer boxed twice
    (r"We get \boxed{0.5}. Final answer: \boxed{\frac12}", "1/2", 1.0, 1.0),   # one answer, two forms
    (r"<think>maybe \boxed{3}</think>The answer is \boxed{4}.", "4", 1.0, 1.0),  # thought boxes not graded
    (r"First \boxed{12} and then \boxed{1", "12", 0.0, 0.0),                 # unclosed last box
    (r"First \boxed{12} and then \boxed{1", "1", 0.0, 0.0),
]


@pytest.mark.parametrize("response,gold,last,strict", MULTI_BOX_CASES)
def test_multi_box_rules(response, gold, last, strict):
    assert math_reward(response, gold) == last
    assert math_reward(response, gold, boxes="last") == last
    assert math_reward(response, gold, boxes="strict") == strict
    assert batch_rewards([response], [gold], boxes="strict") == [strict]


def test_unknown_box_rule_is_one_clear_error():
    assert rewards.BOX_RULES == ("last", "strict")
    with pytest.raises(ValueError, match="Unknown box rule 'first'; use 'last'.*or 'strict'"):
        math_reward(r"\boxed{1}", "1", boxes="first")
    with pytest.raises(ValueError, match="Unknown box rule 'Last'"):
        batch_rewards([r"\boxed{1}"], ["1"], boxes="Last")
    with pytest.raises(ValueError, match="Unknown box rule 'all'"):
        extract_answer(r"\boxed{1}", style="answer", boxes="all")


def test_box_rule_does_not_change_answer_style():
    response = "Answer: \\boxed{3} or \\boxed{5}"                    # the last box of the Answer: line
    for boxes in rewards.BOX_RULES:
        assert extract_answer(response, style="answer", boxes=boxes) == "5"
        assert math_reward(response, "5", style="answer", boxes=boxes) == 1.0


@pytest.mark.parametrize("response,gold,expected", ANSWER_CASES)
def test_math_reward_answer_style(response, gold, expected):
    assert math_reward(response, gold, style="answer") == expected


def test_strip_thinking():
    assert strip_thinking("<think>a</think>b</think>c") == "c"
    assert strip_thinking("<think>unfinished") == ""
    assert strip_thinking("plain") == "plain"


def test_boxed_answers_brace_matching_and_truncation():
    assert boxed_answers(r"\boxed{\frac{a}{b}} and \fbox{\{1,2\}}") == ([r"\frac{a}{b}", r"\{1,2\}"], False)
    assert boxed_answers(r"\boxed{3} then \boxed{\frac{1}{2}") == (["3"], True)
    assert boxed_answers(r"\boxed{\boxed{6}}") == ([r"\boxed{6}"], False)
    assert boxed_answers(r"ends with \boxed") == ([], True)
    assert boxed_answers(r"\boxedx{1}") == ([], False)              # another command, not a box


def test_extract_answer():
    assert extract_answer(r"so $\boxed{\dfrac{1}{2}}$.") == r"\dfrac{1}{2}"
    assert extract_answer(r"\boxed{1} or \boxed{2}") == "2"
    assert extract_answer(r"\boxed{1} or \boxed{2}", boxes="strict") is None
    assert extract_answer("Answer: $5$ dollars", style="answer") == "$5$ dollars"
    with pytest.raises(ValueError, match="boxed"):
        extract_answer("x", style="latex")


def test_normalize_answer():
    assert normalize_answer(r"x = 7,425 \text{ m}.") == "7425"
    assert normalize_answer(r"\left[ 2, \dfrac{5}{2} \right)") == r"[2,\frac{5}{2})"
    assert normalize_answer(r"45^{\circ}") == "45"
    assert normalize_answer(r"\$1{,}000") == "1000"


def test_parse_number_is_exact():
    assert parse_number("007") == 7
    assert parse_number(r"-\frac{2}{4}") == parse_number("-0.5") == parse_number("-1/2")
    assert parse_number("0.333") != parse_number("1/3")
    assert parse_number("1e3") == parse_number("1000") == parse_number("1.0E+3")
    assert parse_number("9007199254740993") == 9007199254740993      # no float on the way
    huge = parse_number("1e9999999")             # exact, but never built as a 10-million-digit int
    assert isinstance(huge, Decimal) and huge == parse_number("10e9999998") != parse_number("1e9999998")
    assert parse_number("1/0") is None


def test_one_exact_rule_for_numbers_on_both_paths():
    thirds = "0." + "3" * 15_000                 # more digits than int() reads
    assert parse_number(thirds) is not None and answers_match(thirds, r"\frac{1}{3}") is False
    assert math_reward(rf"\boxed{{{thirds}}}", r"\frac{1}{3}") == 0.0
    assert math_reward(r"\boxed{1000}", "1e3") == math_reward(r"\boxed{1e3}", "1000") == 1.0
    # math-verify rounds decimals to 6 places; it is given them as exact fractions instead
    assert rewards.exact_decimals(r"\sqrt{2.25}+0.3333333") == r"\sqrt{\frac{9}{4}}+\frac{3333333}{10000000}"
    assert math_reward(r"\boxed{\frac{1}{\sqrt{9}}}", "0.3333333") == 0.0
    assert math_reward(r"\boxed{\frac{1}{\sqrt{9}}}", r"\frac{1}{3}") == 1.0
    assert math_reward(r"\boxed{\frac{1}{\sqrt{4}}}", "0.5") == 1.0


def test_answers_match_leaves_symbolic_cases_undecided():
    assert answers_match("3", "3.0") is True
    assert answers_match("(1,2)", "(2,1)") is False
    assert answers_match(r"\sqrt{3}/2", r"\frac{\sqrt{3}}{2}") is None


def test_pathological_answer_times_out_and_grading_continues():
    assert math_reward(r"\boxed{\sqrt{4}}", "2") == 1.0       # start the worker outside the timing
    start = time.perf_counter()
    assert math_reward(r"\boxed{9^{9^{9^{9}}}}", "3", timeout=2.0) == 0.0
    assert time.perf_counter() - start < 4.0
    assert math_reward(r"\boxed{\sqrt{9}}", "3") == 1.0       # a fresh worker grades the next one


def test_fast_path_is_linear_time_on_long_adversarial_answers():
    start = time.perf_counter()   # a quadratic regex (e.g. `\d+\.?\d*`) takes seconds on these
    for answer in ["1" * 20000 + "x", "x_" + "a" * 20000, "(" * 20000, "1," * 5000 + "x", "\\text{" * 5000]:
        for response, style in [("\\boxed{" + answer + "}", "boxed"), ("Answer: " + answer, "answer")]:
            pred = extract_answer(response, style)   # None for the unclosed `\text{` boxes
            assert pred is None or answers_match(pred, "3") in (False, None)
    assert time.perf_counter() - start < 2.0


def test_batch_rewards():
    responses = [r"\boxed{4}", r"\boxed{5}", r"\boxed{2+2}", "no answer", r"\boxed{4}"]
    assert batch_rewards(responses, ["4"] * 5) == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert batch_rewards(["Answer: 4", r"\boxed{4}"], ["4", "4"], style="answer") == [1.0, 0.0]
    assert batch_rewards([], []) == []
    with pytest.raises(ValueError, match="one gold per response"):
        batch_rewards(["a", "b"], ["1"])


def test_any_grading_exception_is_zero_with_a_warning(monkeypatch, caplog):
    def broken(pred, gold):
        raise RuntimeError("boom")

    monkeypatch.setattr(rewards, "answers_match", broken)
    with caplog.at_level(logging.WARNING, logger="rewards"):
        assert math_reward(r"\boxed{4}", "4") == 0.0
    assert "boom" in caplog.text


# ----- every response is decided within the bound -----

BOUND = 3.0   # seconds: the 2 s timeout and the fast path's share


def _warm_symbolic_grader():
    assert math_reward(r"\boxed{\frac{\sqrt{3}}{2}}", r"\sqrt{3}/2") == 1.0   # needs math-verify


def _timed(response, gold, **kwargs):
    t0 = time.perf_counter()
    reward = math_reward(response, gold, **kwargs)
    return reward, time.perf_counter() - t0


@pytest.mark.parametrize("boxes", ["last", "strict"])
def test_a_long_list_boxed_twice_in_another_order_is_decided_quickly(boxes):
    items = [str(i) for i in range(4000)]
    forward, backward = ",".join(items), ",".join(reversed(items))
    reward, seconds = _timed(rf"\boxed{{{forward}}} and so \boxed{{{backward}}}", forward, boxes=boxes)
    assert reward == 1.0 and seconds < BOUND            # an unordered list: the same multiset
    reward, seconds = _timed(rf"\boxed{{{backward[:-1]}5}}", forward, boxes=boxes)
    assert reward == 0.0 and seconds < BOUND


def test_deeply_nested_answers_are_decided_within_the_bound(caplog):
    _warm_symbolic_grader()
    nested = "(" * 60_000 + "1,2" + ")" * 60_000
    with caplog.at_level(logging.WARNING, logger="rewards"):
        reward, seconds = _timed(rf"\boxed{{{nested}}} \boxed{{{nested}}}", "(1,2)", boxes="strict")
    assert reward == 0.0 and seconds < BOUND
    huge = ",".join(["1"] * 20_000)                       # 40 KB: over MAX_ANSWER_CHARS
    with caplog.at_level(logging.WARNING, logger="rewards"):
        reward, seconds = _timed(rf"\boxed{{{huge}}}", "1")
    assert reward == 0.0 and seconds < 0.5 and "too long to grade" in caplog.text


_FRAGMENTS = st.sampled_from([
    "1", "-3", "0.5", r"\frac{1}{2}", r"\dfrac12", r"\sqrt{2}", "x", "x = 4", "{", "}", "(", ")",
    "[", "]", r"\{", r"\}", ",", "^", "9^{9^{9^{9}}}", r"\text{ cm}", r"\left(", r"\right)",
    r"\boxed{", r"\fbox{", "</think>", "<think>", "Answer:", "\n", "é", "∞", "١٢", "\x00", "$", "%",
])
_TEXT = st.recursive(
    st.one_of(_FRAGMENTS, st.integers(-10**60, 10**60).map(str), st.text(max_size=12),
              st.lists(st.integers(-99, 99), max_size=2000).map(lambda xs: ",".join(map(str, xs)))),
    lambda inner: st.one_of(st.lists(inner, max_size=6).map("".join),
                            inner.map(lambda t: r"\boxed{" + t + "}"),
                            inner.map(lambda t: "(" + t + ")")),
    max_leaves=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(response=_TEXT, gold=st.one_of(_FRAGMENTS, st.integers(-10**6, 10**6).map(str)),
       boxes=st.sampled_from(rewards.BOX_RULES), style=st.sampled_from(rewards.REWARD_STYLES))
def test_generated_responses_are_decided_within_the_bound_and_never_raise(response, gold, boxes, style):
    restarting = symbolic.GRADER._process is not None and not symbolic.GRADER._ready
    t0 = time.perf_counter()
    reward = batch_rewards([response], [gold], style=style, boxes=boxes, timeout=2.0)
    seconds = time.perf_counter() - t0
    assert reward in ([0.0], [1.0])
    # a restart after an earlier timeout is the one wait the bound excludes (see rewards.py)
    assert seconds < BOUND + (symbolic.WORKER_START_TIMEOUT if restarting else 0.0)


def test_the_timeout_is_the_childs_cpu_time_not_the_wall_clock_of_a_loaded_machine():
    idle = symbolic.SymbolicGrader(slow_workers.idle_then_equal)   # 3 s on the wall clock, no CPU
    busy = symbolic.SymbolicGrader(slow_workers.busy_forever)
    try:
        assert idle.equivalent("1", "1", timeout=2.0) is True
        busy.equivalent("1", "1", timeout=0.1)     # started and ready: the start is not timed
        t0 = time.perf_counter()
        assert busy.equivalent("1", "1", timeout=2.0) is False
        assert 2.0 <= time.perf_counter() - t0 < 2.0 * symbolic.WALL_FACTOR
    finally:
        idle.close()
        busy.close()


def test_cpu_seconds_reads_a_process_and_says_none_for_one_that_has_gone():
    import os
    before = symbolic.cpu_seconds(os.getpid())
    sum(i * i for i in range(3_000_000))
    assert symbolic.cpu_seconds(os.getpid()) > before
    assert symbolic.cpu_seconds(2 ** 22 + 12345) is None
