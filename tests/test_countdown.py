"""The countdown testbed: its generator, its exact grader, its chance curves, its model and a run."""

import json
import math
import random
import re
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

import build_countdown_model
import countdown
import data
import eval as evaluation
import rewards
import train

FOLDER = Path(__file__).resolve().parent.parent / "tiny-qwen2-countdown"
P = countdown.Problem(27, 43, (8, 14, 6, 9, 4))   # routes: 27+14+6-4, 27+8+14-6, 27-8+14+6+4


# ----- the generator and its splits -----

def test_problems_are_deterministic_and_seeded():
    assert countdown.problems("train", 50, seed=3) == countdown.problems("train", 50, seed=3)
    assert countdown.problems("train", 50, seed=3) != countdown.problems("train", 50, seed=4)
    assert countdown.problems("train", 20, seed=3) == countdown.problems("train", 50, seed=3)[:20]


@pytest.mark.parametrize("seeds", [(0, 1), (5, 9), (123, 7)])
def test_splits_are_disjoint_for_any_seeds(seeds):
    a, b = seeds
    train_set = set(countdown.problems("train", 1500, seed=a))
    test_set = set(countdown.problems("test", 300, seed=b))
    hard_set = set(countdown.problems("hard", 300, seed=b))
    assert not train_set & test_set and not train_set & hard_set and not test_set & hard_set
    # and by construction: the split is a function of the problem alone
    assert all(countdown.split_of(p) == "test" for p in test_set)


def test_hard_split_is_harder_by_construction():
    for p in countdown.problems("train", 300) + countdown.problems("test", 100):
        assert countdown.min_terms(p) in (2, 3) and 4 <= len(p.numbers) <= 5
    for p in countdown.problems("test", 100):
        assert not countdown.is_hard(p)
    for p in countdown.problems("hard", 100):
        assert countdown.is_hard(p) and countdown.min_terms(p) == 3 and len(p.numbers) == 5
        assert not countdown.shortcut_solves(p)            # the common shortcut fails on it
        assert countdown.detour_routes(p)                  # one changed step mends it
        assert countdown.verify(countdown.format_route(p.start, countdown.routes(p)[0]), p)
        # held out by the same hash as the test split: never a training problem
        assert countdown.split_of(p) == "hard" and countdown._held_out(p)


def test_shortcut_solves_its_share_of_train_and_test():
    for split, n in (("train", 400), ("test", 200)):
        solved = [p.start + sum(countdown.greedy_route(p)) == p.target
                  for p in countdown.problems(split, n)]
        assert abs(sum(solved) / n - countdown.SHORTCUT_SHARE) < 0.1


def test_routes_and_least_terms_by_hand():
    assert sorted(countdown.routes(P)) == sorted([(14, 6, -4), (8, 14, -6), (-8, 14, 6, 4)])
    assert countdown.min_terms(P) == 3
    # greedy: +14 -> 41 (gap 2); then the closest move, 41+4 = 45, is still 2 away, so it
    # stops at 41: the shortcut fails here although three routes exist
    assert countdown.greedy_route(P) == (14,)
    assert countdown.greedy_step(43, 27, P.numbers) == 14 and countdown.greedy_step(43, 41, (8, 6, 9, 4)) is None
    # detours: the shortcut with one step changed, then the shortcut again; e.g. 27-6 = 21,
    # +14 = 35 (closest to 43), +8 = 43. The four-term route -8+14+6+4 is no detour.
    assert countdown.detour_routes(P) == {(-6, 14, 8), (14, -6, 8), (14, 6, -4), (14, 8, -6),
                                          (-4, 14, 6), (14, -4, 6)}
    assert countdown.min_terms(countdown.Problem(10, 11, (4, 6))) is None


def test_bad_split_and_size_are_one_sentence():
    with pytest.raises(ValueError, match="Unknown countdown split 'easy'; use one of train, test, hard."):
        countdown.problems("easy")
    with pytest.raises(ValueError, match="at least 0"):
        countdown.problems("train", -1)
    assert data.built_in_split_error("countdown:easy") == \
        "the countdown task has no split 'easy'; use one of train, test, hard."
    assert data.built_in_split_error("countdown:hard") is None
    assert data.built_in_split_error("aime24:train") is None


@pytest.mark.parametrize("flags, says", [
    (["--split", "easy"], "no split 'easy'"),
    (["--eval-datasets", "countdown:medium"], "no split 'medium'"),
])
def test_train_refuses_a_bad_split_before_anything_loads(flags, says, capsys):
    assert train.main(["--dataset", "countdown", *flags, "--out", "/nonexistent/x"]) == 2
    assert says in capsys.readouterr().err


def test_examples_carry_their_problem_as_gold():
    examples = data.load_examples("countdown", split="hard", limit=5)
    assert examples == data.countdown_examples("hard", 5)
    for example, problem in zip(examples, countdown.problems("hard", 5), strict=True):
        assert example.question == problem.question and countdown.parse_gold(example.answer) == problem
    assert [e.answer for e in data.load_set("countdown", 3)] == [p.gold for p in countdown.problems("test", 3)]


# ----- the grader -----

@pytest.mark.parametrize("response, reward", [
    ("27+14=41, 41+6=47, 47-4=43. \\boxed{27+14+6-4}", 1.0),
    ("\\boxed{27 - 8 + 14 + 6 + 4}", 1.0),                     # spaces are fine, any right route
    ("\\boxed{27+6+14-4}", 1.0),                               # order does not matter
    ("wrong working 1+1=3. \\boxed{27+8+14-6}", 1.0),          # only the box is graded
    ("\\boxed{27+14+6-4+0}", 0.0),                             # 0 is not a listed number
    ("\\boxed{27+14+14-12}", 0.0),                             # 14 twice, 12 not listed
    ("\\boxed{28+14+6-5}", 0.0),                               # another start
    ("\\boxed{27+14+6}", 0.0),                                 # sums to 47
    ("\\boxed{43}", 0.0),                                      # the target is no route
    ("\\boxed{27}", 0.0),
    ("\\boxed{27+(14+6)-4}", 0.0),                             # brackets are not in the grammar
    ("\\boxed{27+14*1+6-4}", 0.0),
    ("\\boxed{-27+14+6-4}", 0.0),
    ("\\boxed{__import__('os').system('echo hi')}", 0.0),       # never evaluated as Python
    ("\\boxed{27+14+6-4} \\boxed{1+1}", 0.0),                  # the last box decides
    ("\\boxed{1+1} \\boxed{27+14+6-4}", 1.0),
    ("\\boxed{27+14+6-4", 0.0),                                # unclosed
    ("\\boxed{27" + "+8-8" * 100 + "+14+6-4}", 0.0),          # too long, and 8 reused
    ("27+14=41, 41+6=47, 47-4=43.", 0.0),                      # no box
])
def test_grader_on_right_wrong_and_malicious_answers(response, reward):
    assert rewards.batch_rewards([response], [P.gold]) == [reward]


def test_grader_is_linear_on_huge_inputs():
    import time
    start = time.perf_counter()
    assert rewards.batch_rewards(["\\boxed{" + "1+" * 200_000 + "1}"], [P.gold]) == [0.0]
    assert countdown.verify("9" * 1_000_000, P) is False
    assert time.perf_counter() - start < 1.0


def test_solution_key_counts_orders_as_one_route():
    assert countdown.solution_key("27+14+6-4") == countdown.solution_key("27-4+6+14") == "27-4+6+14"
    assert countdown.solution_key("27+(1)") is None
    right = ["\\boxed{27+14+6-4}", "\\boxed{27+6+14-4}", "\\boxed{27+8+14-6}", "\\boxed{27+1}"]
    keys = {rewards.solution_key(r, P.gold) for r in right[:3]}
    assert len(keys) == 2
    assert countdown.distinct_solutions(["27+14+6-4", "27+6+14-4", "27+8+14-6", "27+1", None], P) == 2
    assert rewards.solution_key("so \\boxed{0.5}", "1/2") == rewards.solution_key("\\boxed{0.50}", "1/2")


# ----- the chance curves -----

def test_search_curve_by_hand():
    # P has 3 right routes among 3^5 = 243 sign patterns: p = 3/243 per draw
    p = 3 / 243
    assert countdown.search_probability(P) == pytest.approx(p)
    curve = countdown.search_curve([P, countdown.Problem(10, 11, (4, 6))], [1, 2, 128])
    for k in (1, 2, 128):
        assert curve[k] == pytest.approx((1 - (1 - p) ** k + 0) / 2)


def test_blind_curve_by_hand():
    # two training problems share the route "10+5" (start 10, target 15); one has "20+3" too
    train_set = [countdown.Problem(10, 15, (5, 7)), countdown.Problem(10, 15, (5, 9)),
                 countdown.Problem(20, 23, (3, 8))]
    evaluated = [countdown.Problem(10, 15, (5, 2)),    # solved by the most frequent route
                 countdown.Problem(20, 23, (3, 4)),    # solved by the second
                 countdown.Problem(30, 31, (3, 4))]    # by neither
    curve = countdown.blind_curve(train_set, evaluated, [1, 2, 4])
    assert curve == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 4: pytest.approx(2 / 3)}


def test_chance_stays_below_five_percent_at_k_128():
    for split in ("test", "hard"):
        curve = countdown.chance_curves(split, 50, [1, 128])["chance: problem-blind"]
        assert curve[128] < 0.05


def test_sign_guessing_bound_of_the_synthetic_task():
    curve = data.sign_guess_curve([1, 16, 64], difficulty=2)
    assert curve[1] == 0.25
    assert curve[16] == pytest.approx(1 - 0.75 ** 16) and round(curve[16], 3) == 0.990
    assert curve[64] > 1 - 1e-7
    # checked against a simulation of the guesser on real problems
    rng = random.Random(0)
    examples = data.synthetic_examples("test", n=200)
    hits = 0
    for example in examples:
        steps = data.synthetic_steps(example.question)
        total = steps[0][0]
        for _, _, right in steps:
            total += right if rng.random() < 0.5 else -right
        hits += str(total) == example.answer
    assert abs(hits / 200 - 0.25) < 0.08


def test_countdown_cli_writes_chance_curves_for_plot(tmp_path):
    out = tmp_path / "chance.json"
    countdown.main(["--n", "20", "--max-k", "8", "--out", str(out)])
    content = json.loads(out.read_text())
    assert set(content) == {"countdown:test", "countdown:hard"}
    assert set(content["countdown:hard"]["chance: random search"]) == {"1", "2", "4", "8"}
    import plot
    curves = plot.read_chance([out], "countdown:hard")
    assert curves["chance: problem-blind"][0] == [1, 2, 4, 8]


# ----- the teacher, the model and a run -----

def test_teacher_writes_the_shortcut_with_noise_and_true_working():
    shortcut = "43-27=16, 27+14=41; 43-41=2. \\boxed{27+14}"
    assert build_countdown_model.target_response(P, random.Random(0), noise=0.0) == shortcut
    rng = random.Random(0)
    texts = [build_countdown_model.target_response(P, rng, noise=0.5) for _ in range(300)]
    for text in texts:                       # every line of working is true arithmetic
        working, box = text.split(". \\boxed{")
        for equation in re.split(r"[;,] ", working):
            # "gap = target - total" may subtract a negative total: "43--2=45"
            a, op, b, c = re.fullmatch(r"(-?\d+)([+-])(-?\d+)=(-?\d+)", equation).groups()
            assert int(a) + (int(b) if op == "+" else -int(b)) == int(c)
        start, terms = countdown.parse_route(box.rstrip("}"))  # listed numbers, each once
        assert start == P.start and len({abs(t) for t in terms}) == len(terms)
        assert {abs(t) for t in terms} <= set(P.numbers)
    right = [t for t in texts if rewards.batch_rewards([t], [P.gold]) == [1.0]]
    assert shortcut in texts and 0 < len(right) < len(texts)
    assert len({rewards.solution_key(t, P.gold) for t in right}) >= 2   # the noise finds routes


@pytest.fixture(scope="module")
def countdown_model():
    return AutoModelForCausalLM.from_pretrained(FOLDER), AutoTokenizer.from_pretrained(FOLDER)


def test_model_folder_loads_and_is_small(countdown_model):
    model, tokenizer = countdown_model
    assert isinstance(model, Qwen2ForCausalLM)
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) <= 20 * 2**20
    assert tokenizer.pad_token_id != tokenizer.eos_token_id == model.generation_config.eos_token_id
    report = json.loads((FOLDER / "build_report.json").read_text())
    assert report["test"]["avg_at_k"] > report["hard"]["avg_at_k"]


def test_model_answers_with_routes(countdown_model):
    model, tokenizer = countdown_model
    examples = data.countdown_examples("test", 16)
    result = evaluation.evaluate(model, tokenizer, examples, n=4, temperature=1.0, top_p=1.0,
                                 max_new_tokens=160, batch_size=64, seed=0)
    assert result["avg@4"] > 0.1 and result["truncated_frac"] < 0.1
    assert len(result["distinct"]) == 16 and 0 < result["distinct_correct"] <= 4
    assert all(d <= c for d, c in zip(result["distinct"], result["correct"], strict=True))


def test_two_step_run_on_the_task(tmp_path):
    out = tmp_path / "run"
    assert train.main(["--model", str(FOLDER), "--dataset", "countdown", "--steps", "2",
                       "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "160",
                       "--eval-limit", "2", "--eval-n", "2", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/countdown:hard/avg@2" in r for r in records)
    assert any("eval/countdown:test/avg@2" in r for r in records)
    assert math.isfinite(records[-1]["entropy"])
    AutoModelForCausalLM.from_pretrained(out / "final")
